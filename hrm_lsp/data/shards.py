"""Token shards: flat memory-mapped arrays of ids plus a per-shard document index.

Per split: ``{split}-NNNNN.bin`` (uint16, or uint32 when the vocabulary exceeds 65535) and
``{split}-NNNNN.idx.npy`` (int64 [documents, 2] = start, length in tokens; no pickle).
Writing is streaming and resumable: ``ShardWriter.checkpoint()`` records how many input
documents are in finished bytes; a new writer started from that state truncates whatever
was written after it and goes on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_SHARD_TOKENS = 1 << 27  # 128 Mi tokens: 256 MiB at uint16


def dtype_for(vocab_size: int) -> np.dtype:
    """Smallest unsigned type holding every id."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


@dataclass
class ShardState:
    """Progress of one split's writing (JSON-friendly)."""

    docs_done: int = 0  # input documents consumed (written or dropped)
    shards: list[dict] = field(default_factory=list)  # finished: file, index, documents, tokens
    open_tokens: int = 0  # tokens of the open shard that are durable
    open_docs: int = 0

    def to_json(self) -> dict:
        return {"docs_done": self.docs_done, "shards": self.shards,
                "open_tokens": self.open_tokens, "open_docs": self.open_docs}

    @classmethod
    def from_json(cls, d: dict) -> ShardState:
        return cls(int(d["docs_done"]), list(d["shards"]), int(d["open_tokens"]), int(d["open_docs"]))


class ShardWriter:
    """Append documents (id arrays) to a split's shards."""

    def __init__(self, root: Path, split: str, dtype: np.dtype, state: ShardState | None = None,
                 shard_tokens: int = DEFAULT_SHARD_TOKENS) -> None:
        self.root, self.split, self.dtype = Path(root), split, np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.state = state or ShardState()
        self._open()

    def _name(self, n: int) -> tuple[str, str]:
        return f"{self.split}-{n:05d}.bin", f"{self.split}-{n:05d}.idx.npy"

    def _open(self) -> None:
        n = len(self.state.shards)
        self.bin_name, self.idx_name = self._name(n)
        path = self.root / self.bin_name
        mode = "r+b" if path.exists() else "wb"
        self._fh = open(path, mode)
        self._fh.truncate(self.state.open_tokens * self.dtype.itemsize)
        self._fh.seek(0, os.SEEK_END)
        idx_path = self.root / self.idx_name
        if self.state.open_docs and idx_path.exists():
            idx = np.load(idx_path, allow_pickle=False)[: self.state.open_docs]
            self._starts = idx[:, 0].tolist()
            self._lens = idx[:, 1].tolist()
        else:
            self._starts, self._lens = [], []
        self._tokens = self.state.open_tokens
        self._pending_docs = 0  # input documents consumed since the last checkpoint

    def add(self, ids: np.ndarray | None) -> None:
        """Write one document (None: the input document was dropped, still counted as done)."""
        self._pending_docs += 1
        if ids is None or len(ids) == 0:
            return
        if self._lens and self._tokens + len(ids) > self.shard_tokens:
            self._finish_shard()
        arr = np.asarray(ids, dtype=self.dtype)
        self._fh.write(arr.tobytes())
        self._starts.append(self._tokens)
        self._lens.append(len(arr))
        self._tokens += len(arr)

    def _write_index(self) -> None:
        idx = np.array([self._starts, self._lens], dtype=np.int64).T.reshape(-1, 2)
        tmp = self.root / (self.idx_name + ".tmp.npy")
        np.save(tmp, idx, allow_pickle=False)
        os.replace(tmp, self.root / self.idx_name)

    def _finish_shard(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._write_index()
        self.state.shards.append({"file": self.bin_name, "index": self.idx_name,
                                  "documents": len(self._lens), "tokens": self._tokens})
        self.state.open_tokens = self.state.open_docs = 0
        self._open()

    def checkpoint(self) -> ShardState:
        """Make everything added so far durable; returns the state to persist."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._write_index()
        self.state.open_tokens = self._tokens
        self.state.open_docs = len(self._lens)
        self.state.docs_done += self._pending_docs
        self._pending_docs = 0
        return self.state

    def close(self) -> ShardState:
        """Finish the last shard (an empty split keeps one empty shard) and return the state."""
        self.checkpoint()
        self._fh.close()
        self._write_index()
        self.state.shards.append({"file": self.bin_name, "index": self.idx_name,
                                  "documents": len(self._lens), "tokens": self._tokens})
        self.state.open_tokens = self.state.open_docs = 0
        return self.state
