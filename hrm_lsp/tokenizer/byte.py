"""Byte tokenizer (seed 000): UTF-8 bytes, a 4-bit index and an 8-bit rare-pair accumulator.

ids 0..255 are bytes (0 doubles as pad: Go source never contains NUL and the data pipeline
rejects files that do), ids 256.. are ``symbols.SPECIALS`` in order. The two per-position
features are defined in docs/tokenizers.md; in short:

* ``nibble[t]`` = ``id >> 4`` for byte ids 1..255, 16 for pad and specials (17 values);
* pair ``p[t] = (nibble[t-1], nibble[t])`` with ``nibble[-1] = 16`` at the start of the array;
* ``acc[t]`` = number of ``s`` in ``(t-W, t]`` whose pair is in the *rare* table, capped at 255.

The rare table is computed once on the training split (``NibblePairTable.fit``) and saved in
the tokenizer file, so training, MLX and inference derive identical numbers from ids alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hrm_lsp.tokenizer import symbols
from hrm_lsp.tokenizer.base import Tokenizer, TokenizerError

FORMAT = "hrm-lsp-byte-tokenizer"
VERSION = 1
NIBBLES = 17  # 16 high nibbles + one value shared by pad and every special
SPECIAL_NIBBLE = 16
DEFAULT_WINDOW = 256
DEFAULT_RARE_MASS = 0.01
ACC_MAX = 255


@dataclass(frozen=True)
class NibblePairTable:
    """Which of the 17x17 nibble pairs count as rare, and the accumulator window."""

    rare: tuple[int, ...]  # 289 entries, 0/1, index prev * 17 + cur
    window: int = DEFAULT_WINDOW
    rare_mass: float = DEFAULT_RARE_MASS
    counts: tuple[int, ...] = ()  # the training counts the table was cut from (provenance)

    def __post_init__(self) -> None:
        if len(self.rare) != NIBBLES * NIBBLES or any(v not in (0, 1) for v in self.rare):
            raise TokenizerError(f"nibble-pair table must hold {NIBBLES * NIBBLES} values of 0/1")
        if self.window < 1:
            raise TokenizerError(f"accumulator window must be >= 1, got {self.window}")

    @staticmethod
    def count_pairs(ids: np.ndarray) -> np.ndarray:
        """Counts of the 289 nibble pairs in one id sequence (pair at t=0 uses prev = 16)."""
        nib = nibbles(ids)
        prev = np.concatenate([[SPECIAL_NIBBLE], nib[:-1]]).astype(np.int64)
        return np.bincount(prev * NIBBLES + nib, minlength=NIBBLES * NIBBLES).astype(np.int64)

    @classmethod
    def fit(cls, counts: np.ndarray, rare_mass: float = DEFAULT_RARE_MASS,
            window: int = DEFAULT_WINDOW) -> NibblePairTable:
        """Rare = the least frequent pairs (ties by index) whose counts sum to <= rare_mass of all."""
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        if counts.shape != (NIBBLES * NIBBLES,):
            raise TokenizerError("pair counts must have 289 entries")
        budget = rare_mass * float(counts.sum())
        order = np.lexsort((np.arange(counts.size), counts))  # by count, then by index
        rare = np.zeros(counts.size, dtype=np.int64)
        used = 0
        for i in order:
            if used + counts[i] > budget:
                break
            used += int(counts[i])
            rare[i] = 1
        return cls(tuple(int(v) for v in rare), window, rare_mass, tuple(int(v) for v in counts))


def nibbles(ids: np.ndarray) -> np.ndarray:
    """4-bit index per position: high nibble of byte ids 1..255, 16 for pad and specials."""
    ids = np.asarray(ids)
    return np.where((ids > 0) & (ids < 256), ids >> 4, SPECIAL_NIBBLE).astype(np.uint8)


def accumulate(ids: np.ndarray, table: NibblePairTable) -> np.ndarray:
    """Rare-pair counts over the last ``table.window`` positions (inclusive), capped at 255."""
    nib = nibbles(ids).astype(np.int64)
    first = np.full(nib.shape[:-1] + (1,), SPECIAL_NIBBLE, dtype=np.int64)
    prev = np.concatenate([first, nib[..., :-1]], axis=-1)
    rare = np.asarray(table.rare, dtype=np.int32)[prev * NIBBLES + nib]  # [..., T]
    c = np.cumsum(rare, axis=-1, dtype=np.int32)
    w = table.window
    if nib.shape[-1] > w:
        c[..., w:] = c[..., w:] - c[..., :-w].copy()
    return np.minimum(c, ACC_MAX).astype(np.uint8)


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes + specials at 256.. + nibble/accumulator features."""

    kind = "byte"

    def __init__(self, table: NibblePairTable | None = None) -> None:
        self.table = table or NibblePairTable(tuple([0] * (NIBBLES * NIBBLES)))
        self._special_ids = {s: 256 + i for i, s in enumerate(symbols.SPECIALS)}
        self._special_ids[symbols.PAD] = 0
        self._names = {i: s for s, i in self._special_ids.items() if i >= 256}

    @property
    def vocab_size(self) -> int:
        return 256 + len(symbols.SPECIALS)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """Like ``encode`` but straight to a numpy array (fast path for the data pipeline)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        buf = bytearray()
        for i in ids:
            i = int(i)
            if 0 < i < 256:
                buf.append(i)
                continue
            if buf:
                out.append(buf.decode("utf-8", errors="replace"))
                buf.clear()
            if i >= 256:
                name = self._names.get(i)
                if name is None:
                    raise ValueError(f"id {i} is outside the byte vocabulary ({self.vocab_size})")
                out.append(name)
        if buf:
            out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def features(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        ids = np.asarray(ids)
        return {"nibble": nibbles(ids), "acc": accumulate(ids, self.table)}

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "kind": "byte",
            "specials": list(symbols.SPECIALS),
            "accumulator": {
                "window": self.table.window,
                "rare_mass": self.table.rare_mass,
                "rare": list(self.table.rare),
                "counts": list(self.table.counts),
            },
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> ByteTokenizer:
        """Read ``to_bytes()`` output; TokenizerError names what is wrong."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"byte tokenizer table is not valid JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TokenizerError(f"not a byte tokenizer table (format != {FORMAT!r})")
        if doc.get("version") != VERSION:
            raise TokenizerError(f"byte tokenizer table version {doc.get('version')} is not supported")
        if doc.get("specials") != list(symbols.SPECIALS):
            raise TokenizerError("byte tokenizer table was made with a different list of special symbols")
        acc = doc.get("accumulator")
        try:
            table = NibblePairTable(tuple(int(v) for v in acc["rare"]), int(acc["window"]),
                                    float(acc["rare_mass"]), tuple(int(v) for v in acc.get("counts", ())))
        except (TypeError, KeyError, ValueError) as e:
            raise TokenizerError(f"byte tokenizer table: bad accumulator section ({e})") from None
        return cls(table)
