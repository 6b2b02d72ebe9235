"""hrm_lsp.data: corpus mining, plan extraction, splits and shards (docs/data.md).

``prepare(PrepareOptions(...), out_dir)`` builds a data directory; ``Dataset(out_dir)`` reads
it back as batches for training (contract in docs/architecture.md, "data → training").
"""

from __future__ import annotations

from typing import Any

__all__ = ["Batch", "Dataset", "DatasetError", "PrepareError", "PrepareOptions", "prepare"]


def __getattr__(name: str) -> Any:
    # Lazy: importing hrm_lsp.data must not pull in tree-sitter or SentencePiece for readers.
    if name in ("Batch", "Dataset", "DatasetError"):
        from hrm_lsp.data import dataset

        return getattr(dataset, name)
    if name in ("PrepareError", "PrepareOptions", "prepare"):
        from hrm_lsp.data import pipeline as _pipeline

        return getattr(_pipeline, name)
    raise AttributeError(name)
