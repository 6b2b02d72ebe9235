"""4-bit weights: fake quantization for QAT (torch, straight-through) and real packing.

Blocks run along the input dimension of a ``[out, in]`` linear weight, ``group`` (32 or 64)
values per block, in the GGML layout generalised to both group sizes (docs/model.md):

- symmetric (GGML ``Q4_0`` when group is 32): ``d = v / -8`` where ``v`` is the value of
  largest magnitude, ``q = clamp(floor(x / d + 8.5), 0, 15)``, ``x' = (q - 8) * fp16(d)``;
  a block is ``fp16 d`` then ``group / 2`` bytes.
- asymmetric (``Q4_1``): ``d = (max - min) / 15``, ``q = clamp(floor((x - min) / d + 0.5),
  0, 15)``, ``x' = q * fp16(d) + fp16(min)``; a block is ``fp16 d, fp16 min`` then the bytes.
- byte ``j`` of a block holds value ``j`` in its low nibble and value ``j + group/2`` in its
  high nibble.

Fake quantization uses exactly this arithmetic (``1/d`` multiplied in fp32, scales rounded to
fp16 before dequantizing), so the QAT forward equals the forward of the packed-then-unpacked
weights bit for bit, and packing with group 32 produces the same bytes as ``gguf``'s
``Q4_0``/``Q4_1`` quantizers (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class QuantError(ValueError):
    """A tensor cannot be quantized as asked (shape, group size, dtype)."""


def _check(shape: tuple[int, ...], group: int) -> None:
    if group not in (32, 64):
        raise QuantError(f"group must be 32 or 64, got {group}")
    if len(shape) != 2:
        raise QuantError(f"expected a 2-D [out, in] weight, got shape {tuple(shape)}")
    if shape[1] % group:
        raise QuantError(f"input dimension {shape[1]} is not a multiple of group {group}")


def _qparams_torch(blocks: torch.Tensor, symmetric: bool):
    """(q, d16, m16) for fp32 blocks [..., group]; q as float in 0..15."""
    if symmetric:
        imax = blocks.abs().argmax(dim=-1, keepdim=True)
        vmax = blocks.gather(-1, imax)
        d = vmax / -8.0
        inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)
        q = torch.floor(blocks * inv + 8.5).clamp(0, 15)
        return q, d.half().float(), None
    vmin = blocks.amin(dim=-1, keepdim=True)
    vmax = blocks.amax(dim=-1, keepdim=True)
    d = (vmax - vmin) / 15.0
    inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)
    q = torch.floor((blocks - vmin) * inv + 0.5).clamp(0, 15)
    return q, d.half().float(), vmin.half().float()


def quantize_dequantize(w: torch.Tensor, group: int = 32, symmetric: bool = True) -> torch.Tensor:
    """The 4-bit round trip of ``w`` (no gradient semantics), in w's dtype."""
    _check(tuple(w.shape), group)
    out_f, in_f = w.shape
    blocks = w.detach().float().reshape(out_f, in_f // group, group)
    q, d, m = _qparams_torch(blocks, symmetric)
    deq = (q - 8.0) * d if symmetric else q * d + m
    return deq.reshape(out_f, in_f).to(w.dtype)


class _FakeQuant(torch.autograd.Function):
    # A Function rather than ``w + (q - w).detach()``: that sum is not always bit-equal to q
    # (asymmetric levels can sit across zero from w), and QAT must equal the export exactly.
    @staticmethod
    def forward(ctx, w, group, symmetric):
        return quantize_dequantize(w, group, symmetric)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def fake_quant(w: torch.Tensor, group: int = 32, symmetric: bool = True) -> torch.Tensor:
    """4-bit fake quantization with a straight-through estimator (gradient of identity)."""
    return _FakeQuant.apply(w, group, symmetric)


@dataclass(frozen=True)
class Packed4:
    """Real 4-bit weights: ``blocks`` uint8 [out, in/group, bytes_per_block] in GGML layout."""

    blocks: np.ndarray
    shape: tuple[int, int]
    group: int
    symmetric: bool

    @property
    def bytes_per_block(self) -> int:
        return block_bytes(self.group, self.symmetric)

    @property
    def nbytes(self) -> int:
        return int(self.blocks.nbytes)


def block_bytes(group: int, symmetric: bool) -> int:
    """Bytes per block: fp16 scale (+ fp16 min) + group/2 bytes of nibbles."""
    return (2 if symmetric else 4) + group // 2


def pack_4bit(w: torch.Tensor | np.ndarray, group: int = 32, symmetric: bool = True) -> Packed4:
    """Quantize a [out, in] weight to 4-bit blocks (see the module docstring for the layout)."""
    t = torch.as_tensor(np.asarray(w, dtype=np.float32)) if isinstance(w, np.ndarray) else w
    _check(tuple(t.shape), group)
    if not torch.isfinite(t).all():
        raise QuantError("weight has NaN or infinite values; refusing to quantize")
    out_f, in_f = t.shape
    blocks = t.detach().float().cpu().reshape(out_f, in_f // group, group)
    q, d, m = _qparams_torch(blocks, symmetric)
    q = q.to(torch.uint8).numpy()
    half = group // 2
    nib = q[..., :half] | (q[..., half:] << np.uint8(4))  # [out, nblk, group/2]
    parts = [d.numpy().astype(np.float16).view(np.uint8)]
    if not symmetric:
        parts.append(m.numpy().astype(np.float16).view(np.uint8))
    parts.append(nib)
    packed = np.ascontiguousarray(np.concatenate(parts, axis=-1))
    return Packed4(packed, (out_f, in_f), group, symmetric)


def unpack_4bit(p: Packed4) -> np.ndarray:
    """Dequantize 4-bit blocks to a float32 [out, in] array."""
    out_f, in_f = p.shape
    nblk = in_f // p.group
    expect = (out_f, nblk, p.bytes_per_block)
    if p.blocks.dtype != np.uint8 or tuple(p.blocks.shape) != expect:
        raise QuantError(f"packed blocks have shape {p.blocks.shape} {p.blocks.dtype}, "
                         f"expected {expect} uint8")
    b = p.blocks
    d = np.ascontiguousarray(b[..., 0:2]).view(np.float16).astype(np.float32)
    off = 2
    if not p.symmetric:
        m = np.ascontiguousarray(b[..., 2:4]).view(np.float16).astype(np.float32)
        off = 4
    nib = b[..., off:]
    q = np.concatenate([nib & np.uint8(0x0F), nib >> np.uint8(4)], axis=-1).astype(np.float32)
    x = (q - 8.0) * d if p.symmetric else q * d + m
    return x.reshape(out_f, in_f)


def quant_error(w: torch.Tensor, group: int = 32, symmetric: bool = True) -> dict[str, float]:
    """Relative RMS and max abs error of the 4-bit round trip of ``w``."""
    wf = w.detach().float()
    err = quantize_dequantize(wf, group, symmetric) - wf
    rms = float(wf.pow(2).mean().sqrt())
    return {"rel_rms": float(err.pow(2).mean().sqrt()) / max(rms, 1e-30),
            "max_abs": float(err.abs().max())}


def rows(p: Packed4) -> np.ndarray:
    """The blocks as a 2-D uint8 array [out, in/group * bytes_per_block] (one row per output)."""
    return p.blocks.reshape(p.shape[0], -1)


def ggml_type_name(group: int, symmetric: bool) -> str | None:
    """The GGML type with this exact block layout ("Q4_0"/"Q4_1" for group 32), else None."""
    if group != 32:
        return None
    return "Q4_0" if symmetric else "Q4_1"


def is_quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """True for the weights QAT fake-quantizes and export packs: the block linears."""
    block_linear = name.endswith((".attn.qkv.weight", ".attn.proj.weight",
                                  ".mlp.gate_up.weight", ".mlp.down.weight"))
    return block_linear and len(shape) == 2


def quantizable(tensors) -> list[str]:
    """Names of the block-linear weights in a model or a {name: tensor} mapping."""
    if isinstance(tensors, torch.nn.Module):
        from hrm_lsp.model.weights import state_dict_for_export

        tensors = state_dict_for_export(tensors)
    return [n for n, t in tensors.items() if is_quantizable(n, tuple(t.shape))]


def quantize_model_weights(model: torch.nn.Module, group: int | None = None,
                           symmetric: bool | None = None) -> None:
    """Replace every block-linear weight by its 4-bit round trip, in place (for fp-vs-4bit evals)."""
    cfg = model.cfg
    group = group or cfg.qat_group
    symmetric = cfg.qat_symmetric if symmetric is None else symmetric
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in quantizable(model):
            params[name].copy_(quantize_dequantize(params[name], group, symmetric))


def fake_quant_mlx(w, group: int = 32, symmetric: bool = True):
    """MLX twin of ``fake_quant``: the same blocks and rounding, straight-through gradient."""
    global _STE
    if _STE is None:
        _STE = _ste_mlx()
    return _STE(w, _quantize_dequantize_mlx(w, group, symmetric))


_STE = None


def _quantize_dequantize_mlx(w, group: int, symmetric: bool):
    import mlx.core as mx

    _check(tuple(w.shape), group)
    out_f, in_f = w.shape
    blocks = mx.stop_gradient(w).astype(mx.float32).reshape(out_f, in_f // group, group)
    if symmetric:
        imax = mx.argmax(mx.abs(blocks), axis=-1, keepdims=True)
        d = mx.take_along_axis(blocks, imax, axis=-1) / -8.0
        inv = mx.where(d == 0, mx.zeros_like(d), 1.0 / mx.where(d == 0, mx.ones_like(d), d))
        q = mx.clip(mx.floor(blocks * inv + 8.5), 0, 15)
        deq = (q - 8.0) * d.astype(mx.float16).astype(mx.float32)
    else:
        vmin = mx.min(blocks, axis=-1, keepdims=True)
        d = (mx.max(blocks, axis=-1, keepdims=True) - vmin) / 15.0
        inv = mx.where(d == 0, mx.zeros_like(d), 1.0 / mx.where(d == 0, mx.ones_like(d), d))
        q = mx.clip(mx.floor((blocks - vmin) * inv + 0.5), 0, 15)
        deq = q * d.astype(mx.float16).astype(mx.float32) + vmin.astype(mx.float16).astype(mx.float32)
    return deq.reshape(out_f, in_f).astype(w.dtype)


def _ste_mlx():
    import mlx.core as mx

    @mx.custom_function
    def ste(w, deq):
        return deq

    @ste.vjp
    def ste_vjp(primals, cotangent, output):
        return cotangent, mx.zeros_like(cotangent)

    return ste
