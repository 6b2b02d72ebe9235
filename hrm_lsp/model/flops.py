"""FLOPs per token for HRGC and GPT, every recurrence step counted (for MFU).

Per token and per block application (a multiply-add is 2 FLOPs):

- matmuls: ``2 * (4 d^2 + 3 d f)`` (qkv + proj, gate_up + down);
- attention: ``4 * d * c`` (scores and weighted values) over ``c`` keys. With
  ``causal=True`` (the default, what the hardware really does with a causal kernel) ``c`` is
  the mean number of keys a position sees in a ``seq_len`` sequence, capped by the planner
  window; ``causal=False`` uses ``c = seq_len`` as ``torch.utils.flop_counter`` does (the
  tests check the formula against it that way).

HRGC applies L ``H_cycles * L_cycles`` times and H ``H_cycles`` times per token; the GPT
baseline applies each block once. The output head costs ``2 d V``. Training adds the
backward pass (2x the forward FLOPs) only for applications that keep a graph (``one_step``:
the last L and H; ``full``: the last H cycle) and the head, plus one more forward of those
applications when gradient checkpointing recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hrm_lsp.model.config import ModelConfig


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per token, by pass."""

    forward: float
    backward: float
    recompute: float

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.recompute


def _mean_keys(seq_len: int, window: int, causal: bool) -> float:
    if not causal:
        return float(min(seq_len, window) if window else seq_len)
    if not window or window >= seq_len:
        return (seq_len + 1) / 2
    # Positions 1..W see themselves and everything before; later ones see W keys.
    return (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len


def block_flops(cfg: ModelConfig, seq_len: int, window: int = 0, causal: bool = True,
                attention: bool = True) -> float:
    """Forward FLOPs per token of one block application (``attention=False``: matmuls only)."""
    D, F = cfg.d_model, cfg.ffn_hidden
    attn = 4 * D * _mean_keys(seq_len, window, causal) if attention else 0.0
    return 2 * (4 * D * D + 3 * D * F) + attn


def flops_per_token(cfg: ModelConfig, seq_len: int, training: bool = True,
                    grad_mode: str | None = None, checkpointing: bool | None = None,
                    causal: bool = True, attention: bool = True) -> FlopCount:
    """Forward / backward / recompute FLOPs per token for a ``seq_len`` sequence."""
    grad_mode = grad_mode or cfg.grad_mode
    ckpt = cfg.grad_checkpointing if checkpointing is None else checkpointing
    head = 2 * cfg.d_model * cfg.vocab_size + 2 * cfg.d_model  # lm_head + refine head
    if cfg.arch == "gpt":
        blocks = cfg.n_layers * block_flops(cfg, seq_len, 0, causal, attention)
        graded = blocks
    else:
        L_app = cfg.L_layers * block_flops(cfg, seq_len, 0, causal, attention)
        H_app = cfg.H_layers * block_flops(cfg, seq_len, cfg.H_window, causal, attention)
        blocks = cfg.H_cycles * (cfg.L_cycles * L_app + H_app)
        graded = (cfg.L_cycles if grad_mode == "full" else 1) * L_app + H_app
    forward = blocks + head
    if not training:
        return FlopCount(forward, 0.0, 0.0)
    return FlopCount(forward, 2 * (graded + head), graded if ckpt else 0.0)


def mfu(tokens_per_second: float, flops_per_token_: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak FLOP/s."""
    return tokens_per_second * flops_per_token_ / peak_flops
