"""The one place for logging set-up: a named logger tree under ``hrm_lsp``."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    """Logger for a module; pass ``__name__``."""
    return logging.getLogger(name if name.startswith("hrm_lsp") else f"hrm_lsp.{name}")


def configure(level: str | int = "WARNING", log_file: str | None = None) -> None:
    """Configure the ``hrm_lsp`` logger once: to a file if given, else stderr (never stdout,
    which carries the LSP stream in ``serve``)."""
    root = logging.getLogger("hrm_lsp")
    root.handlers.clear()
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
