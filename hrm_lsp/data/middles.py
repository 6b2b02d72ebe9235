"""Fill-in-the-middle middles shaped like the server's requests (docs/data.md, "Task-aligned FIM").

``choose_middle(text, rng, max_chars, kinds)`` picks one span of a piece of Go code:

- ``line_rest``: from a random point of a line to its end (a single-line completion);
- ``statement``: one whole statement of a function body (tree-sitter);
- ``block``: the inside of a multi-line ``{ … }`` block that is not a function body;
- ``body``: the inside of a multi-line function, method or closure body, from its first
  statement to its last (what "Refine this function" regenerates), with the function's name
  and doc comment so the caller can give it a plan;
- ``span``: a random character span (Bavarian et al. 2022).

A piece may start or end inside a declaration; tree-sitter still parses what is whole, and
kinds without a candidate fall back to ``line_rest``, then ``span``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_FUNC_NODES = ("function_declaration", "method_declaration", "func_literal")
_NOT_STATEMENTS = ("comment", "empty_statement", "ERROR")


@dataclass(frozen=True)
class Middle:
    kind: str
    start: int  # str offsets into the text, end exclusive
    end: int
    func_name: str = ""  # body: the function's name ("" for closures)
    func_doc: str = ""  # body: its doc comment without ``//`` markers ("" when none)

    def multiline(self, text: str) -> bool:
        return "\n" in text[self.start:self.end]


def _inner(text: str, open_brace: int, close_brace: int) -> tuple[int, int] | None:
    """(first, last + 1) non-space characters strictly between two braces, multi-line only."""
    a, b = open_brace + 1, close_brace
    inner = text[a:b]
    if "\n" not in inner or not inner.strip():
        return None
    lead = len(inner) - len(inner.lstrip())
    trail = len(inner) - len(inner.rstrip())
    return a + lead, b - trail


class _Nodes:
    """Candidates of each tree-sitter kind in one piece of code (parsed once, lazily)."""

    def __init__(self, text: str):
        from hrm_lsp.validators.treesitter import ByteMap, _doc_comment, parse

        data = text.encode("utf-8", "surrogatepass")
        bm = ByteMap(text, data)
        tree = parse(data)
        self.body: list[Middle] = []
        self.block: list[Middle] = []
        self.statement: list[Middle] = []
        stack = [tree.root_node]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.type == "block" and not node.has_error and node.child_count >= 2:
                parent = node.parent
                span = _inner(text, bm.to_char(node.start_byte), bm.to_char(node.end_byte) - 1)
                if span is None:
                    continue
                if parent is not None and parent.type in _FUNC_NODES:
                    name, doc = "", ""
                    if parent.type != "func_literal":
                        n = parent.child_by_field_name("name")
                        name = data[n.start_byte:n.end_byte].decode("utf-8", "replace") if n else ""
                        doc = _doc_comment(parent, data)[1]
                    self.body.append(Middle("body", *span, name, doc))
                else:
                    self.block.append(Middle("block", *span))
            elif node.type == "statement_list":
                for st in node.named_children:
                    if st.type not in _NOT_STATEMENTS and not st.has_error:
                        self.statement.append(Middle("statement", bm.to_char(st.start_byte),
                                                     bm.to_char(st.end_byte)))


def _line_rest(text: str, rng: np.random.Generator, max_chars: int) -> Middle | None:
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    lines = []
    for s in starts:
        e = text.find("\n", s)
        e = len(text) if e < 0 else e
        body = text[s:e]
        if body.strip():
            lead = len(body) - len(body.lstrip())
            lines.append((s + lead, s + len(body.rstrip())))
    if not lines:
        return None
    a, e = lines[int(rng.integers(len(lines)))]
    p = int(rng.integers(a, e))
    return Middle("line_rest", p, min(e, p + max_chars))


def _span(text: str, rng: np.random.Generator, max_chars: int) -> Middle | None:
    if len(text) < 2:
        return None
    a = int(rng.integers(0, len(text) - 1))
    b = min(len(text), a + 1 + int(rng.integers(0, max(1, max_chars))))
    return Middle("span", a, b)


def choose_middle(text: str, rng: np.random.Generator, max_chars: int,
                  kinds: dict[str, float]) -> Middle | None:
    """One middle of ``text`` (at most ``max_chars`` long), kinds drawn by their shares."""
    if max_chars < 1 or not text.strip():
        return None
    names = list(kinds)
    p = np.asarray([kinds[k] for k in names], dtype=np.float64)
    first = names[int(rng.choice(len(names), p=p / p.sum()))]
    nodes: _Nodes | None = None
    for kind in dict.fromkeys((first, "line_rest", "span")):
        if kind == "line_rest":
            m = _line_rest(text, rng, max_chars)
        elif kind == "span":
            m = _span(text, rng, max_chars)
        else:
            if nodes is None:
                nodes = _Nodes(text)
            fits = [c for c in getattr(nodes, kind) if 0 < c.end - c.start <= max_chars]
            m = fits[int(rng.integers(len(fits)))] if fits else None
        if m is not None and m.end > m.start:
            return m
    return None
