"""HRGC: the hierarchical recurrent Go coder, a causal language model (PyTorch).

Design choices (docs/model.md has the reasons and the weight names):

- Two transformer modules with the HRM two-timescale recurrence over the same positions:
  the planner ``H`` (slow) and the generator ``L`` (fast). Per position, with input
  embedding ``x``:  ``for h in H_cycles: for l in L_cycles: z_L = L(z_L, z_H + x);
  z_H = H(z_H, z_L)``, where ``M(z, inj)`` runs M's layers on ``z + inj`` (input injection).
  Logits and the refinement-controller logit both come from the final ``z_H``.
- Recurrent gates (``recurrent_gates``): three trained scalars, initialised to zero, on the
  inputs that feed a state back: ``z_L = L(gate_LL·z_L, gate_LH·z_H + x)``,
  ``z_H = H(gate_HH·z_H, z_L)``. At initialisation a gated model of any cycle count computes
  exactly the 1 x 1 function (every cycle sees only ``x``); without them the fed-back state
  collapses to one vector per sequence early in training (docs/model.md, "Recurrent gates").
- Blocks are post-norm (RMSNorm after each residual add) as in HRM: states re-enter the
  recurrence several times and post-norm keeps their scale fixed. SwiGLU MLP, RoPE,
  causal attention through ``F.scaled_dot_product_attention``. No biases.
- The planner may attend over a sliding window (``H_window``, seed 004: 512 of 1024).
- Gradients: ``one_step`` (HRM) runs every step but the last L step and the last H step
  without autograd; ``full`` (TRM) back-propagates through the whole last H cycle. Earlier
  cycles never build a graph, so activation memory is that of one cycle at most.
- Embeddings are initialised with std 1/sqrt(d) and scaled by sqrt(d) (HRM), so states start
  at unit scale. In byte mode nibble-index and accumulator embeddings are added.
- 4-bit QAT: block linears fake-quantize their weights on the fly (``quant.fake_quant``);
  embeddings, norms and heads stay in floating point.
- Incremental decoding writes into a preallocated ``KVCache`` (one slot per application).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hrm_lsp.model.cache import CacheError, KVCache
from hrm_lsp.model.config import ACC_VOCAB, NIBBLE_VOCAB, ModelConfig
from hrm_lsp.model.quant import fake_quant

# ---------------------------------------------------------------------------------------
# Small parts


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Linear(nn.Linear):
    """Bias-free linear layer that fake-quantizes its weight to 4 bits when QAT is on."""

    def __init__(self, d_in: int, d_out: int, cfg: ModelConfig):
        super().__init__(d_in, d_out, bias=False)
        self.qat_bits = cfg.qat_bits
        self.qat_group = cfg.qat_group
        self.qat_symmetric = cfg.qat_symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.qat_bits == 4:
            w = fake_quant(w, self.qat_group, self.qat_symmetric)
        return F.linear(x, w)


def rope_tables(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [max_seq_len, head_dim/2] (fp32; the MLX twin builds the same tables)."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
    angles = torch.arange(cfg.max_seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate halves of x [..., T, hd] by position (cos/sin: [T, hd/2])."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention_mask(pos: int, n_new: int, k_start: int, window: int, device) -> torch.Tensor | None:
    """Boolean [T, K] mask (True = attend) for queries pos.. over keys k_start..pos+T.

    None when every key in range may be seen (one query at the end of the range).
    """
    if n_new == 1:
        return None
    q = torch.arange(pos, pos + n_new, device=device)[:, None]
    k = torch.arange(k_start, pos + n_new, device=device)[None, :]
    allowed = k <= q
    if window:
        allowed = allowed & (q - k < window)
    return allowed


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int = 0):
        super().__init__()
        self.n_heads, self.head_dim, self.window = cfg.n_heads, cfg.head_dim, window
        self.dropout = cfg.dropout
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model, cfg)
        self.proj = Linear(cfg.d_model, cfg.d_model, cfg)

    def forward(self, x, cos, sin, pos: int = 0, cache: KVCache | None = None, slot: int = 0):
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(qkv[:2], cos, sin).unbind(0)  # rotate q and k in one go: [B, H, T, hd]
        v = qkv[2]
        if cache is not None:
            k, v = cache.write(slot, pos, k, v)  # [B, H, pos+T, hd]
        k_start = max(0, pos - self.window + 1) if self.window else 0
        k, v = k[:, :, k_start:], v[:, :, k_start:]
        p = self.dropout if self.training else 0.0
        if pos == 0 and (not self.window or T <= self.window):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=p)
        else:
            mask = attention_mask(pos, T, k_start, self.window, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = Linear(cfg.d_model, 2 * cfg.ffn_hidden, cfg)
        self.down = Linear(cfg.ffn_hidden, cfg.d_model, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Attention + SwiGLU with RMSNorm after (post-norm, HRGC) or before (pre-norm, GPT)."""

    def __init__(self, cfg: ModelConfig, window: int = 0, prenorm: bool = False):
        super().__init__()
        self.prenorm, self.dropout = prenorm, cfg.dropout
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, window)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Skipped outright when off: decoding runs this 2 x 18 times per token.
        return F.dropout(x, self.dropout) if self.training and self.dropout else x

    def forward(self, x, cos, sin, pos: int = 0, cache: KVCache | None = None, slot: int = 0):
        if self.prenorm:
            x = x + self._drop(self.attn(self.attn_norm(x), cos, sin, pos, cache, slot))
            return x + self._drop(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + self._drop(self.attn(x, cos, sin, pos, cache, slot)))
        return self.mlp_norm(x + self._drop(self.mlp(x)))


class ReasoningModule(nn.Module):
    """The planner or the generator: ``z + injection`` through its layers."""

    def __init__(self, cfg: ModelConfig, n_layers: int, window: int = 0):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg, window) for _ in range(n_layers))

    def forward(self, z, injection, cos, sin, pos=0, cache: KVCache | None = None, slot0=0):
        z = z + injection
        for i, layer in enumerate(self.layers):
            z = layer(z, cos, sin, pos, cache, slot0 + i)
        return z


@dataclass
class HRGCState:
    """Recurrent state per position: planner z_H and generator z_L, [B, T, D] each."""

    z_H: torch.Tensor
    z_L: torch.Tensor


@dataclass
class ModelOutput:
    logits: torch.Tensor | None  # [B, T, vocab] (T = 1 with last_only); None with lm_head=False
    refine_logit: torch.Tensor  # [B, T]: will the code so far pass the validators?
    state: HRGCState | None = None  # HRGC only
    hidden: torch.Tensor | None = None  # [B, T, D]: what the output head reads (lm_head=False)


# ---------------------------------------------------------------------------------------
# Shared embedding / heads (HRGC and GPT)


class LMBase(nn.Module):
    """Embeddings, heads, caches and input checks shared by HRGC and the GPT baseline."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        D = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, D)
        if cfg.byte_features:
            self.nibble_embed = nn.Embedding(NIBBLE_VOCAB, D)
            self.acc_embed = nn.Embedding(ACC_VOCAB, D)
        self.lm_head = nn.Linear(D, cfg.vocab_size, bias=False)
        self.refine_head = nn.Linear(D, 1, bias=True)
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.embed_scale = math.sqrt(D)

    def init_weights(self) -> None:
        """Truncated-normal LeCun init (std 1/sqrt(fan_in)); embeddings std 1/sqrt(d) (HRM)."""
        D = self.cfg.d_model
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif p.dim() == 2:
                std = 1.0 / math.sqrt(D if "embed" in name else p.shape[1])
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
        # The refinement controller starts undecided (p = 0.5) and learns from targets only.
        nn.init.zeros_(self.refine_head.weight)
        nn.init.zeros_(self.refine_head.bias)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding with the output head when the config ties them."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def _init_or_tie(self, init: bool) -> None:
        # Loading a model file overwrites every weight: skipping the truncated-normal init
        # saves seconds at load (3.2 s of 6.3 s for the shipped model, measured on the 2-core CPU).
        self.init_weights() if init else self.tie_weights()

    def embed_inputs(self, ids, nibble=None, acc=None) -> torch.Tensor:
        """Token (+ nibble and accumulator) embeddings, scaled to unit RMS: [B, T, D]."""
        x = self.embed(ids)
        if self.cfg.byte_features:
            if nibble is None or acc is None:
                raise ValueError("this byte-mode model needs nibble and acc features "
                                 "(tokenizer.features(ids)) with the ids")
            if nibble.shape != ids.shape or acc.shape != ids.shape:
                raise ValueError(f"nibble {tuple(nibble.shape)} and acc {tuple(acc.shape)} must "
                                 f"have the shape of ids {tuple(ids.shape)}")
            x = x + self.nibble_embed(nibble.long()) + self.acc_embed(acc.long())
        return x * self.embed_scale

    def check_inputs(self, ids: torch.Tensor, cache: KVCache | None) -> int:
        """Validate ids (and cache room); return the position of ids[:, 0]."""
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"ids must be an integer tensor [B, T], got {tuple(ids.shape)} {ids.dtype}")
        B, T = ids.shape
        if T == 0:
            raise ValueError("ids has no positions")
        pos = 0
        if cache is not None:
            cache.check_append(B, T)
            pos = cache.length
        if pos + T > self.cfg.max_seq_len:
            raise CacheError(f"positions {pos}..{pos + T - 1} exceed the model's context "
                             f"max_seq_len={self.cfg.max_seq_len}")
        if not torch.compiler.is_compiling():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.cfg.vocab_size:
                raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size}), got {lo}..{hi}")
        return pos

    def heads(self, z: torch.Tensor, last_only: bool,
              lm_head: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits, refine_logit); logits None when ``lm_head`` is False: training then applies
        the output head inside its fused, chunked loss (``training.loss.fused_linear_ce``)."""
        if last_only:
            z = z[:, -1:]
        return (self.lm_head(z) if lm_head else None), self.refine_head(z).squeeze(-1)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        """A preallocated cache for ``batch`` rows and up to ``max_len`` positions."""
        cfg = self.cfg
        max_len = max_len or cfg.max_seq_len
        if max_len > cfg.max_seq_len:
            raise CacheError(f"max_len {max_len} exceeds the model's context {cfg.max_seq_len}")
        p = self.embed.weight
        return KVCache(cfg.n_cache_slots, batch, cfg.n_heads, max_len, cfg.head_dim,
                       dtype=p.dtype, device=p.device)

    def num_params(self) -> int:
        """Distinct parameters (a tied output head counts once)."""
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


# ---------------------------------------------------------------------------------------
# The model


class HRGC(LMBase):
    def __init__(self, cfg: ModelConfig, init: bool = True):
        super().__init__(cfg)
        D = cfg.d_model
        self.H = ReasoningModule(cfg, cfg.H_layers, window=cfg.H_window)  # planner
        self.L = ReasoningModule(cfg, cfg.L_layers)  # generator
        # Initial states, fixed (HRM keeps them as buffers): unit-scale random vectors.
        g = torch.Generator().manual_seed(0)
        h0, l0 = torch.randn(D, generator=g), torch.randn(D, generator=g)
        if cfg.state_init == "zero":
            h0, l0 = torch.zeros(D), torch.zeros(D)
        self.register_buffer("H_init", h0, persistent=True)
        self.register_buffer("L_init", l0, persistent=True)
        if cfg.recurrent_gates:  # scalars as [1] tensors: every weight format stores them
            self.gate_LL = nn.Parameter(torch.zeros(1))
            self.gate_LH = nn.Parameter(torch.zeros(1))
            self.gate_HH = nn.Parameter(torch.zeros(1))
        self._init_or_tie(init)

    def _inputs_L(self, z_L, z_H, x):
        """(state, injection) of a generator step: ``(g_LL·z_L, g_LH·z_H + x)`` when gated."""
        if self.cfg.recurrent_gates:
            return self.gate_LL * z_L, self.gate_LH * z_H + x
        return z_L, z_H + x

    def _inputs_H(self, z_H, z_L):
        """(state, injection) of a planner step: ``(g_HH·z_H, z_L)`` when gated."""
        if self.cfg.recurrent_gates:
            return self.gate_HH * z_H, z_L
        return z_H, z_L

    # (H, L) cycles to run instead of the config's, each at most the config's (None: the
    # config's). Training with ``run.random_cycles`` sets it per step; an evaluation may set
    # it to score the model at fewer cycles. The KV cache keeps the config's layout, so a
    # cached decode must use one count throughout. Torch only.
    cycles: tuple[int, int] | None = None

    def run_cycles(self) -> tuple[int, int]:
        if self.cycles is None:
            return self.cfg.H_cycles, self.cfg.L_cycles
        h, l_ = self.cycles
        if not (1 <= h <= self.cfg.H_cycles and 1 <= l_ <= self.cfg.L_cycles):
            raise ValueError(f"cycles {self.cycles} outside 1..{self.cfg.H_cycles} x "
                             f"1..{self.cfg.L_cycles} (the model's config)")
        return h, l_

    def _run(self, module: ReasoningModule, z, inj, cos, sin, pos, cache, slot0, grad: bool):
        """One module application, with autograd only when ``grad`` (and checkpointed if set)."""
        if not grad:
            with torch.no_grad():
                return module(z, inj, cos, sin, pos, cache, slot0)
        if self.cfg.grad_checkpointing and cache is None:
            return checkpoint(module, z, inj, cos, sin, pos, None, slot0, use_reentrant=False)
        return module(z, inj, cos, sin, pos, cache, slot0)

    def forward(self, ids, nibble=None, acc=None, cache: KVCache | None = None,
                last_only: bool = False, lm_head: bool = True) -> ModelOutput:
        """Logits [B, T, V] and refine_logit [B, T] for ids [B, T] (positions after cache);
        with ``lm_head=False`` no logits, and ``hidden`` = the state the head reads."""
        cfg = self.cfg
        pos = self.check_inputs(ids, cache)
        B, T = ids.shape
        cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        x = self.embed_inputs(ids, nibble, acc)  # [B, T, D]
        z_H = self.H_init.to(x.dtype).expand(B, T, -1)
        z_L = self.L_init.to(x.dtype).expand(B, T, -1)

        grad = torch.is_grad_enabled()
        n_h, n_l = self.run_cycles()
        last_h, last_l = n_h - 1, n_l - 1
        for h in range(n_h):
            for l_step in range(n_l):
                # one_step (HRM): only the final L step keeps a graph; full (TRM): the whole last cycle.
                g = grad and h == last_h and (cfg.grad_mode == "full" or l_step == last_l)
                slot = (h * cfg.L_cycles + l_step) * cfg.L_layers  # the config's cache layout
                z_L = self._run(self.L, *self._inputs_L(z_L, z_H, x), cos, sin, pos, cache, slot, g)
            z_H = self._run(self.H, *self._inputs_H(z_H, z_L), cos, sin, pos, cache,
                            cfg.H_cycles * cfg.L_cycles * cfg.L_layers + h * cfg.H_layers,
                            grad and h == last_h)

        if cache is not None:
            cache.advance(T)
        logits, refine_logit = self.heads(z_H, last_only, lm_head)
        return ModelOutput(logits, refine_logit, HRGCState(z_H, z_L), None if lm_head else z_H)
