"""Stop rules for generated code: end of line, end of the enclosing block.

Decoding asks ``StopRule.check(text)`` after every token with the code generated so far;
the rule answers where to cut (or None to go on). Other stops (end of text, token budget,
time budget, cancellation) live in the decoding loop.

Multi-line mode tracks brace depth with a small Go lexer (strings, runes, raw strings and
comments do not count). The completion ends when

- a ``}`` closes the block the cursor is in (depth below zero): the cut is just before that
  brace when the text after the cursor already closes the block, and just after it when
  it does not; tree-sitter (``syntax_errors``) breaks the tie when both could be right; or
- a block opened by the completion itself closes again at depth zero and the line ends
  (a whole declaration was written at the cursor's level).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Lexer:
    """Incremental brace counter over Go source, skipping strings and comments."""

    depth: int = 0
    min_depth: int = 0
    state: str = "code"  # code | line_comment | block_comment | string | raw | rune
    escape: bool = False
    opened: bool = False  # a '{' was seen at depth 0

    def feed(self, ch: str) -> str | None:
        """Consume one character; return "close" when a brace closes below zero, "top" when a
        block opened by the completion closes back at depth zero."""
        st = self.state
        if st == "line_comment":
            if ch == "\n":
                self.state = "code"
            return None
        if st == "block_comment":
            if ch == "/" and self._prev == "*":
                self.state = "code"
                self._prev = ""
                return None
            self._prev = ch
            return None
        if st in ("string", "rune"):
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == ('"' if st == "string" else "'") or ch == "\n":
                self.state = "code"
            return None
        if st == "raw":
            if ch == "`":
                self.state = "code"
            return None
        # code
        if ch == "/" and self._prev == "/":
            self.state = "line_comment"
            self._prev = ""
            return None
        if ch == "*" and self._prev == "/":
            self.state = "block_comment"
            self._prev = ""
            return None
        self._prev = ch
        if ch == '"':
            self.state = "string"
        elif ch == "'":
            self.state = "rune"
        elif ch == "`":
            self.state = "raw"
        elif ch in "{([":
            if ch == "{" and self.depth == 0:
                self.opened = True
            self.depth += 1
        elif ch in "})]":
            self.depth -= 1
            if self.depth < 0:
                return "close"
            if ch == "}" and self.depth == 0 and self.opened:
                return "top"
        return None

    _prev: str = ""


class StopRule:
    """Decides where generated code ends. ``check(text)`` returns a cut index or None."""

    def __init__(self, multiline: bool, prefix: str = "", suffix: str = "",
                 syntax_errors=None) -> None:
        self.multiline = multiline
        self.prefix = prefix
        self.suffix = suffix
        self._syntax_errors = syntax_errors
        self._lexer = _Lexer()
        self._seen = 0
        self._pending_top: int | None = None

    def check(self, text: str) -> int | None:
        """Return the length of ``text`` to keep when generation should stop, else None."""
        if not self.multiline:
            nl = text.find("\n")
            if nl == 0 and not self.prefix[self.prefix.rfind("\n") + 1:].strip():
                # At the start of an empty line a leading newline is not the answer: keep going
                # only if the model writes more on the next line.
                nl = text.find("\n", 1)
            return nl if nl >= 0 else None
        while self._seen < len(text):
            i = self._seen
            ch = text[i]
            self._seen += 1
            if self._pending_top is not None and ch == "\n":
                return i
            event = self._lexer.feed(ch)
            if event == "close":
                return self._cut_at_close(text, i)
            if event == "top":
                self._pending_top = i
        return None

    def finish(self, text: str) -> str:
        """Trim what generation ended with (no trailing whitespace-only line)."""
        if not self.multiline:
            return text.split("\n", 1)[0] if "\n" in text.lstrip("\n") else text.rstrip("\n")
        return text.rstrip(" \t")

    def _cut_at_close(self, text: str, i: int) -> int:
        # Text before the closing brace: drop the brace's own indentation, and the newline
        # too when the text after the cursor starts a new line itself.
        before = text[:i]
        if self.suffix.lstrip(" \t").startswith("\n"):
            keep_before = len(before.rstrip())
        else:
            keep_before = len(before.rstrip(" \t"))
        keep_after = i + 1
        suffix_closes = self.suffix.lstrip().startswith("}")
        if self._syntax_errors is not None:
            doc_b = self.prefix + text[:keep_before] + self.suffix
            doc_a = self.prefix + text[:keep_after] + self.suffix
            eb = len(self._syntax_errors(doc_b))
            ea = len(self._syntax_errors(doc_a))
            if eb != ea:
                return keep_before if eb < ea else keep_after
        return keep_before if suffix_closes else keep_after
