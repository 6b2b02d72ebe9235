"""Inference: per-document sessions with prefix reuse, plan-first FIM decoding, stop rules,
and the validator refinement loop. See docs/inference.md and docs/architecture.md.

The value types import nothing heavy; ``Engine`` (torch) is imported on first use so the
server can start and build requests before the model loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hrm_lsp.inference.types import (
    CancelToken,
    Completion,
    CompletionRequest,
    Edit,
    InferenceError,
    Plan,
    Timings,
)

if TYPE_CHECKING:  # pragma: no cover
    from hrm_lsp.export.gguf import ModelFileError
    from hrm_lsp.inference.engine import Engine

__all__ = [
    "CancelToken", "Completion", "CompletionRequest", "Edit", "Engine", "InferenceError",
    "ModelFileError", "Plan", "Timings",
]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from hrm_lsp.inference.engine import Engine

        return Engine
    if name == "ModelFileError":
        from hrm_lsp.export.errors import ModelFileError

        return ModelFileError
    raise AttributeError(name)
