"""MLX twin of HRGC (and of the GPT baseline): the same math and the same weight names.

Read hrgc.py first; this file mirrors it part for part so a safetensors file written by
either framework loads in the other (``save_weights_mlx``/``load_weights_mlx`` here,
``hrm_lsp.model.weights`` on the torch side). Parity is tested at <= 1e-4 max abs logit
difference in fp32 on CPU. MLX is an optional extra and is imported only here.

Differences that are about the framework, not the model:
- ``H_init``/``L_init`` are frozen arrays (MLX has no buffers); RoPE tables are private.
- A tied output head is ``embed.as_linear`` (MLX has no parameter sharing), so, as in the
  torch export, ``lm_head.weight`` exists only in untied models.
- The one-step / full gradient modes use ``mx.stop_gradient`` on the states of steps that
  must not back-propagate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from hrm_lsp.model.cache import CacheError
from hrm_lsp.model.config import ACC_VOCAB, NIBBLE_VOCAB, ModelConfig
from hrm_lsp.model.quant import fake_quant_mlx

# ---------------------------------------------------------------------------------------
# Small parts


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dim,))

    def __call__(self, x):
        return mx.fast.rms_norm(x, self.weight, self.eps)


class Linear(nn.Module):
    """Bias-free linear layer, weight [out, in] as in torch; 4-bit fake quant under QAT."""

    def __init__(self, d_in: int, d_out: int, cfg: ModelConfig):
        super().__init__()
        std = 1.0 / math.sqrt(d_in)
        self.weight = mx.random.truncated_normal(-2.0, 2.0, (d_out, d_in)) * std
        self._qat = (cfg.qat_bits, cfg.qat_group, cfg.qat_symmetric)

    def __call__(self, x):
        w = self.weight
        bits, group, symmetric = self._qat
        if bits == 4:
            w = fake_quant_mlx(w, group, symmetric)
        return x @ w.T


def rope_tables(cfg: ModelConfig):
    """cos, sin [max_seq_len, head_dim/2], computed in float64 as in torch, then fp32."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(half, dtype=np.float64) / half))
    angles = np.arange(cfg.max_seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
    return mx.array(np.cos(angles).astype(np.float32)), mx.array(np.sin(angles).astype(np.float32))


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return mx.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def attention_mask(pos: int, n_new: int, k_start: int, window: int):
    """Boolean [T, K] mask (True = attend), or None when a single query sees every key."""
    if n_new == 1:
        return None
    q = mx.arange(pos, pos + n_new)[:, None]
    k = mx.arange(k_start, pos + n_new)[None, :]
    allowed = k <= q
    if window:
        allowed = mx.logical_and(allowed, (q - k) < window)
    return allowed


class KVCache:
    """The MLX counterpart of ``hrm_lsp.model.cache.KVCache`` (preallocated, slot per application)."""

    def __init__(self, n_slots, batch, n_heads, max_len, head_dim, dtype=mx.float32):
        shape = (batch, n_heads, max_len, head_dim)
        self.k = [mx.zeros(shape, dtype=dtype) for _ in range(n_slots)]
        self.v = [mx.zeros(shape, dtype=dtype) for _ in range(n_slots)]
        self.batch, self.capacity, self.length = batch, max_len, 0

    def check_append(self, batch: int, n_new: int) -> None:
        if batch != self.batch:
            raise CacheError(f"cache was made for batch {self.batch}, got batch {batch}")
        if self.length + n_new > self.capacity:
            raise CacheError(f"cache holds {self.capacity} positions; {self.length} used, "
                             f"{n_new} more requested (truncate it or make a larger one)")

    def write(self, slot: int, pos: int, k, v):
        end = pos + k.shape[2]
        self.k[slot][:, :, pos:end] = k
        self.v[slot][:, :, pos:end] = v
        return self.k[slot][:, :, :end], self.v[slot][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, n: int) -> None:
        if n < 0:
            raise CacheError(f"cannot truncate to {n} positions")
        self.length = min(self.length, n)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int = 0):
        super().__init__()
        self._shape = (cfg.n_heads, cfg.head_dim, window)
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model, cfg)
        self.proj = Linear(cfg.d_model, cfg.d_model, cfg)

    def __call__(self, x, cos, sin, pos=0, cache: KVCache | None = None, slot=0):
        n_heads, head_dim, window = self._shape
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, n_heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, T, hd]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.write(slot, pos, k, v)
        k_start = max(0, pos - window + 1) if window else 0
        k, v = k[:, :, k_start:], v[:, :, k_start:]
        scale = 1.0 / math.sqrt(head_dim)
        if pos == 0 and (not window or T <= window):
            mask = "causal" if T > 1 else None
        else:
            mask = attention_mask(pos, T, k_start, window)
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        return self.proj(y.transpose(0, 2, 1, 3).reshape(B, T, D))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = Linear(cfg.d_model, 2 * cfg.ffn_hidden, cfg)
        self.down = Linear(cfg.ffn_hidden, cfg.d_model, cfg)

    def __call__(self, x):
        gate, up = mx.split(self.gate_up(x), 2, axis=-1)
        return self.down(nn.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int = 0, prenorm: bool = False):
        super().__init__()
        self._prenorm = prenorm
        self._dropout = nn.Dropout(cfg.dropout)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, window)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def __call__(self, x, cos, sin, pos=0, cache=None, slot=0):
        drop = self._dropout
        if self._prenorm:
            x = x + drop(self.attn(self.attn_norm(x), cos, sin, pos, cache, slot))
            return x + drop(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + drop(self.attn(x, cos, sin, pos, cache, slot)))
        return self.mlp_norm(x + drop(self.mlp(x)))


class ReasoningModule(nn.Module):
    def __init__(self, cfg: ModelConfig, n_layers: int, window: int = 0):
        super().__init__()
        self.layers = [Block(cfg, window) for _ in range(n_layers)]

    def __call__(self, z, injection, cos, sin, pos=0, cache=None, slot0=0):
        z = z + injection
        for i, layer in enumerate(self.layers):
            z = layer(z, cos, sin, pos, cache, slot0 + i)
        return z


@dataclass
class ModelOutput:
    logits: mx.array  # [B, T, vocab]
    refine_logit: mx.array  # [B, T]
    z_H: mx.array | None = None
    z_L: mx.array | None = None


# ---------------------------------------------------------------------------------------
# Shared embedding / heads, then the models


class LMBase(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        D = cfg.d_model
        std = 1.0 / math.sqrt(D)
        self.embed = nn.Embedding(cfg.vocab_size, D)
        self.embed.weight = mx.random.truncated_normal(-2.0, 2.0, (cfg.vocab_size, D)) * std
        if cfg.byte_features:
            self.nibble_embed = nn.Embedding(NIBBLE_VOCAB, D)
            self.nibble_embed.weight = mx.random.truncated_normal(-2.0, 2.0, (NIBBLE_VOCAB, D)) * std
            self.acc_embed = nn.Embedding(ACC_VOCAB, D)
            self.acc_embed.weight = mx.random.truncated_normal(-2.0, 2.0, (ACC_VOCAB, D)) * std
        if not cfg.tie_embeddings:
            self.lm_head = Linear(D, cfg.vocab_size, cfg.replace(qat_bits=0))
        self.refine_head = nn.Linear(D, 1, bias=True)
        self.refine_head.weight = mx.zeros((1, D))
        self.refine_head.bias = mx.zeros((1,))
        self._rope = rope_tables(cfg)
        self._embed_scale = math.sqrt(D)

    def embed_inputs(self, ids, nibble=None, acc=None):
        x = self.embed(ids)
        if self.cfg.byte_features:
            if nibble is None or acc is None:
                raise ValueError("this byte-mode model needs nibble and acc features "
                                 "(tokenizer.features(ids)) with the ids")
            x = x + self.nibble_embed(nibble.astype(mx.int32)) + self.acc_embed(acc.astype(mx.int32))
        return x * self._embed_scale

    def check_inputs(self, ids, cache) -> int:
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"ids must be [B, T] with T >= 1, got {tuple(ids.shape)}")
        B, T = ids.shape
        pos = 0
        if cache is not None:
            cache.check_append(B, T)
            pos = cache.length
        if pos + T > self.cfg.max_seq_len:
            raise CacheError(f"positions {pos}..{pos + T - 1} exceed the model's context "
                             f"max_seq_len={self.cfg.max_seq_len}")
        return pos

    def heads(self, z, last_only: bool):
        if last_only:
            z = z[:, -1:]
        logits = self.embed.as_linear(z) if self.cfg.tie_embeddings else self.lm_head(z)
        return logits, self.refine_head(z).squeeze(-1)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        cfg = self.cfg
        max_len = max_len or cfg.max_seq_len
        if max_len > cfg.max_seq_len:
            raise CacheError(f"max_len {max_len} exceeds the model's context {cfg.max_seq_len}")
        return KVCache(cfg.n_cache_slots, batch, cfg.n_heads, max_len, cfg.head_dim,
                       self.embed.weight.dtype)


class HRGC(LMBase):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.H = ReasoningModule(cfg, cfg.H_layers, window=cfg.H_window)  # planner
        self.L = ReasoningModule(cfg, cfg.L_layers)  # generator
        if cfg.state_init == "zero":
            self.H_init, self.L_init = mx.zeros((cfg.d_model,)), mx.zeros((cfg.d_model,))
        else:
            self.H_init = mx.random.normal((cfg.d_model,))
            self.L_init = mx.random.normal((cfg.d_model,))
        self.freeze(keys=["H_init", "L_init"], recurse=False)  # fixed, as in torch and HRM
        if cfg.recurrent_gates:  # trained scalars, zero at start (hrgc.HRGC)
            self.gate_LL, self.gate_LH, self.gate_HH = mx.zeros((1,)), mx.zeros((1,)), mx.zeros((1,))

    def _inputs_L(self, z_L, z_H, x):
        if self.cfg.recurrent_gates:
            return self.gate_LL * z_L, self.gate_LH * z_H + x
        return z_L, z_H + x

    def _inputs_H(self, z_H, z_L):
        if self.cfg.recurrent_gates:
            return self.gate_HH * z_H, z_L
        return z_H, z_L

    def __call__(self, ids, nibble=None, acc=None, cache: KVCache | None = None,
                 last_only: bool = False) -> ModelOutput:
        cfg = self.cfg
        pos = self.check_inputs(ids, cache)
        B, T = ids.shape
        cos, sin = self._rope[0][pos:pos + T], self._rope[1][pos:pos + T]
        x = self.embed_inputs(ids, nibble, acc)  # [B, T, D]
        z_H = mx.broadcast_to(self.H_init.astype(x.dtype), x.shape)
        z_L = mx.broadcast_to(self.L_init.astype(x.dtype), x.shape)

        last_h, last_l = cfg.H_cycles - 1, cfg.L_cycles - 1
        slot = 0
        for h in range(cfg.H_cycles):
            for l_step in range(cfg.L_cycles):
                g = h == last_h and (cfg.grad_mode == "full" or l_step == last_l)
                z_L = self.L(*self._inputs_L(z_L, z_H, x), cos, sin, pos, cache, slot)
                if not g:
                    z_L = mx.stop_gradient(z_L)
                slot += cfg.L_layers
            z_H = self.H(*self._inputs_H(z_H, z_L), cos, sin, pos, cache,
                         cfg.H_cycles * cfg.L_cycles * cfg.L_layers + h * cfg.H_layers)
            if h != last_h:
                z_H = mx.stop_gradient(z_H)

        if cache is not None:
            cache.advance(T)
        logits, refine_logit = self.heads(z_H, last_only)
        return ModelOutput(logits, refine_logit, z_H, z_L)


class GPT(LMBase):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.layers = [Block(cfg, prenorm=True) for _ in range(cfg.n_layers)]
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def __call__(self, ids, nibble=None, acc=None, cache: KVCache | None = None,
                 last_only: bool = False) -> ModelOutput:
        pos = self.check_inputs(ids, cache)
        T = ids.shape[1]
        cos, sin = self._rope[0][pos:pos + T], self._rope[1][pos:pos + T]
        x = self.embed_inputs(ids, nibble, acc)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, pos, cache, i)
        if cache is not None:
            cache.advance(T)
        logits, refine_logit = self.heads(self.norm(x), last_only)
        return ModelOutput(logits, refine_logit)


# ---------------------------------------------------------------------------------------
# Building and conversion


def build_model_mlx(cfg: ModelConfig) -> HRGC | GPT:
    """The MLX HRGC or GPT for ``cfg`` with fresh weights."""
    return GPT(cfg) if cfg.arch == "gpt" else HRGC(cfg)


def mlx_weights(model: nn.Module) -> dict[str, mx.array]:
    """Contract-named arrays of an MLX model (frozen H_init/L_init included)."""
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.parameters()))


def load_arrays_mlx(model: nn.Module, arrays: dict[str, mx.array]) -> None:
    """Load contract-named arrays; names and shapes must match exactly (WeightsError)."""
    from hrm_lsp.model.weights import WeightsError

    own = mlx_weights(model)
    missing, unexpected = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
    if missing or unexpected:
        raise WeightsError(f"weights do not match the model config: missing {missing[:8]}, "
                           f"unexpected {unexpected[:8]}")
    for name, a in arrays.items():
        if tuple(a.shape) != tuple(own[name].shape):
            raise WeightsError(f"{name}: shape {tuple(a.shape)} in weights, model has {tuple(own[name].shape)}")
    model.load_weights([(k, v.astype(own[k].dtype)) for k, v in arrays.items()], strict=True)
    model.freeze(keys=["H_init", "L_init"], recurse=False) if isinstance(model, HRGC) else None


def from_torch(torch_model) -> HRGC | GPT:
    """An MLX twin holding a copy of a torch model's weights."""
    from hrm_lsp.model.weights import state_dict_for_export

    model = build_model_mlx(torch_model.cfg)
    arrays = {k: mx.array(v.detach().float().cpu().numpy())
              for k, v in state_dict_for_export(torch_model).items()}
    load_arrays_mlx(model, arrays)
    return model


def to_torch(model: HRGC | GPT):
    """A torch model holding a copy of an MLX model's weights."""
    import torch

    from hrm_lsp.model import build_model
    from hrm_lsp.model.weights import load_weights

    tm = build_model(model.cfg)
    load_weights(tm, {k: torch.from_numpy(np.array(v.astype(mx.float32)))
                      for k, v in mlx_weights(model).items()})
    return tm


def save_weights_mlx(model: HRGC | GPT, path: str | Path) -> None:
    """safetensors with the same names and config metadata as ``weights.save_weights``."""
    import json

    from hrm_lsp.model.weights import CONFIG_KEY

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.safetensors")
    mx.save_safetensors(str(tmp), mlx_weights(model),
                        metadata={CONFIG_KEY: json.dumps(model.cfg.to_dict(), sort_keys=True)})
    tmp.replace(path)


def load_model_mlx(path: str | Path) -> HRGC | GPT:
    """Rebuild an MLX model from a safetensors file written by either framework."""
    from hrm_lsp.model.weights import WeightsError, config_from_metadata

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        arrays, meta = mx.load(str(path), return_metadata=True)
    except Exception as e:  # mlx raises RuntimeError/ValueError for unreadable files
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    model = build_model_mlx(config_from_metadata(meta, str(path)))
    load_arrays_mlx(model, arrays)
    return model


# ---------------------------------------------------------------------------------------
# 4-bit inference with MLX's quantized matmul


def quantized_linear(p) -> nn.QuantizedLinear:
    """An ``nn.QuantizedLinear`` holding exactly the values of a ``quant.Packed4``.

    MLX's affine 4-bit computes ``scale * q + bias`` per group; GGML Q4_1 blocks are that with
    ``bias = m`` and Q4_0 blocks with ``bias = -8 d``, so the exported weights map over
    exactly (MLX packs 8 values per uint32, value ``i`` at bits ``4 i``).
    """
    out_f, in_f = p.shape
    b = p.blocks
    d = np.ascontiguousarray(b[..., 0:2]).view(np.float16).astype(np.float32)[..., 0]
    off = 2
    if p.symmetric:
        bias = -8.0 * d
    else:
        bias = np.ascontiguousarray(b[..., 2:4]).view(np.float16).astype(np.float32)[..., 0]
        off = 4
    nib = b[..., off:]
    q = np.concatenate([nib & 0x0F, nib >> 4], axis=-1).reshape(out_f, in_f).astype(np.uint32)
    q = q.reshape(out_f, in_f // 8, 8)
    packed = np.zeros((out_f, in_f // 8), dtype=np.uint32)
    for i in range(8):
        packed |= q[..., i] << np.uint32(4 * i)
    ql = nn.QuantizedLinear(in_f, out_f, bias=False, group_size=p.group, bits=4)
    ql.weight, ql.scales, ql.biases = mx.array(packed), mx.array(d), mx.array(bias)
    return ql


def quantize_mlx_model(model: HRGC | GPT, group: int | None = None,
                       symmetric: bool | None = None) -> HRGC | GPT:
    """Swap every block linear for a 4-bit ``nn.QuantizedLinear`` (in place; returns model).

    The values are ``quant.pack_4bit``'s, i.e. those of the GGUF export and of QAT, so a
    QAT-trained model runs here with the logits it was trained with.
    """
    from hrm_lsp.model.quant import is_quantizable, pack_4bit

    cfg = model.cfg
    group = group or cfg.qat_group
    symmetric = cfg.qat_symmetric if symmetric is None else symmetric

    def swap(path: str, module: nn.Module):
        if isinstance(module, Linear) and is_quantizable(path + ".weight", module.weight.shape):
            w = np.array(module.weight.astype(mx.float32))
            return quantized_linear(pack_4bit(w, group, symmetric))
        return None

    replacements = []
    for path, module in model.named_modules():
        new = swap(path, module)
        if new is not None:
            replacements.append((path, new))
    model.update_modules(_tree_from_paths(replacements))
    return model


def _tree_from_paths(items):
    """{"a.b.0.c": m} -> nested dicts/lists as ``Module.update_modules`` expects."""
    from mlx.utils import tree_unflatten

    return tree_unflatten(items)
