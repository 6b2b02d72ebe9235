"""ONNX Runtime decoding backend: the model's decode step as one ONNX graph with 4-bit kernels.

Why: batch-1 decoding in eager PyTorch on a laptop CPU is bound by weight traffic (fp32
blocks read 18 times per token) and per-op Python overhead (docs/benchmarks.md, "Inference").
This backend builds, in memory and at load time, one graph for the whole forward of a chunk
of new tokens and runs it with ONNX Runtime's CPU kernels:

- block linears whose weights lie on the 4-bit grid (every GGUF file's block linears, and
  QAT models) run as ``com.microsoft.MatMulNBits`` on their exact 4-bit values (the same
  ``q`` and fp16 scale per group of 32 or 64, checked by rebuilding the weight;
  symmetric blocks use MatMulNBits' default zero point 8, asymmetric ones a float zero
  point ``-min/d``). Weights off the grid (an fp32 checkpoint) keep fp32 ``MatMul``.
- the output head (the largest matrix) runs as an 8-bit ``MatMulNBits`` (group 32, like
  GGML ``Q8_0``) when ``head_bits=8``, else in fp32.
- ``accuracy_level`` 4 lets the kernels quantize activations to int8 per block for the
  dot products (fast); 0 keeps fp32 activations (slower, closer to the torch model). The
  difference is measured, not assumed: ``benchmarks/inference.py`` and tests compare logits.
- attention is ``com.microsoft.GroupQueryAttention`` (as many key/value heads as query heads)
  with rotary embedding inside the op and the key/value caches bound as shared past/present
  buffers: each step writes its new positions in place and attends over ``length`` positions
  only, with no copy of the cache. The planner's window is the op's ``local_window_size``.
- RMSNorm after a residual add (HRGC's post-norm blocks) is one
  ``SkipSimplifiedLayerNormalization``.

The graph depends only on the model's weights and config: it is rebuilt at load (no extra
file, nothing written to disk). Results match the torch model within the tolerance the
tests set; the torch model remains the reference. ``onnxruntime`` and ``onnx`` are
dependencies of the package; where they cannot be imported the engine's ``auto`` backend
falls back to torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hrm_lsp.device import torch_threads
from hrm_lsp.inference.session import Runner

OPSET = 21


class ORTUnavailable(RuntimeError):
    """onnxruntime/onnx cannot be imported."""


def available() -> bool:
    """True when onnxruntime and onnx import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads() -> int:
    """Intra-op threads when none are given: half the cores, 1 to 4.

    Measured on a 2-core CPU (docs/benchmarks.md, "Inference"): two threads decode about 20%
    faster than one on an idle machine but half as fast when another process keeps a core
    busy, which is the normal state of a developer machine running an editor, gopls and go
    vet. So a 2-core machine gets one thread and larger ones keep half their cores free."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class ORTOptions:
    """How the graph is built and run (see the module docstring)."""

    threads: int = 1  # intra-op threads
    accuracy_level: int = 4  # MatMulNBits: 0 = fp32 activations, 4 = int8 activations
    head_bits: int = 8  # 8: output head as 8-bit blocks; 0: fp32

    def __post_init__(self):
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1 (got {self.threads})")
        if self.accuracy_level not in (0, 1, 4):
            raise ValueError(f"accuracy_level must be 0, 1 or 4 (got {self.accuracy_level})")
        if self.head_bits not in (0, 8):
            raise ValueError(f"head_bits must be 0 or 8 (got {self.head_bits})")


# ---------------------------------------------------------------------------------------
# Weights in the kernels' layouts


def _nbits_blocks_4(w: np.ndarray, group: int, symmetric: bool):
    """(packed uint8 [N, K/group, group/2], scales fp32 [N*K/group], zero points or None) when
    ``w`` [N, K] lies exactly on the 4-bit grid of ``hrm_lsp.model.quant`` (a baked QAT
    weight, or any GGUF file's block linear); None otherwise (re-quantizing would change the
    model). The blocks are quant.py's own, checked by rebuilding ``w`` exactly.

    MatMulNBits packs two consecutive values per byte, the first in the low nibble, and
    dequantizes ``(q - zero_point) * scale`` (zero point 8 by default); quant.py's layout puts
    value j and j + group/2 in byte j, so the nibbles are re-paired here."""
    from hrm_lsp.model.quant import QuantError, pack_4bit, unpack_4bit

    try:
        p = pack_4bit(w, group, symmetric)
    except QuantError:
        return None
    if not np.array_equal(unpack_4bit(p), w):
        return None
    off = 2 if symmetric else 4
    d = np.ascontiguousarray(p.blocks[..., 0:2]).view(np.float16).astype(np.float32)[..., 0]
    nib = p.blocks[..., off:]
    q = np.concatenate([nib & np.uint8(0x0F), nib >> np.uint8(4)], axis=-1)  # [N, nblk, group]
    packed = q[..., 0::2] | (q[..., 1::2] << np.uint8(4))
    zp = None
    if not symmetric:
        m = np.ascontiguousarray(p.blocks[..., 2:4]).view(np.float16).astype(np.float32)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.where(d == 0, 0.0, -m / d).astype(np.float32).reshape(-1)
    return np.ascontiguousarray(packed), np.ascontiguousarray(d.reshape(-1)), zp


def _nbits_blocks_8(w: np.ndarray, group: int = 32):
    """8-bit blocks of ``w`` [N, K]: GGML ``Q8_0`` as the ``gguf`` package quantizes it (what
    ``hrm-lsp export --float-type q8_0`` writes), held with zero point 128 for MatMulNBits:
    (uint8 [N, K/group, group], scales fp32 [N*K/group])."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    n, k = w.shape
    rows = quantize(np.ascontiguousarray(w, dtype=np.float32), GGMLQuantizationType.Q8_0)
    blocks = rows.reshape(n, k // group, 2 + group)  # fp16 scale, then `group` int8 values
    d = np.ascontiguousarray(blocks[..., :2]).view(np.float16).astype(np.float32)
    q = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return np.ascontiguousarray(q), np.ascontiguousarray(d.reshape(-1))


# ---------------------------------------------------------------------------------------
# Graph


class _Graph:
    """A small ONNX graph builder: unique names, initializers, nodes."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, arr: np.ndarray, base: str) -> str:
        n = self.name(base)
        self.inits.append(self.nh.from_array(np.asarray(arr), n))
        return n

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "",
           **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op_type, inputs, outs, domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self):
        from onnx import helper

        g = helper.make_graph(self.nodes, "hrgc_step", self.inputs, self.outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET),
                                                helper.make_opsetid("com.microsoft", 1)])
        m.ir_version = 10
        return m


class _Builder:
    """Emits the forward of an HRGC or GPT model (``hrm_lsp.model``) for T new tokens."""

    def __init__(self, model, opts: ORTOptions):
        self.cfg = model.cfg
        self.opts = opts
        self.sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
        # A QAT model that was not baked computes with the 4-bit round trip of its weights:
        # so does the graph (bake_qat's arithmetic).
        from hrm_lsp.model.hrgc import Linear
        from hrm_lsp.model.quant import quantize_dequantize

        for name, m in model.named_modules():
            if isinstance(m, Linear) and m.qat_bits == 4:
                w = m.weight.detach().float().cpu()
                self.sd[f"{name}.weight"] = quantize_dequantize(
                    w, m.qat_group, m.qat_symmetric).numpy()
        self.g = _Graph()
        self.slot = 0
        self.quantized = 0  # distinct linears running as 4-bit kernels
        self.dense = 0  # distinct linears left in fp32
        self._weights: dict[str, tuple] = {}
        cfg = self.cfg
        cos, sin = _rope(cfg)
        self.cos, self.sin = self.g.const(cos, "rope_cos"), self.g.const(sin, "rope_sin")

    def linear(self, x: str, key: str) -> str:
        """x @ W^T for the block linear ``key`` [out, in]. The recurrence applies a layer
        several times per token: its weights are one initializer, shared by every node."""
        if key not in self._weights:
            self._weights[key] = self._linear_weights(key)
        op, ins, attrs = self._weights[key]
        return self.g.op(op, [x, *ins], **attrs)

    def _linear_weights(self, key: str):
        w = self.sd[key]
        n, k = w.shape
        from hrm_lsp.export.gguf import quant_scheme

        group, symmetric = quant_scheme(self.cfg)  # the blocks a GGUF file holds
        blocks = _nbits_blocks_4(w, group, symmetric)
        if blocks is None:
            self.dense += 1
            return "MatMul", [self.g.const(np.ascontiguousarray(w.T), "w")], {}
        self.quantized += 1
        packed, scales, zp = blocks
        ins = [self.g.const(packed, "q4"), self.g.const(scales, "s")]
        if zp is not None:
            ins.append(self.g.const(zp, "zp"))
        return "MatMulNBits", ins, dict(domain="com.microsoft", K=k, N=n, bits=4,
                                        block_size=group,
                                        accuracy_level=self.opts.accuracy_level)

    def param(self, key: str) -> str:
        """The initializer of a small parameter (norm weights), one per key."""
        if key not in self._weights:
            self._weights[key] = self.g.const(self.sd[key], "p")
        return self._weights[key]

    def norm_add(self, x: str, skip: str, key: str) -> str:
        """RMSNorm(x + skip) * weight."""
        return self.g.op("SkipSimplifiedLayerNormalization", [x, skip, self.param(key)],
                         domain="com.microsoft", epsilon=self.cfg.norm_eps)

    def norm(self, x: str, key: str) -> str:
        return self.g.op("SimplifiedLayerNormalization", [x, self.param(key)],
                         axis=-1, epsilon=self.cfg.norm_eps, stash_type=1)

    def attention(self, x: str, prefix: str, window: int) -> str:
        cfg = self.cfg
        s = self.slot
        self.slot += 1
        qkv = self.linear(x, f"{prefix}.qkv.weight")
        k_in, v_in = f"k{s}", f"v{s}"
        shape = [1, cfg.n_heads, "capacity", cfg.head_dim]
        self.g.inputs += [self.g.h.make_tensor_value_info(n, 1, shape) for n in (k_in, v_in)]
        y = self.g.name("attn")
        self.g.nodes.append(self.g.h.make_node(
            "GroupQueryAttention",
            [qkv, "", "", k_in, v_in, "seqlens_k", "total_len", self.cos, self.sin],
            [y, f"k{s}_out", f"v{s}_out"], domain="com.microsoft",
            num_heads=cfg.n_heads, kv_num_heads=cfg.n_heads, do_rotary=1, rotary_interleaved=0,
            scale=1.0 / math.sqrt(cfg.head_dim),
            local_window_size=window if window else -1))
        self.g.outputs += [self.g.h.make_tensor_value_info(n, 1, shape)
                           for n in (f"k{s}_out", f"v{s}_out")]
        return self.linear(y, f"{prefix}.proj.weight")

    def mlp(self, x: str, prefix: str) -> str:
        gate, up = self.g.op("Split", [self.linear(x, f"{prefix}.gate_up.weight")], n_out=2, axis=-1,
                             num_outputs=2)
        act = self.g.op("Mul", [gate, self.g.op("Sigmoid", [gate])])
        return self.linear(self.g.op("Mul", [act, up]), f"{prefix}.down.weight")

    def block(self, x: str, prefix: str, window: int = 0, prenorm: bool = False) -> str:
        if prenorm:
            h = self.g.op("Add", [x, self.attention(self.norm(x, f"{prefix}.attn_norm.weight"),
                                                    f"{prefix}.attn", window)])
            return self.g.op("Add", [h, self.mlp(self.norm(h, f"{prefix}.mlp_norm.weight"),
                                                 f"{prefix}.mlp")])
        x = self.norm_add(x, self.attention(x, f"{prefix}.attn", window), f"{prefix}.attn_norm.weight")
        return self.norm_add(x, self.mlp(x, f"{prefix}.mlp"), f"{prefix}.mlp_norm.weight")

    def embed(self) -> str:
        cfg, g = self.cfg, self.g
        scale = math.sqrt(cfg.d_model)
        g.inputs.append(g.h.make_tensor_value_info("ids", 7, [1, "T"]))
        x = g.op("Gather", [g.const(self.sd["embed.weight"] * scale, "embed"), "ids"])
        if cfg.byte_features:
            for feat, key in (("nibble", "nibble_embed.weight"), ("acc", "acc_embed.weight")):
                g.inputs.append(g.h.make_tensor_value_info(feat, 7, [1, "T"]))
                x = g.op("Add", [x, g.op("Gather", [g.const(self.sd[key] * scale, feat), feat])])
        return x

    def heads(self, z: str) -> None:
        cfg, g = self.cfg, self.g
        last = g.op("Slice", [z, g.const(np.array([-1], np.int64), "i"),
                              g.const(np.array([2**62], np.int64), "i"),
                              g.const(np.array([1], np.int64), "i")])
        w = self.sd["lm_head.weight"]
        if self.opts.head_bits == 8 and cfg.d_model % 32 == 0:
            q, d = _nbits_blocks_8(w)
            logits = g.op("MatMulNBits", [last, g.const(q, "q8"), g.const(d, "s")],
                          domain="com.microsoft", K=w.shape[1], N=w.shape[0], bits=8,
                          block_size=32, accuracy_level=self.opts.accuracy_level)
        else:
            logits = g.op("MatMul", [last, g.const(np.ascontiguousarray(w.T), "head")])
        refine = g.op("Add", [g.op("MatMul", [last, g.const(self.sd["refine_head.weight"].T.copy(),
                                                             "rw")]),
                              g.const(self.sd["refine_head.bias"], "rb")])
        g.nodes.append(g.h.make_node("Identity", [logits], ["logits"]))
        g.nodes.append(g.h.make_node("Identity", [refine], ["refine"]))
        g.outputs += [g.h.make_tensor_value_info("logits", 1, [1, 1, cfg.vocab_size]),
                      g.h.make_tensor_value_info("refine", 1, [1, 1, 1])]

    def build(self):
        cfg, g = self.cfg, self.g
        g.inputs += [g.h.make_tensor_value_info("seqlens_k", 6, [1]),
                     g.h.make_tensor_value_info("total_len", 6, [])]
        x = self.embed()
        if cfg.arch == "gpt":
            for i in range(cfg.n_layers):
                x = self.block(x, f"layers.{i}", prenorm=True)
            self.heads(self.norm(x, "norm.weight"))
            return g.model()
        # HRGC: the recurrence of hrgc.HRGC.forward. Cache slots are numbered in graph order
        # (the torch cache orders them differently; each backend's caches are its own).
        z_H, z_L = g.const(self.sd["H_init"], "H_init"), g.const(self.sd["L_init"], "L_init")
        gated = cfg.recurrent_gates  # z_L = L(g_LL·z_L, g_LH·z_H + x), z_H = H(g_HH·z_H, z_L)
        gate = {k: g.const(self.sd[k].astype(np.float32), k)
                for k in ("gate_LL", "gate_LH", "gate_HH")} if gated else {}
        for _h in range(cfg.H_cycles):
            # the generator's injection, fixed within an H cycle
            inj = g.op("Add", [g.op("Mul", [z_H, gate["gate_LH"]]) if gated else z_H, x])
            for _l in range(cfg.L_cycles):
                z = g.op("Add", [g.op("Mul", [z_L, gate["gate_LL"]]) if gated else z_L, inj])
                for i in range(cfg.L_layers):
                    z = self.block(z, f"L.layers.{i}")
                z_L = z
            z = g.op("Add", [g.op("Mul", [z_H, gate["gate_HH"]]) if gated else z_H, z_L])
            for i in range(cfg.H_layers):
                z = self.block(z, f"H.layers.{i}", window=cfg.H_window)
            z_H = z
        self.heads(z_H)
        return g.model()


def _rope(cfg) -> tuple[np.ndarray, np.ndarray]:
    from hrm_lsp.model.hrgc import rope_tables

    cos, sin = rope_tables(cfg)
    return cos.numpy(), sin.numpy()


# ---------------------------------------------------------------------------------------
# Runner


class ORTCache:
    """Key/value buffers of every attention application, bound in place to the graph."""

    def __init__(self, runner: ORTRunner, capacity: int):
        import onnxruntime as ort

        cfg = runner.cfg
        shape = (1, cfg.n_heads, capacity, cfg.head_dim)
        self.arrays = [np.zeros(shape, np.float32) for _ in range(2 * runner.n_slots)]
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]
        self.capacity = capacity
        self.length = 0
        # Bound once: each step only rebinds the ids and lengths (rebinding the 2 x 18 cache
        # buffers per token cost about 0.4 ms, 8% of a `default` step, on the 2-core CPU).
        self.io = runner.session.io_binding()
        for s in range(runner.n_slots):
            for j, kind in enumerate(("k", "v")):
                self.io.bind_ortvalue_input(f"{kind}{s}", self.values[2 * s + j])
                self.io.bind_ortvalue_output(f"{kind}{s}_out", self.values[2 * s + j])
        self.io.bind_ortvalue_output("logits", runner._logits_v)
        self.io.bind_ortvalue_output("refine", runner._refine_v)

    def truncate(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cannot truncate to {n} positions")
        self.length = min(self.length, n)

    def reset(self) -> None:
        self.length = 0


class ORTRunner(Runner):
    """Runs a torch HRGC/GPT model's weights through ONNX Runtime (CPU)."""

    def __init__(self, model, opts: ORTOptions | None = None):
        if not available():
            raise ORTUnavailable("the ONNX Runtime backend needs onnxruntime and onnx, which do "
                                 "not import here: pip install onnxruntime onnx, or use "
                                 "--backend torch")
        import onnxruntime as ort

        self.model = model
        self.cfg = model.cfg
        self.opts = opts or ORTOptions()
        # The weights are (re)quantized with torch ops: one thread, as a busy 2-core machine
        # makes torch's default two threads tens of times slower for them (torch_threads).
        with torch_threads(1):
            b = _Builder(model, self.opts)
            proto = b.build()
        self.n_slots = b.slot
        self.quantized_linears, self.dense_linears = b.quantized, b.dense
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.opts.threads
        so.inter_op_num_threads = 1
        # No busy-waiting between runs: the engine does Python work (index lookups, mixing)
        # between tokens, and spinning ORT threads would take the cores from it.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(proto.SerializeToString(), so,
                                            providers=["CPUExecutionProvider"])
        self._logits = np.zeros((1, 1, self.cfg.vocab_size), np.float32)
        self._refine = np.zeros((1, 1, 1), np.float32)
        self._logits_v = ort.OrtValue.ortvalue_from_numpy(self._logits)
        self._refine_v = ort.OrtValue.ortvalue_from_numpy(self._refine)

    def new_cache(self, capacity: int) -> ORTCache:
        if capacity > self.cfg.max_seq_len:
            raise ValueError(f"capacity {capacity} exceeds the model's context {self.cfg.max_seq_len}")
        return ORTCache(self, capacity)

    def forward(self, ids, feats, cache: ORTCache):
        T = len(ids)
        if T == 0:
            raise ValueError("no ids to run")
        if cache.length + T > cache.capacity:
            raise ValueError(f"{cache.length + T} positions exceed the cache ({cache.capacity})")
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= self.cfg.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size}), got {lo}..{hi}")
        total = cache.length + T
        io = cache.io
        io.bind_cpu_input("ids", np.asarray([ids], np.int64))
        for k, v in feats.items():
            io.bind_cpu_input(k, np.asarray(v, np.int64)[None])
        io.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        io.bind_cpu_input("total_len", np.array(total, np.int32))
        self.session.run_with_iobinding(io)
        cache.length = total
        return torch.from_numpy(self._logits[0, 0].copy()), torch.tensor(float(self._refine[0, 0, 0]))
