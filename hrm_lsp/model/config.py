"""Model configuration: one frozen dataclass, named presets, validated once.

``preset(name, vocab_size=None, **overrides)`` is the one way to get a config; training
recipes and model files store ``to_dict(cfg)`` and rebuild it with ``ModelConfig.from_dict``.

Presets (parameter counts with the preset's own vocabulary; ``python -m hrm_lsp.model.params``
prints them for HRGC and the parameter-matched GPT):

- ``tiny``: for tests; well under 1M parameters.
- ``small``: a few M parameters, trainable on a laptop CPU.
- ``default``: seed 004 -- planner (H) and generator (L) 3 layers each, 256 wide, 8 heads,
  generator context 1024, planner context 512 (a sliding attention window, see below).
- ``seed000``: seed 000's byte model -- byte ids plus nibble-index and accumulator
  embeddings, context 512.

Seed 004 gives the planner 512 positions and the generator 1024. Both modules read the same
token stream (the H/L recurrence runs per position), so the planner cannot simply see a
shorter sequence; instead its attention is limited to the last ``H_window`` positions
(a causal sliding window). Its KV caches still hold the whole stream, attention slices the
window, so incremental decoding equals the full forward exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hrm_lsp.config import ConfigError, load_dataclass, to_dict
from hrm_lsp.tokenizer import symbols

# Byte mode ids: 256 bytes + pad + the special symbols (docs/tokenizers.md); the nibble
# feature takes 0..15 for bytes and 16 for specials/pad, the accumulator 0..255.
BYTE_VOCAB = 256 + 1 + len(symbols.SPECIALS)
NIBBLE_VOCAB = 17
ACC_VOCAB = 256


@dataclass(frozen=True)
class ModelConfig:
    """Shape and training switches of an HRGC or GPT model (see docs/model.md)."""

    arch: Literal["hrgc", "gpt"] = "hrgc"
    vocab_size: int = 512
    d_model: int = 64
    n_heads: int = 4
    H_layers: int = 1  # planner layers (GPT: H_layers + L_layers blocks, parameter-matched)
    L_layers: int = 1  # generator layers
    H_cycles: int = 2
    L_cycles: int = 2
    max_seq_len: int = 256  # generator context; RoPE tables and KV caches are sized by it
    H_window: int = 0  # planner attention window (0 = whole context)
    mlp_hidden: int = 0  # SwiGLU hidden width (0 = 4 * d_model)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    byte_features: bool = False  # add nibble (17) and accumulator (256) embeddings
    grad_mode: Literal["one_step", "full"] = "one_step"
    # Initial planner/generator states: "random" (HRM: fixed unit-scale random vectors) or
    # "zero". Measured on the small preset (docs/model.md, "Initial states"): the random
    # offsets slowed early training (150 steps, 1 x 1 cycles: val 7.10 vs 6.76 nats/token).
    state_init: Literal["random", "zero"] = "random"
    # Zero-initialised scalar gates on the recurrent inputs (HRGC only; GPT ignores it):
    # z_L = L(gate_LL·z_L, gate_LH·z_H + x), z_H = H(gate_HH·z_H, z_L). Off by default so
    # model files written before the gates existed (no such key) load unchanged; the presets
    # with more than one cycle turn it on (docs/model.md, "Recurrent gates").
    recurrent_gates: bool = False
    # The fill-in-the-middle layout the model was trained with (hrm_lsp/tokenizer/layout.py):
    # 1 = a middle without a plan still had an empty <PLAN></PLAN> pair (model files written
    # before 2026-12, e.g. the first shipped models: no such key); 2 = the code follows
    # <FIM_MIDDLE> directly. Training sets the layout of its data; inference follows it.
    fim_layout: Literal[1, 2] = 1
    grad_checkpointing: bool = False
    qat_bits: Literal[0, 4] = 0  # 4: fake-quantize block linears (straight-through)
    qat_group: Literal[32, 64] = 32
    qat_symmetric: bool = True  # True: GGML Q4_0-style blocks; False: Q4_1-style (scale + min)
    tie_embeddings: bool = True
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return self.mlp_hidden or 4 * self.d_model

    @property
    def n_layers(self) -> int:
        """Blocks of the GPT baseline: as many as the planner and generator together."""
        return self.H_layers + self.L_layers

    @property
    def n_cache_slots(self) -> int:
        """KV cache slots: one per (cycle, layer) application (GPT: one per layer)."""
        if self.arch == "gpt":
            return self.n_layers
        return self.H_cycles * (self.L_cycles * self.L_layers + self.H_layers)

    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistent field."""

        def bad(msg: str) -> None:
            raise ConfigError(f"model: {msg}")

        if self.arch not in ("hrgc", "gpt"):
            bad(f"arch {self.arch!r} is not 'hrgc' or 'gpt'")
        for name in ("vocab_size", "d_model", "n_heads", "H_layers", "L_layers", "H_cycles",
                     "L_cycles", "max_seq_len"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.d_model % self.n_heads:
            bad(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.head_dim % 2:
            bad(f"head_dim {self.head_dim} must be even for RoPE")
        if self.H_window < 0 or self.mlp_hidden < 0:
            bad("H_window and mlp_hidden must be >= 0")
        if self.grad_mode not in ("one_step", "full"):
            bad(f"grad_mode {self.grad_mode!r} is not 'one_step' or 'full'")
        if self.state_init not in ("random", "zero"):
            bad(f"state_init {self.state_init!r} is not 'random' or 'zero'")
        if self.qat_bits not in (0, 4):
            bad(f"qat_bits must be 0 or 4 (got {self.qat_bits})")
        if self.qat_group not in (32, 64):
            bad(f"qat_group must be 32 or 64 (got {self.qat_group})")
        if self.qat_bits and (self.d_model % self.qat_group or self.ffn_hidden % self.qat_group):
            bad(f"d_model and mlp hidden must be multiples of qat_group {self.qat_group}")
        if not 0.0 <= self.dropout < 1.0:
            bad(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            bad("rope_theta and norm_eps must be > 0")

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with ``changes`` applied (unknown keys raise ConfigError)."""
        return ModelConfig.from_dict({**to_dict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ModelConfig:
        """Parse and validate (ConfigError names unknown keys and bad values)."""
        return load_dataclass(ModelConfig, data, "model")


_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=512, d_model=64, n_heads=4, H_layers=1, L_layers=1,
                 H_cycles=2, L_cycles=2, max_seq_len=256, mlp_hidden=128, recurrent_gates=True),
    "small": dict(vocab_size=4096, d_model=192, n_heads=6, H_layers=2, L_layers=2,
                  H_cycles=2, L_cycles=2, max_seq_len=512, mlp_hidden=512, recurrent_gates=True),
    # Seed 004. 32768 ids untied: 23.1M parameters (6.3M in blocks, 2 x 8.4M in the
    # embedding and output head). Seed 004's 50k vocabulary would give 19.1M tied or
    # 31.9M untied; every output-head row costs a read per decoded token, so the
    # vocabulary is the main speed/compression trade-off (docs/model.md).
    "default": dict(vocab_size=32768, d_model=256, n_heads=8, H_layers=3, L_layers=3,
                    H_cycles=2, L_cycles=2, max_seq_len=1024, H_window=512,
                    mlp_hidden=1024, tie_embeddings=False, dropout=0.1, recurrent_gates=True),
    # Seed 000: bytes with nibble-index and accumulator embeddings, batch 8 x seq 512.
    "seed000": dict(vocab_size=BYTE_VOCAB, d_model=256, n_heads=8, H_layers=3, L_layers=3,
                    H_cycles=2, L_cycles=2, max_seq_len=512, mlp_hidden=1024,
                    byte_features=True, tie_embeddings=False, recurrent_gates=True),
}

PRESETS = tuple(_PRESETS)


def preset(name: str, vocab_size: int | None = None, **overrides: Any) -> ModelConfig:
    """The named preset with an optional vocabulary size and field overrides."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    data = dict(_PRESETS[name])
    if vocab_size is not None:
        data["vocab_size"] = vocab_size
    data.update(overrides)
    return ModelConfig.from_dict(data)


def fields() -> tuple[str, ...]:
    """Names of every config field (for --set help and metadata checks)."""
    return tuple(f.name for f in dataclasses.fields(ModelConfig))
