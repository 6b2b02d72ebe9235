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
"""

from __future__ import annotations

from collections.abc import Callable

from hrm_lsp.validators.treesitter import bracket_depth, enclosing_function, first_unmatched_close


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
