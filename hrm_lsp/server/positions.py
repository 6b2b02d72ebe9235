"""The one place for LSP position encoding: (line, character) <-> Python ``str`` offsets.

LSP positions count ``character`` in the negotiated encoding's code units (UTF-16 by
default, UTF-8 or UTF-32 when the client offers them) and lines are split on ``\\n``,
``\\r\\n`` and ``\\r`` only. Python strings index code points, and ``str.splitlines``
also splits on form feeds and U+2028, so every conversion goes through ``LineIndex``.

Client input is clamped, never rejected: negative values become 0, a character past the
end of its line lands on the line's end (before its terminator), a line past the end of
the document lands at the document's end, and a position inside a surrogate pair or a
UTF-8 sequence rounds down to the start of that character.

Validator diagnostics (1-based line, column in code points) convert here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

UTF8 = "utf-8"
UTF16 = "utf-16"
UTF32 = "utf-32"
ENCODINGS = (UTF8, UTF16, UTF32)

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Pos:
    """A position in client units: 0-based line and character."""

    line: int
    character: int


def choose_encoding(offered: list[str] | tuple[str, ...] | None) -> str:
    """The encoding to use given the client's ``general.positionEncodings`` (LSP 3.17).

    UTF-16 is mandatory for every client, so it is the answer when the client says nothing.
    Otherwise take the client's first preference that we support.
    """
    for enc in offered or ():
        if str(enc).lower() in ENCODINGS:
            return str(enc).lower()
    return UTF16


def _units(text: str, encoding: str) -> int:
    """Length of ``text`` in the encoding's code units."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF16:
        return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)
    return len(text.encode("utf-8", "surrogatepass"))


def _char_index(line: str, units: int, encoding: str) -> int:
    """Code-point index in ``line`` reached after ``units`` code units (clamped, rounds down)."""
    if units <= 0:
        return 0
    if encoding == UTF32 or line.isascii():
        return min(units, len(line))
    count = 0
    for i, ch in enumerate(line):
        o = ord(ch)
        if encoding == UTF16:
            width = 2 if o > 0xFFFF else 1
        else:
            width = 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4
        if count + width > units:
            return i  # inside this character: round down to its start
        count += width
        if count == units:
            return i + 1
    return len(line)


class LineIndex:
    """Line starts of one text, for O(log n) conversions in both directions."""

    __slots__ = ("text", "_starts", "_ends")

    def __init__(self, text: str, _lines: tuple[np.ndarray, np.ndarray] | None = None):
        self.text = text
        if _lines is not None:
            starts, ends = _lines
        elif "\r" not in text:  # the common case: line lengths at C speed
            lengths = np.fromiter(map(len, text.split("\n")), dtype=np.int64)
            starts = np.zeros(len(lengths), dtype=np.int64)
            np.cumsum(lengths[:-1] + 1, out=starts[1:])
            ends = starts + lengths
        else:
            st, en = _scan(text, 0, len(text))
            en.append(len(text))
            starts, ends = np.array(st, dtype=np.int64), np.array(en, dtype=np.int64)
        # Line starts and content ends (before each terminator) as int64 arrays: an edit
        # shifts the lines after it with one vectorised add (``replace``).
        self._starts: np.ndarray = starts
        self._ends: np.ndarray = ends

    @property
    def starts(self) -> list[int]:
        """Start offset of every line (a copy; ``line_start`` for one)."""
        return self._starts.tolist()

    @property
    def ends(self) -> list[int]:
        """End of every line's content, before its terminator (a copy; ``line_end`` for one)."""
        return self._ends.tolist()

    def line_start(self, line: int) -> int:
        """``str`` offset where ``line`` starts."""
        return int(self._starts[line])

    def line_end(self, line: int) -> int:
        """``str`` offset where ``line``'s content ends (before its terminator)."""
        return int(self._ends[line])

    def replace(self, start: int, end: int, new: str) -> LineIndex:
        """The index of ``text[:start] + new + text[end:]``, rescanning only the lines the
        edit touches (and one on each side, where a CR and an LF may join or part); the
        lines after it are shifted in one vectorised step, so typing in a large document
        does not rebuild its index."""
        text, starts, ends = self.text, self._starts, self._ends
        start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
        if end < start:
            start, end = end, start
        new_text = text[:start] + new + text[end:]
        delta = len(new) - (end - start)
        n = len(starts)
        i0 = max(int(np.searchsorted(starts, start, side="right")) - 2, 0)
        i1 = min(int(np.searchsorted(starts, end, side="right")), n - 1)  # one line past
        s = int(starts[i0])
        if i1 + 1 < n:  # the region ends where line i1 + 1 starts (after a terminator)
            e = int(starts[i1 + 1]) + delta
            mid_starts, mid_ends = _scan(new_text, s, e)
            mid_starts.pop()  # == e: the shifted start of line i1 + 1
            tail_starts, tail_ends = starts[i1 + 1:] + delta, ends[i1 + 1:] + delta
        else:  # the region runs to the end of the text
            mid_starts, mid_ends = _scan(new_text, s, len(new_text))
            mid_ends.append(len(new_text))
            tail_starts = tail_ends = starts[:0]
        return LineIndex(new_text, (
            np.concatenate((starts[:i0], np.array(mid_starts, dtype=np.int64), tail_starts)),
            np.concatenate((ends[:i0], np.array(mid_ends, dtype=np.int64), tail_ends))))

    @property
    def line_count(self) -> int:
        """Number of lines (a trailing newline starts a last, empty line)."""
        return len(self._starts)

    def line_text(self, line: int) -> str:
        """Content of ``line`` without its terminator ('' when out of range)."""
        if line < 0 or line >= len(self._starts):
            return ""
        return self.text[int(self._starts[line]) : int(self._ends[line])]

    def offset(self, line: int, character: int, encoding: str = UTF16) -> int:
        """``str`` offset of an LSP position, clamped into the text."""
        if line < 0:
            return 0
        if line >= len(self._starts):
            return len(self.text)
        start, end = int(self._starts[line]), int(self._ends[line])
        return start + _char_index(self.text[start:end], character, encoding)

    def position(self, offset: int, encoding: str = UTF16) -> Pos:
        """LSP position of a ``str`` offset, clamped into the text."""
        offset = max(0, min(int(offset), len(self.text)))
        line = int(np.searchsorted(self._starts, offset, side="right")) - 1
        start = int(self._starts[line])
        offset = min(offset, int(self._ends[line]))  # inside a \r\n terminator -> end of line
        return Pos(line, _units(self.text[start:offset], encoding))

    def offset_of_codepoint(self, line1: int, column1: int) -> int:
        """``str`` offset of a validator position (1-based line, 1-based code-point column)."""
        line = max(0, min(line1 - 1, len(self._starts) - 1))
        start, end = int(self._starts[line]), int(self._ends[line])
        return min(start + max(0, column1 - 1), end)


def _scan(text: str, start: int, end: int) -> tuple[list[int], list[int]]:
    """Line starts (from ``start``) and content ends of ``text[start:end]``'s terminators."""
    starts, ends = [start], []
    for m in _EOL.finditer(text, start, end):
        ends.append(m.start())
        starts.append(m.end())
    return starts, ends


def offset_at(text: str, line: int, character: int, encoding: str = UTF16) -> int:
    """One-off conversion of an LSP position into a ``str`` offset (see ``LineIndex``)."""
    return LineIndex(text).offset(line, character, encoding)


def position_at(text: str, offset: int, encoding: str = UTF16) -> Pos:
    """One-off conversion of a ``str`` offset into an LSP position (see ``LineIndex``)."""
    return LineIndex(text).position(offset, encoding)
