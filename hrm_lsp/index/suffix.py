"""Unbounded-order longest match over token ids: a suffix array of the *reversed* corpus.

Design choices:
- The ∞-gram question is "what is the longest suffix of the context that occurs in the
  corpus, and which tokens follow its occurrences" (Liu et al. 2024, "Infini-gram"). Over
  the reversed corpus that suffix is a *prefix* of the reversed context, so each extra token
  of match only narrows one suffix-array range (two binary searches on one column), instead
  of a fresh binary search per candidate length.
- Layout: every document is stored as ``SEP`` followed by its tokens reversed. An occurrence
  starting at reversed position ``j`` is followed, in reading order, by the token at
  ``j - 1``; ``SEP`` there means the match ends its document and has no continuation (so the
  text before the cursor never "predicts" itself). Matches never cross documents: ``SEP``
  is a value no token has.
- Construction is libdivsufsort (``pydivsufsort``, MIT) over the big-endian bytes of the
  ids, keeping even offsets: byte order then equals token order. Arrays are plain ``.npy``
  files, memory-mapped when loaded from the cache (``store.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EXACT_CHECK = 8192  # ranges this small are checked occurrence by occurrence
MAX_SUPPORT = 4096  # at most this many occurrences are read for a next-token estimate
FEW = 16  # ranges this small finish by comparing slices
PEEK = 8  # occurrences looked at first when asking whether a range has a valid one
NARROW_READ = 512  # ranks a range is narrowed by reading at once (or sampled at)


class IndexError_(ValueError):
    """An index file or array is unusable."""


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype holding every id and the separator (its maximum value)."""
    return np.dtype(np.uint16) if vocab_size < np.iinfo(np.uint16).max else np.dtype(np.uint32)


@dataclass(frozen=True)
class Match:
    """The longest suffix of a context found in an index: ``length`` tokens, occurring at
    suffix-array ranks ``lo`` .. ``hi`` (exclusive)."""

    length: int
    lo: int
    hi: int

    @property
    def count(self) -> int:
        return self.hi - self.lo


class SuffixIndex:
    """Reversed-corpus suffix array over token ids (see the module docstring)."""

    def __init__(self, rev: np.ndarray, sa: np.ndarray, doc_starts: np.ndarray,
                 first: np.ndarray | None = None) -> None:
        self.rev = rev  # [N] reversed layout, SEP at each document start
        self.sa = sa  # [N] suffix-array ranks -> reversed positions
        self.doc_starts = doc_starts  # [D] position of each document's SEP, ascending
        self.sep = int(np.iinfo(rev.dtype).max)
        # first[t] .. first[t + 1]: the ranks whose suffix starts with token t.
        self.first = first if first is not None else _first_table(rev)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def build(cls, docs: Sequence[Sequence[int]], vocab_size: int) -> SuffixIndex:
        """Index ``docs`` (each a sequence of ids < ``vocab_size``)."""
        dt = token_dtype(vocab_size)
        sep = np.iinfo(dt).max
        lengths = [len(d) for d in docs]
        n = sum(lengths) + len(lengths)
        rev = np.empty(max(n, 1), dtype=dt)
        starts = np.empty(len(lengths), dtype=np.int64)
        pos = 0
        for i, d in enumerate(docs):
            starts[i] = pos
            rev[pos] = sep
            arr = np.asarray(d, dtype=np.int64)
            if arr.size and (arr.min() < 0 or arr.max() >= min(vocab_size, sep)):
                raise IndexError_(f"document {i} holds ids outside the vocabulary ({vocab_size})")
            rev[pos + 1: pos + 1 + len(arr)] = arr[::-1]
            pos += 1 + len(arr)
        if n == 0:
            rev[0] = sep
        sa = suffix_array(rev)
        return cls(rev, sa, starts)

    # -- queries -----------------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return int(len(self.rev) - len(self.doc_starts))

    @property
    def n_docs(self) -> int:
        return int(len(self.doc_starts))

    def doc_of(self, positions: np.ndarray) -> np.ndarray:
        """Document number of each reversed position."""
        return np.searchsorted(self.doc_starts, positions, side="right") - 1

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """The reversed tokens at ``positions`` (any shape), -1 past the corpus end: no
        token equals it, nor SEP, so a comparison with a context stops there."""
        n = len(self.rev)
        return np.where(positions < n, self.rev[np.minimum(positions, n - 1)].astype(np.int64), -1)

    def _column(self, ranks: np.ndarray, depth: int) -> np.ndarray:
        """The reversed token ``depth`` places into each ranked suffix (-1 past the end)."""
        return self._read(self.sa[ranks].astype(np.int64) + depth)

    def _narrow(self, lo: int, hi: int, depth: int, tok: int) -> tuple[int, int]:
        """Ranks in ``lo:hi`` (sharing ``depth`` tokens) whose next reversed token is ``tok``.
        The column is sorted over the range: a small range is read at once; a large one at
        ``NARROW_READ`` evenly spaced ranks first, then only between the two samples that
        bracket each bound (two small reads instead of a binary search in Python)."""
        if hi - lo <= NARROW_READ:
            col = self._column(np.arange(lo, hi), depth)
            return (lo + int(np.searchsorted(col, tok, side="left")),
                    lo + int(np.searchsorted(col, tok, side="right")))
        step = -(-(hi - lo) // NARROW_READ)
        at = np.arange(lo, hi, step)
        col = self._column(at, depth)

        def bound(side: str) -> int:
            i = int(np.searchsorted(col, tok, side=side))
            a = int(at[i - 1]) + 1 if i > 0 else lo  # samples before a: on the wrong side
            b = int(at[i]) if i < len(at) else hi  # sample b and later: past the bound
            return a + int(np.searchsorted(self._column(np.arange(a, b), depth), tok, side=side))

        return bound("left"), bound("right")

    def _valid_positions(self, lo: int, hi: int, exclude_doc: int | None) -> np.ndarray:
        """Reversed positions in ``lo:hi`` that have a continuation and are not excluded."""
        pos = self.sa[lo:hi].astype(np.int64)
        ok = self.rev[pos - 1] != self.sep
        if exclude_doc is not None:
            ok &= self.doc_of(pos) != exclude_doc
        return pos[ok]

    def _has_valid(self, lo: int, hi: int, exclude_doc: int | None) -> bool:
        if hi - lo > EXACT_CHECK:
            return True  # more occurrences than one excluded document or the document ends hold
        if hi - lo > PEEK and self._valid_positions(lo, lo + PEEK, exclude_doc).size:
            return True  # nearly every range has a valid one among its first few
        return self._valid_positions(lo, hi, exclude_doc).size > 0

    def longest_match(self, context: Sequence[int], max_len: int = 256,
                      exclude_doc: int | None = None) -> Match:
        """The longest suffix of ``context`` (at most ``max_len`` tokens) with at least one
        occurrence that has a continuation (outside ``exclude_doc``). Length 0: no token of
        the context's end occurs; the range is then the whole index."""
        best = Match(0, 0, len(self.sa))
        if not len(context):
            return best
        last = int(context[-1])
        if not 0 <= last < len(self.first) - 1:
            return best
        lo, hi = int(self.first[last]), int(self.first[last + 1])
        depth = 1
        limit = min(max_len, len(context))
        while lo < hi and self._has_valid(lo, hi, exclude_doc):
            best = Match(depth, lo, hi)
            if depth >= limit:
                break
            if hi - lo <= FEW:
                return self._finish(lo, hi, depth, context, limit, exclude_doc) or best
            tok = int(context[-1 - depth])
            lo, hi = self._narrow(lo, hi, depth, tok)
            depth += 1
        return best

    def _finish(self, lo: int, hi: int, depth: int, context: Sequence[int], limit: int,
                exclude_doc: int | None) -> Match | None:
        """For a range of a few occurrences: extend each one to its full match at once
        (one comparison of slices each) instead of narrowing token by token."""
        pat = np.asarray(context[len(context) - limit: len(context) - depth][::-1], dtype=np.int64)
        # One gather for every occurrence: the reversed tokens after its first ``depth``.
        at = self.sa[lo:hi].astype(np.int64)[:, None] + depth + np.arange(len(pat))[None, :]
        neq = self._read(at) != pat[None, :]
        lens = (depth + np.where(neq.any(axis=1), neq.argmax(axis=1), len(pat))).tolist()
        valid = self._valid_positions(lo, hi, exclude_doc)
        ok = set(valid.tolist())
        best = max((n_ for r, n_ in zip(range(lo, hi), lens, strict=True) if int(self.sa[r]) in ok), default=0)
        if best == 0:
            return None
        # Ranks sharing the best length are contiguous (the range is sorted).
        ranks = [r for r, n_ in zip(range(lo, hi), lens, strict=True) if n_ >= best]
        return Match(best, ranks[0], ranks[-1] + 1)

    def next_counts(self, m: Match, exclude_doc: int | None = None,
                    max_support: int = MAX_SUPPORT) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, counts) of what follows the occurrences of ``m`` (sampled evenly
        when there are more than ``max_support``)."""
        lo, hi = m.lo, m.hi
        if hi - lo > max_support:
            ranks = np.linspace(lo, hi - 1, max_support).astype(np.int64)
            pos = self.sa[ranks].astype(np.int64)
            pos = pos[self.rev[pos - 1] != self.sep]
            if exclude_doc is not None:
                pos = pos[self.doc_of(pos) != exclude_doc]
        else:
            pos = self._valid_positions(lo, hi, exclude_doc)
        if pos.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        toks, counts = np.unique(self.rev[pos - 1].astype(np.int64), return_counts=True)
        return toks, counts


def suffix_array(rev: np.ndarray) -> np.ndarray:
    """Suffix array of an unsigned id array (token order), as int32 when it fits."""
    import pydivsufsort

    if len(rev) == 0:
        return np.zeros(0, dtype=np.int32)
    width = rev.dtype.itemsize
    raw = np.ascontiguousarray(rev.astype(rev.dtype.newbyteorder(">"))).view(np.uint8)
    sa = pydivsufsort.divsufsort(raw)
    sa = sa[sa % width == 0] // width
    return sa.astype(np.int32 if len(rev) < np.iinfo(np.int32).max else np.int64)


def _first_table(rev: np.ndarray) -> np.ndarray:
    """Start rank of each first token (suffixes sort by their first token first)."""
    sep = int(np.iinfo(rev.dtype).max)
    body = rev[rev != sep]
    top = int(body.max()) + 2 if body.size else 2
    counts = np.bincount(body.astype(np.int64), minlength=top)
    first = np.zeros(top + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    return first
