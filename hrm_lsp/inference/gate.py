"""Show nothing rather than junk: the last steps before a suggestion reaches the editor.

In order (each a small function, tested alone):

1. ``cut_suffix_repeat``: a completion whose last lines are the lines that already follow
   the cursor is cut before them (the model or index ran on into the suffix);
2. ``limit_lines``: multi-line text only where the cursor sits in an empty block or right
   after a comment that asks for code; elsewhere the first line;
3. ``withhold_reason``: nothing to insert; a line that repeats the line above or below; a
   document that no longer parses where the text went in (tree-sitter); a confidence under
   ``min_confidence``; code asked for in an empty block that is only comments. The reason
   is logged (debug) and returned with the completion.
"""

from __future__ import annotations

from hrm_lsp.validators import syntax_errors


def _line_at(text: str, offset: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return start, len(text) if end < 0 else end


def cut_suffix_repeat(completion: str, suffix: str) -> str:
    """Drop trailing lines of ``completion`` that the text after the cursor starts with."""
    lines = completion.split("\n")
    if len(lines) < 2:
        return completion
    after = [ln.strip() for ln in suffix.split("\n")[1:8] if ln.strip()]
    if not after:
        return completion
    # The longest tail of the completion (whole non-empty lines) equal to the suffix's start.
    for k in range(len(lines) - 1, 0, -1):
        tail = [ln.strip() for ln in lines[k:] if ln.strip()]
        if tail and tail == after[: len(tail)]:
            return "\n".join(lines[:k]).rstrip(" \t")
    return completion


def asks_for_code(text: str, offset: int) -> bool:
    """True in an empty block (only whitespace up to the closing brace) or on the line after
    a ``//`` comment."""
    line_start, _ = _line_at(text, offset)
    before = text[:line_start].rstrip("\n")
    prev = before[before.rfind("\n") + 1:].strip()
    if prev.startswith("//"):
        return True
    return prev.endswith("{") and text[offset:].lstrip(" \t\r\n").startswith("}")


def only_comments(completion: str) -> bool:
    """True when every non-blank line of ``completion`` is a ``//`` comment."""
    lines = [ln.strip() for ln in completion.split("\n") if ln.strip()]
    return bool(lines) and all(ln.startswith("//") for ln in lines)


def limit_lines(completion: str, text: str, offset: int) -> str:
    if "\n" not in completion.strip("\n") or asks_for_code(text, offset):
        return completion
    return completion.lstrip("\n").split("\n", 1)[0]


_last_parse: tuple[str, list] = ("", [])


def _errors_of(text: str) -> list:
    """``syntax_errors(text)``, remembered for the last text (a request's candidates are
    judged against the same document)."""
    global _last_parse
    last = _last_parse  # one read: other threads may replace it
    if last[0] is not text and last[0] != text:
        last = _last_parse = (text, syntax_errors(text))
    return last[1]


def withhold_reason(completion: str, text: str, offset: int, confidence: float | None,
                    min_confidence: float) -> str | None:
    """Why ``completion`` at ``offset`` should not be shown, or None."""
    if not completion.strip():
        return "empty"
    line_start, line_end = _line_at(text, offset)
    first = completion.lstrip("\n").split("\n", 1)[0]
    new_line = (text[line_start:offset] + first).strip() if not completion.startswith("\n") \
        else first.strip()
    prev_start, _ = _line_at(text, max(0, line_start - 1))
    above = text[prev_start:line_start - 1].strip() if line_start > 0 else ""
    below_start = line_end + 1
    below = text[below_start:_line_at(text, below_start)[1]].strip() if below_start <= len(text) else ""
    if new_line and new_line in (above, below) and len(new_line) > 1:
        return "repeats the line " + ("above" if new_line == above else "below")
    if confidence is not None and confidence < min_confidence:
        return f"confidence {confidence:.2f} < {min_confidence:.2f}"
    if "\n" in completion.strip("\n") and only_comments(completion) and asks_for_code(text, offset):
        return "only comments"
    spliced = text[:offset] + completion + text[offset:]
    lo_line = text.count("\n", 0, offset) + 1
    hi_line = lo_line + completion.count("\n") + 1

    def near(d, lo: int, hi: int) -> bool:  # error ranges can span many lines
        return d.line <= hi and (d.end_line or d.line) >= lo

    # An error the document had at the cursor already is not this suggestion's fault.
    before = {d.message for d in _errors_of(text) if near(d, lo_line, lo_line + 1)}
    for d in syntax_errors(spliced):
        if near(d, lo_line, hi_line) and d.message not in before:
            return f"does not parse: line {d.line}: {d.message}"
    return None
