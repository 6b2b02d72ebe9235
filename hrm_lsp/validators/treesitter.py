"""Stage 1, syntax: tree-sitter-go, plus structural helpers other parts need.

- :func:`syntax_errors` turns ERROR and MISSING nodes into diagnostics (microseconds, no Go).
- :func:`enclosing_function` finds the top-level func/method around a position, with its
  doc comment and body ranges (the server's "Refine this function", inference's stop rules).
- :func:`is_complete_block` and :func:`first_unmatched_close` are the cheap checks the
  multi-line completion stop rule uses.

Offsets in this module's API are Python ``str`` indices (code points), like every offset in
hrm-lsp; byte offsets are given alongside where tree-sitter works in bytes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import tree_sitter
import tree_sitter_go

from hrm_lsp.validators.types import Diagnostic, SourceText, encode_source

GO_LANGUAGE = tree_sitter.Language(tree_sitter_go.language())
MAX_SYNTAX_DIAGNOSTICS = 50

# tree_sitter.Parser is not safe to share between threads; one per thread is cheap.
_local = threading.local()


def _parser() -> tree_sitter.Parser:
    p = getattr(_local, "parser", None)
    if p is None:
        p = _local.parser = tree_sitter.Parser(GO_LANGUAGE)
    return p


def parse(text: str | bytes) -> tree_sitter.Tree:
    """Parse Go source (str, or UTF-8 bytes) into a tree-sitter tree."""
    data = text if isinstance(text, bytes) else encode_source(text)
    return _parser().parse(data)


def _describe_error(node: tree_sitter.Node) -> str:
    if node.is_missing:
        return f"syntax error: missing {node.type!r}"
    # The first leaf inside the ERROR node is the token the grammar could not place.
    leaf = node
    while leaf.child_count:
        leaf = leaf.children[0]
    tok = (leaf.text or b"").decode("utf-8", errors="replace").strip()
    if not tok:
        return "syntax error"
    if len(tok) > 30:
        tok = tok[:30] + "…"
    return f"syntax error: unexpected {tok!r}"


def syntax_errors(text: str, *, limit: int = MAX_SYNTAX_DIAGNOSTICS) -> list[Diagnostic]:
    """ERROR/MISSING nodes of the tree-sitter parse as ``syntax`` diagnostics (outermost only)."""
    tree = parse(text)
    if not tree.root_node.has_error:
        return []
    src = SourceText(text)
    found: list[Diagnostic] = []
    stack = [tree.root_node]
    while stack and len(found) < limit:
        node = stack.pop()
        if node.is_error or node.is_missing:
            (r0, c0), (r1, c1) = node.start_point, node.end_point
            line, col = r0 + 1, src.char_column(r0 + 1, c0 + 1)
            end_line, end_col = r1 + 1, src.char_column(r1 + 1, c1 + 1)
            if (end_line, end_col) <= (line, col):  # zero-width MISSING: mark one character
                end_line, end_col = line, col + (1 if col < src.line_end_column(line) else 0)
            found.append(Diagnostic(line, col, end_line, end_col, "error", _describe_error(node), "syntax"))
            continue
        if node.has_error:
            stack.extend(reversed(node.children))
    found.sort(key=lambda d: (d.line, d.column))
    return found


# --- functions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FunctionSpan:
    """A top-level ``func`` or method declaration. Offsets are str indices, end exclusive."""

    name: str
    kind: str  # "function" | "method"
    receiver: str | None  # receiver type text for methods, e.g. "*Server"
    start: int  # the ``func`` keyword
    end: int
    body_start: int | None  # the ``{`` of the body (None for declarations without a body)
    body_end: int | None  # just past the closing ``}``
    doc_start: int | None  # first line of the doc comment block directly above, if any
    doc: str  # doc comment text without ``//`` markers ("" when none)
    start_byte: int
    end_byte: int
    start_line: int  # 1-based
    end_line: int  # 1-based, line of the last character

    @property
    def signature_end(self) -> int:
        """End of the signature (the body's ``{``, or the declaration's end)."""
        return self.body_start if self.body_start is not None else self.end


class ByteMap:
    """Byte offset -> str index for one text (linear-time, built lazily)."""

    def __init__(self, text: str, data: bytes):
        self.text, self.data = text, data
        self._ascii = len(text) == len(data)

    def to_char(self, b: int) -> int:
        if self._ascii:
            return b
        return len(self.data[:b].decode("utf-8", errors="ignore"))

    def to_byte(self, c: int) -> int:
        if self._ascii:
            return c
        return len(self.text[:c].encode("utf-8"))


def _doc_comment(node: tree_sitter.Node, data: bytes) -> tuple[tree_sitter.Node | None, str]:
    """Comment lines directly above ``node`` with no blank line between (Go's doc rule)."""
    first = None
    lines: list[str] = []
    prev = node.prev_sibling
    expect_row = node.start_point[0] - 1
    while prev is not None and prev.type == "comment" and prev.end_point[0] == expect_row:
        first = prev
        lines.append(data[prev.start_byte:prev.end_byte].decode("utf-8", errors="replace"))
        expect_row = prev.start_point[0] - 1
        prev = prev.prev_sibling
    lines.reverse()
    doc = []
    for c in lines:
        if c.startswith("//"):
            doc.append(c[2:].removeprefix(" "))
        elif c.startswith("/*"):
            doc.append(c[2:-2].strip())
    return first, "\n".join(doc)


def _function_span(node: tree_sitter.Node, text: str, data: bytes, bm: ByteMap) -> FunctionSpan:
    name_node = node.child_by_field_name("name")
    name = data[name_node.start_byte:name_node.end_byte].decode("utf-8") if name_node else ""
    receiver = None
    kind = "function"
    if node.type == "method_declaration":
        kind = "method"
        recv = node.child_by_field_name("receiver")
        if recv is not None:
            for p in recv.named_children:
                t = p.child_by_field_name("type")
                if t is not None:
                    receiver = data[t.start_byte:t.end_byte].decode("utf-8")
                    break
    body = node.child_by_field_name("body")
    doc_node, doc = _doc_comment(node, data)
    return FunctionSpan(
        name=name,
        kind=kind,
        receiver=receiver,
        start=bm.to_char(node.start_byte),
        end=bm.to_char(node.end_byte),
        body_start=bm.to_char(body.start_byte) if body is not None else None,
        body_end=bm.to_char(body.end_byte) if body is not None else None,
        doc_start=bm.to_char(doc_node.start_byte) if doc_node is not None else None,
        doc=doc,
        start_byte=node.start_byte,
        end_byte=node.end_byte,
        start_line=node.start_point[0] + 1,
        end_line=node.end_point[0] + 1,
    )


FUNC_TYPES = ("function_declaration", "method_declaration")  # top-level functions' node types


def functions(text: str) -> list[FunctionSpan]:
    """Every top-level function and method declaration, in source order."""
    data = encode_source(text)
    tree = parse(data)
    bm = ByteMap(text, data)
    return [_function_span(n, text, data, bm) for n in tree.root_node.children if n.type in FUNC_TYPES]


def enclosing_function(text: str, offset: int) -> FunctionSpan | None:
    """The top-level func/method whose declaration (or doc comment) contains ``offset``.

    ``offset`` is a str index; a cursor right after the closing ``}`` still counts as inside.
    Function literals belong to the declaration around them. None when outside any function.
    """
    data = encode_source(text)
    tree = parse(data)
    bm = ByteMap(text, data)
    b = bm.to_byte(max(0, min(offset, len(text))))
    for node in tree.root_node.children:
        if node.type not in FUNC_TYPES:
            continue
        span_start = node.start_byte
        doc_node, _ = _doc_comment(node, data)
        if doc_node is not None:
            span_start = doc_node.start_byte
        if span_start <= b <= node.end_byte:
            return _function_span(node, text, data, bm)
    return None


# --- stop-rule helpers -----------------------------------------------------------------

_OPEN = {"{": "}", "(": ")", "[": "]"}
_CLOSE = {v: k for k, v in _OPEN.items()}


def _scan_brackets(text: str):
    """Yield (index, char) for every bracket outside strings, runes and comments."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c == "`":
            j = text.find("`", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c in _OPEN or c in _CLOSE:
            yield i, c
        i += 1


def first_unmatched_close(text: str) -> int | None:
    """Index of the first closing bracket in ``text`` that closes a block opened *before*
    ``text`` (depth goes below zero), ignoring strings and comments; None if there is none.

    Inference stops a multi-line completion there: the model has closed the cursor's block.
    """
    depth = 0
    for i, c in _scan_brackets(text):
        if c in _OPEN:
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                return i
    return None


def unclosed_brackets(text: str) -> list[tuple[int, str]] | None:
    """(index, char) of the brackets ``text`` opens and leaves open, outermost first, ignoring
    strings and comments; None when ``text`` closes a bracket it did not open (or closes one
    with the wrong kind)."""
    stack: list[tuple[int, str]] = []
    for i, c in _scan_brackets(text):
        if c in _OPEN:
            stack.append((i, c))
        elif not stack or stack[-1][1] != _CLOSE[c]:
            return None
        else:
            stack.pop()
    return stack


def bracket_depth(text: str) -> int:
    """Open minus closed brackets outside strings and comments (negative: closes outer ones)."""
    depth = 0
    for _, c in _scan_brackets(text):
        depth += 1 if c in _OPEN else -1
    return depth


def is_complete_block(snippet: str) -> bool:
    """True when ``snippet`` is whole Go code: balanced brackets that never close an outer
    block, parsing without errors as top-level declarations or as statements in a body."""
    if not snippet.strip():
        return False
    depth = 0
    for _, c in _scan_brackets(snippet):
        depth += 1 if c in _OPEN else -1
        if depth < 0:
            return False
    if depth != 0:
        return False
    if not parse("package p\n" + snippet).root_node.has_error:
        return True
    return not parse("package p\nfunc _() {\n" + snippet + "\n}\n").root_node.has_error
