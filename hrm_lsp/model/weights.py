"""Weights to and from safetensors, by the contract names (docs/model.md "Weight names").

A tied output head is stored once, as ``embed.weight``; ``lm_head.weight`` appears only in
untied models. The model config travels in the safetensors metadata (``hrm_lsp.model``) so a
file is enough to rebuild its model. Every mismatch raises ``WeightsError`` naming tensors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from hrm_lsp.config import ConfigError

CONFIG_KEY = "hrm_lsp.model"


class WeightsError(ValueError):
    """A weights file or mapping does not fit the model (missing, unexpected, shape, dtype)."""


def state_dict_for_export(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contract-named tensors of ``model`` (tied head omitted), detached and contiguous."""
    sd = model.state_dict()
    if model.cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    return {k: v.detach().contiguous() for k, v in sd.items()}


def save_weights(model: torch.nn.Module, path: str | Path,
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write the model's weights and config to a safetensors file (atomic rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {CONFIG_KEY: json.dumps(model.cfg.to_dict(), sort_keys=True), **(metadata or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.cpu() for k, v in state_dict_for_export(model).items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, with WeightsError for unreadable files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    return tensors, meta


def load_weights(model: torch.nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Copy weights into ``model`` from a file or mapping; every name and shape must match."""
    tensors = read_safetensors(source)[0] if isinstance(source, (str, Path)) else dict(source)
    expected = state_dict_for_export(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        raise WeightsError("weights do not match the model config: " + "; ".join(parts))
    for name, ref in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise WeightsError(f"{name}: shape {tuple(t.shape)} in weights, model has {tuple(ref.shape)}")
        if not t.is_floating_point():
            raise WeightsError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    with torch.no_grad():
        own = dict(model.named_parameters())
        own.update(dict(model.named_buffers()))
        for name in expected:
            own[name].copy_(tensors[name].to(own[name].dtype))


def config_from_metadata(meta: Mapping[str, str], where: str = "weights"):
    """The ModelConfig stored by ``save_weights`` (WeightsError when absent or invalid)."""
    from hrm_lsp.model.config import ModelConfig

    if CONFIG_KEY not in meta:
        raise WeightsError(f"{where}: no model config in metadata (key {CONFIG_KEY!r})")
    try:
        return ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
    except (json.JSONDecodeError, ConfigError) as e:
        raise WeightsError(f"{where}: bad model config in metadata: {e}") from None


def load_model_file(path: str | Path):
    """Rebuild the model saved by ``save_weights`` (config from metadata)."""
    from hrm_lsp.model import build_model

    tensors, meta = read_safetensors(path)
    model = build_model(config_from_metadata(meta, str(path)), init=False)  # all weights loaded
    load_weights(model, tensors)
    return model
