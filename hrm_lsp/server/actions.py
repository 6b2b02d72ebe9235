"""Where the code actions apply, and the gate every edit passes before it is sent.

"Refine this function" applies inside a function declaration (found with tree-sitter,
through ``hrm_lsp.validators.treesitter``). "Generate from comment" applies on a Go doc
comment or a ``// TODO:`` comment whose function below has an empty body, or that has no
function below it at all. The gate: an edit is sent only if the edited file has no more
syntax errors than before, so a suggestion can never break a file that parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hrm_lsp.server.positions import LineIndex

_FUNC = re.compile(r"^func\b")
_EMPTY_BODY = re.compile(r"\{\s*\}\s*$")


@dataclass(frozen=True)
class CommentSite:
    """A comment block that asks for code: lines [first, last] (0-based, inclusive)."""

    first_line: int
    last_line: int
    insert_offset: int  # where generated code goes (after the comment, or in the empty body)
    replace_end: int  # end of the text to replace (== insert_offset when inserting)
    has_function: bool  # a `func` line with an empty body follows the comment


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("//")


def comment_site(text: str, offset: int) -> CommentSite | None:
    """The comment block at ``offset`` if code should be generated from it, else None."""
    idx = LineIndex(text)
    line = idx.position(offset, "utf-32").line
    if not _is_comment(idx.line_text(line)):
        return None
    first = line
    while first > 0 and _is_comment(idx.line_text(first - 1)):
        first -= 1
    last = line
    while last + 1 < idx.line_count and _is_comment(idx.line_text(last + 1)):
        last += 1
    block = [idx.line_text(i).lstrip()[2:].strip() for i in range(first, last + 1)]
    nxt = last + 1
    while nxt < idx.line_count and not idx.line_text(nxt).strip():
        nxt += 1
    following = idx.line_text(nxt) if nxt < idx.line_count else ""
    is_todo = any(b.upper().startswith("TODO") for b in block)
    if _FUNC.match(following):
        # A declaration follows: only an empty body (`{}` on the line, or `{` then `}`)
        # counts; a written function is what "Refine this function" is for.
        if _EMPTY_BODY.search(following):
            brace = idx.line_start(nxt) + following.rindex("{")
            return CommentSite(first, last, brace + 1, idx.line_start(nxt) + following.rindex("}"), True)
        if following.rstrip().endswith("{") and nxt + 1 < idx.line_count and idx.line_text(nxt + 1).strip() == "}":
            brace = idx.line_start(nxt) + following.rstrip().rindex("{")
            close = idx.line_start(nxt + 1) + idx.line_text(nxt + 1).index("}")
            return CommentSite(first, last, brace + 1, close, True)
        return None
    if following.strip() and not is_todo:
        return None  # a comment on something else (a type, a var): not a request for code
    end_of_comment = idx.line_end(last)
    return CommentSite(first, last, end_of_comment, end_of_comment, False)


def enclosing_function_span(text: str, offset: int) -> tuple[int, int] | None:
    """(start, end) ``str`` offsets of the function declaration around ``offset``."""
    from hrm_lsp.validators import treesitter

    node = treesitter.enclosing_function(text, offset)
    if node is None:
        return None
    return _span(node, text)


def _span(node: object, text: str) -> tuple[int, int] | None:
    """Offsets from whatever the tree-sitter helper returns (span object or tuple)."""
    for a, b in (("start", "end"), ("start_offset", "end_offset")):
        if hasattr(node, a) and hasattr(node, b):
            return int(getattr(node, a)), int(getattr(node, b))
    if isinstance(node, tuple) and len(node) >= 2:
        return int(node[0]), int(node[1])
    return None


def passes_gate(before: str, after: str) -> bool:
    """True when ``after`` has no more syntax errors than ``before`` (tree-sitter gate)."""
    from hrm_lsp.validators import syntax_errors

    return len(syntax_errors(after)) <= len(syntax_errors(before))


def context_window(text: str, offset: int, max_chars: int) -> tuple[str, int, int]:
    """Cut a huge document around the cursor: (text, offset in it, start in original).

    Three quarters of the budget go before the cursor (what the model conditions on most),
    cut at line boundaries so the model never sees half a line.
    """
    if len(text) <= max_chars:
        return text, offset, 0
    before = max_chars * 3 // 4
    lo = max(0, offset - before)
    hi = min(len(text), lo + max_chars)
    if lo > 0:
        nl = text.find("\n", lo, offset)
        lo = nl + 1 if nl != -1 else lo
    if hi < len(text):
        nl = text.rfind("\n", offset, hi)
        hi = nl + 1 if nl != -1 else hi
    return text[lo:hi], offset - lo, lo
