"""Persisted tiers: a directory of ``.npy`` arrays + ``meta.json``, memory-mapped on load.

The static tiers (standard library, module-cache modules) are built once per Go version /
module version and tokenizer, under ``<cache>/index/``. A directory is written under a
temporary name and renamed into place, so a crash never leaves half an index under the
final name. On load every array's size and SHA-256 are checked against ``meta.json``; a
mismatch raises ``StoreError`` and the caller rebuilds (with a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from hrm_lsp.index.suffix import SuffixIndex

FORMAT = 1
ARRAYS = ("rev", "sa", "doc_starts")


class StoreError(ValueError):
    """A persisted tier is missing, stale or corrupt."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(index: SuffixIndex, directory: Path, meta: dict) -> None:
    """Write ``index`` to ``directory`` atomically (replacing an older copy)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        sums = {}
        for name in ARRAYS:
            f = tmp / f"{name}.npy"
            np.save(f, np.ascontiguousarray(getattr(index, name)))
            sums[name] = _digest(f)
        info = {**meta, "format": FORMAT, "sha256": sums, "n_tokens": index.n_tokens,
                "n_docs": index.n_docs}
        (tmp / "meta.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(directory: Path, expect: dict) -> tuple[SuffixIndex, dict]:
    """Memory-map a saved tier; ``expect``: meta fields that must match (tokenizer, key)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{directory}: no readable meta.json ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{directory}: unknown index format")
    for k, v in expect.items():
        if meta.get(k) != v:
            raise StoreError(f"{directory}: built for {k}={meta.get(k)!r}, not {v!r}")
    arrays = {}
    for name in ARRAYS:
        f = directory / f"{name}.npy"
        want = (meta.get("sha256") or {}).get(name)
        try:
            if want is None or _digest(f) != want:
                raise StoreError(f"{directory}: {name}.npy does not match its checksum")
            # A plain ndarray over the map: np.memmap's own indexing is several times slower.
            arrays[name] = np.asarray(np.load(f, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as e:
            raise StoreError(f"{directory}: {name}.npy is unreadable ({e})") from None
    rev, sa, starts = arrays["rev"], arrays["sa"], arrays["doc_starts"]
    if len(rev) != len(sa) or rev.ndim != 1 or rev.dtype.kind != "u" or sa.dtype.kind != "i":
        raise StoreError(f"{directory}: arrays have inconsistent shapes or types")
    return SuffixIndex(rev, sa, np.asarray(starts)), meta
