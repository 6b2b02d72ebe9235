"""Training's view of the data package: find or prepare the data, check it fits the recipe,
and turn its batches into loss targets.

``--data`` takes either one prepared directory (``manifest.json`` + shards + tokenizer, from
``hrm-lsp prepare``) or source directories / git repositories, which are prepared first with
the data package's own library function into ``RUN_DIR/data``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hrm_lsp.log import get_logger
from hrm_lsp.training.loss import SymbolIds, Targets, make_targets
from hrm_lsp.training.recipe import Recipe

log = get_logger(__name__)


class DataError(ValueError):
    """The data given to ``train`` cannot be used; the message says what to do."""


def is_prepared(path: Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def resolve_data(paths: list[Path] | tuple[Path, ...], recipe: Recipe, out_dir: Path,
                 tokenizer_from: Path | None = None, echo=None) -> Path:
    """The prepared data directory for ``paths``: itself, or freshly prepared into out_dir
    (with the tokenizer in ``tokenizer_from`` instead of a new one, when given); ``echo``
    gets the preparation's messages (what was held out, among them)."""
    if not paths:
        raise DataError("no --data given: pass a prepared data directory or source directories")
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"--data: no such file or directory: {', '.join(missing)}")
    prepared = [p for p in paths if is_prepared(p)]
    if prepared:
        if len(paths) > 1:
            raise DataError(
                f"--data: {prepared[0]} is already prepared; pass it alone, or pass only "
                "source directories to prepare together"
            )
        return paths[0]
    not_dirs = [str(p) for p in paths if not p.is_dir()]
    if not_dirs:
        raise DataError(f"--data: not a directory: {', '.join(not_dirs)}")
    if is_prepared(out_dir):
        log.info("reusing prepared data in %s", out_dir)
        return out_dir
    return _prepare(paths, recipe, out_dir, tokenizer_from, echo)


def _prepare(paths: list[Path], recipe: Recipe, out_dir: Path, tokenizer_from: Path | None = None,
             echo=None) -> Path:
    """Prepare sources with the data package (git repositories with their history)."""
    from hrm_lsp.config import ConfigError
    from hrm_lsp.data import PrepareError, PrepareOptions, prepare

    kwargs: dict[str, Any] = {
        "sources": tuple(str(p) for p in paths),
        # History only where there is some: plain directories would be reported as skipped.
        "history": recipe.data.history and any((p / ".git").exists() for p in paths),
        "since": recipe.data.since or None,
        "split_by": recipe.data.split_by,
        "tokenizer": recipe.data.tokenizer,
        "refine_examples": recipe.data.refine_examples,
    }
    if recipe.data.tokenizer == "spm" and recipe.data.vocab_size:
        kwargs["vocab"] = recipe.data.vocab_size
    if tokenizer_from is not None:
        kwargs["tokenizer_from"] = str(tokenizer_from)
    log.info("preparing %s into %s", ", ".join(map(str, paths)), out_dir)
    try:
        prepare(PrepareOptions(**kwargs), out_dir, echo=echo)
    except (PrepareError, ConfigError) as e:
        raise DataError(f"preparing {', '.join(map(str, paths))}: {e}") from None
    return out_dir


def open_dataset(path: Path, recipe: Recipe):
    """Open prepared data and check its tokenizer kind is the recipe's."""
    from hrm_lsp.data import Dataset, DatasetError

    try:
        ds = Dataset(Path(path))
    except (DatasetError, OSError, ValueError) as e:
        raise DataError(f"--data {path}: {e}") from None
    kind = ds.tokenizer.kind
    if kind != recipe.data.tokenizer:
        raise DataError(
            f"--data {path} was prepared with the {kind!r} tokenizer but recipe "
            f"{recipe.source.name!r} trains on {recipe.data.tokenizer!r}; prepare the data with "
            f"--tokenizer {recipe.data.tokenizer}, or pass --set data.tokenizer={kind}"
        )
    return ds


class TrainData:
    """Batches as loss targets (+ byte features) for one rank."""

    def __init__(self, ds, recipe: Recipe, byte_features: bool, rank: int = 0, world_size: int = 1,
                 eval_split: str = "val"):
        self.ds = ds
        self.tok = ds.tokenizer
        self.recipe = recipe
        self.byte_features = byte_features
        self.rank, self.world_size = rank, world_size
        self.sym = SymbolIds.from_tokenizer(self.tok)
        self.eval_split = eval_split
        self._val: list[tuple[Targets, dict | None, int]] | None = None

    def _features(self, t: Targets) -> dict[str, np.ndarray] | None:
        return self.tok.features(t.inputs) if self.byte_features else None

    def train_batches(self, start: int = 0) -> Iterator[tuple[Targets, dict | None, int]]:
        """(targets, features, position to resume after this batch), without end."""
        d = self.recipe.data
        it = self.ds.batches(split="train", batch_size=d.batch_size, seq_len=d.seq_len,
                             seed=self.recipe.run.seed, fim_rate=d.fim_rate, rank=self.rank,
                             world_size=self.world_size, start=start, workers=d.workers)
        for b in _guard(it):  # endless: the data package cycles epochs in the train stream
            t = make_targets(b.ids, self.sym)
            yield t, self._features(t), int(b.position)

    def val_batches(self) -> list[tuple[Targets, dict | None, int]]:
        """A fixed set of validation batches (no FIM), with the UTF-8 size of their targets."""
        if self._val is None:
            d = self.recipe.data
            # One pass over the split (the data package's default for val), no FIM.
            it = self.ds.batches(split=self.eval_split, batch_size=d.batch_size, seq_len=d.seq_len,
                                 seed=0, fim_rate=0.0, rank=0, world_size=1, start=0)
            out = []
            for b in _guard(it):
                t = make_targets(b.ids, self.sym)
                out.append((t, self._features(t), self.target_bytes(t)))
                if len(out) >= self.recipe.run.eval_batches:
                    break
            if not out:
                raise DataError(f"the {self.eval_split} split is empty; prepare more data")
            self._val = out
        return self._val

    def target_bytes(self, t: Targets) -> int:
        """UTF-8 bytes of the decoded non-pad targets (the denominator of bits per byte)."""
        n = 0
        for row, real in zip(t.targets, t.plan_mask | t.code_mask, strict=True):
            n += len(self.tok.decode(row[real].tolist()).encode("utf-8"))
        return n


def _guard(it):
    """Re-raise the data package's errors (empty split, bad options) as DataError."""
    from hrm_lsp.data import DatasetError

    try:
        yield from it
    except DatasetError as e:
        raise DataError(str(e)) from None
