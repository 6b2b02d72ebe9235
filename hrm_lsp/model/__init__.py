"""hrm_lsp.model: HRGC and the GPT baseline (torch), the MLX twin, 4-bit, memory and FLOPs.

Contract (docs/architecture.md): ``preset``, ``ModelConfig``, ``build_model``; models take
``ids [B, T]`` (+ ``nibble``, ``acc`` in byte mode, ``cache``) and return ``ModelOutput``.
"""

from __future__ import annotations

from hrm_lsp.model.cache import CacheError, KVCache
from hrm_lsp.model.config import PRESETS, ModelConfig, preset
from hrm_lsp.model.gpt import GPT
from hrm_lsp.model.hrgc import HRGC, HRGCState, ModelOutput
from hrm_lsp.model.weights import WeightsError, load_weights, save_weights, state_dict_for_export


def build_model(cfg: ModelConfig, init: bool = True) -> HRGC | GPT:
    """HRGC or the GPT baseline, as ``cfg.arch`` says, with fresh weights (fp32, CPU).

    ``init=False`` skips the weight initialisation (for loaders that overwrite every weight;
    the initial-state buffers are still the fixed ones)."""
    cfg.validate()
    return GPT(cfg, init) if cfg.arch == "gpt" else HRGC(cfg, init)


__all__ = [
    "PRESETS", "CacheError", "GPT", "HRGC", "HRGCState", "KVCache", "ModelConfig",
    "ModelOutput", "WeightsError", "build_model", "load_weights", "preset", "save_weights",
    "state_dict_for_export",
]
