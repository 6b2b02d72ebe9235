"""Stop rules for generated code: end of line, end of the enclosing block.

Decoding asks ``StopRule.check(text)`` after every token with the code generated so far;
the rule answers how much of it to keep (or None to go on). Other stops (end of text, token
budget, time budget, cancellation) live in the decoding loop.

Multi-line mode uses the validators' tree-sitter helpers (one place for Go bracket
scanning):

- inside a block (tree-sitter finds the cursor inside a function body, or brackets are open
  before it): the completion ends where a closing brace closes that block
  (``first_unmatched_close``). The brace itself is dropped when the text after the cursor
  already closes the block and kept when it does not; when both are plausible the one with
  fewer syntax errors in the spliced document wins.
- at top level: the completion ends at the end of the line where its first declaration's
  brackets balance again (one declaration per completion).
- anywhere (``repeat_cut``): where the completion starts repeating itself -- the last 1-4
  lines written again right after themselves, or a line whose end is one short piece of
  code four times over (``.next.next.next.next``). Small models fall into such loops under
  greedy decoding; the repeat is dropped and ``StopRule.reason`` says "repeat".

``StopRule.settle`` then makes a multi-line completion that was cut anywhere (token, time
or context budget, a repeat) whole Go: the longest start of it, cut at a line end, with the
blocks it left open closed at their own indentation, that adds no syntax error to the
document.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from hrm_lsp.validators.treesitter import (
    bracket_depth,
    enclosing_function,
    first_unmatched_close,
    unclosed_brackets,
)

REPEAT_LINES = 4  # a run of up to this many lines written twice in a row is a loop
REPEAT_UNIT = (2, 24)  # characters of a piece repeated within one line
REPEAT_TIMES = 4  # ... this many times in a row at the line's end
SETTLE_TRIES = 40  # at most this many cuts are parsed by StopRule.settle,
SETTLE_SECONDS = 0.25  # ... and for at most this long (a long document parses slower)


def _is_code(line: str) -> bool:
    return any(c.isalnum() for c in line)


def repeat_cut(text: str) -> int | None:
    """Where ``text`` starts repeating itself (the index to cut at), or None.

    - whole lines: the last ``k`` complete lines (1 <= k <= ``REPEAT_LINES``, blanks and
      lone brackets aside) equal the ``k`` before them: cut before the second copy;
    - within the line being written: its end is a piece of ``REPEAT_UNIT`` characters, with
      a letter or digit and a punctuation mark in it, ``REPEAT_TIMES`` times over (12
      characters at least): cut the line off.
    """
    line_start = text.rfind("\n") + 1
    cur = text[line_start:]
    lo, hi = REPEAT_UNIT
    for u in range(lo, min(hi, len(cur) // REPEAT_TIMES) + 1):
        unit = cur[-u:]
        times = 1
        while cur.endswith(unit * (times + 1)):
            times += 1
        if times >= REPEAT_TIMES and times * u >= 12 and any(c.isalnum() for c in unit) and \
                any(not c.isalnum() and not c.isspace() for c in unit):
            return line_start
    if line_start == 0:
        return None
    done = text[:line_start - 1].split("\n")  # complete lines
    starts = [0]
    for ln in done[:-1]:
        starts.append(starts[-1] + len(ln) + 1)
    for k in range(1, REPEAT_LINES + 1):
        if len(done) < 2 * k:
            break
        last = [ln.strip() for ln in done[-k:]]
        if last == [ln.strip() for ln in done[-2 * k:-k]] and any(map(_is_code, last)):
            return starts[len(done) - k]
    return None


def close_blocks(text: str) -> str | None:
    """``text`` with the ``{`` blocks it left open closed, each ``}`` on its own line at the
    indentation of the line that opened it; None when an open ``(`` or ``[`` (or a stray
    closing bracket) leaves no safe way to close it."""
    stack = unclosed_brackets(text)
    if stack is None or any(c != "{" for _, c in stack):
        return None
    out = text
    for i, _ in reversed(stack):
        line = text[text.rfind("\n", 0, i) + 1:]
        indent = re.match(r"[ \t]*", line).group()
        out += ("" if out.endswith("\n") else "\n") + indent + "}\n"
    return out


def cursor_in_block(text: str, offset: int) -> bool:
    """True when ``offset`` is inside a function body (tree-sitter) or other open brackets."""
    fn = enclosing_function(text, offset)
    if fn is not None and fn.body_start is not None and fn.body_end is not None:
        if fn.body_start < offset < fn.body_end:
            return True
    # Not inside a parsed body: an unfinished declaration still has its brackets open.
    window = text[max(0, offset - 4000):offset]
    return bracket_depth(window) > 0


class StopRule:
    """Decides where generated code ends. ``check(text)`` returns a cut index or None."""

    def __init__(self, multiline: bool, prefix: str = "", suffix: str = "",
                 in_block: bool = False,
                 syntax_errors: Callable[[str], list] | None = None) -> None:
        self.multiline = multiline
        self.prefix = prefix
        self.suffix = suffix
        self.in_block = in_block
        self._syntax_errors = syntax_errors
        self._checked = 0
        self.reason: str | None = None  # "repeat" when ``repeat_cut`` ended the completion
        # Single-line at the start of an empty line: a leading newline is not the answer.
        line = prefix[prefix.rfind("\n") + 1:]
        self._skip_leading_nl = not line.strip()

    def check(self, text: str) -> int | None:
        """Return the length of ``text`` to keep when generation should stop, else None."""
        new = text[self._checked:]
        start = self._checked
        self._checked = len(text)
        if not self.multiline:
            nl = text.find("\n", 1 if self._skip_leading_nl and text.startswith("\n") else 0)
            return nl if nl >= 0 else None
        cut = repeat_cut(text)
        if cut is not None:
            self.reason = "repeat"
            return cut
        if self.in_block:
            if not any(c in new for c in "})]"):
                return None
            i = first_unmatched_close(text)
            return None if i is None else self._cut_at_close(text, i)
        # Top level: stop at the first newline after the brackets opened by the completion
        # have all closed again.
        if "\n" not in new:
            return None
        for j in range(start, len(text)):
            if text[j] == "\n" and "{" in text[:j] and bracket_depth(text[:j]) <= 0:
                return j
        return None

    def _cut_at_close(self, text: str, i: int) -> int:
        # Before the closing brace: drop the brace's own indentation, and the newline too when
        # the text after the cursor starts a new line itself.
        before = text[:i]
        if self.suffix.lstrip(" \t").startswith("\n"):
            keep_before = len(before.rstrip())
        else:
            keep_before = len(before.rstrip(" \t"))
        keep_after = i + 1
        if self._syntax_errors is not None:
            eb = len(self._syntax_errors(self.prefix + text[:keep_before] + self.suffix))
            ea = len(self._syntax_errors(self.prefix + text[:keep_after] + self.suffix))
            if eb != ea:
                return keep_before if eb < ea else keep_after
        return keep_before if self.suffix.lstrip().startswith("}") else keep_after

    def settle(self, text: str) -> str:
        """The longest start of ``text`` cut at a line end (the whole text first), with its open
        blocks closed (``close_blocks``), whose splice adds no syntax error to the document;
        ``text`` itself when none does (the gate then withholds it) or without a parser."""
        if self._syntax_errors is None or not text.strip():
            return text
        base = len(self._syntax_errors(self.prefix + self.suffix))

        def fits(t: str) -> bool:
            return len(self._syntax_errors(self.prefix + t + self.suffix)) <= base

        if fits(text):
            return text
        cuts = [text] + [text[:i + 1] for i in range(len(text) - 1, -1, -1) if text[i] == "\n"]
        tries, t0 = 0, time.monotonic()
        for t in cuts:
            if not t.strip():
                break
            closed = close_blocks(t)
            if closed is None:
                continue
            tries += 1
            if fits(closed):
                return closed
            if tries >= SETTLE_TRIES or time.monotonic() - t0 > SETTLE_SECONDS:
                break
        return text
