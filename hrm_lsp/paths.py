"""The one place for on-disk locations: user cache, Go build cache, default model."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    """Per-user cache directory (``HRM_LSP_CACHE`` overrides), created on demand."""
    override = os.environ.get("HRM_LSP_CACHE")
    if override:
        base = Path(override)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "hrm-lsp"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "hrm-lsp"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hrm-lsp"
    base.mkdir(parents=True, exist_ok=True)
    return base


def assets_dir() -> Path:
    """Directory holding the shipped default model and its run card."""
    return Path(__file__).resolve().parent / "assets"


def default_model_path() -> Path:
    """Path of the shipped default model (may not exist in a development checkout)."""
    return assets_dir() / "hrgc-default.gguf"
