"""Just enough Go parsing for plans and chunking: top-level declarations and their doc comments.

Uses tree-sitter-go directly (microseconds per file, no toolchain). The validators package has
the syntax gate; this module only needs the shape of a file, and tolerates syntax errors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import tree_sitter as ts
import tree_sitter_go

_local = threading.local()

KINDS = {
    "function_declaration": "func",
    "method_declaration": "func",
    "type_declaration": "type",
    "var_declaration": "var",
    "const_declaration": "const",
}


def _parser() -> ts.Parser:
    p = getattr(_local, "parser", None)
    if p is None:
        p = ts.Parser(ts.Language(tree_sitter_go.language()))
        _local.parser = p
    return p


@dataclass(frozen=True)
class Decl:
    """A top-level declaration: ``kind`` is func/type/var/const; byte offsets are UTF-8."""

    kind: str
    name: str  # "Foo", "(*T).M", "T", or the first name of a var/const/type group
    start: int  # byte offset where the declaration (its doc comment included) starts
    end: int
    doc: str  # the doc comment text without "//" markers, "" when none
    text: str  # the declaration's source without its doc comment


def _receiver_type(node: ts.Node) -> str:
    recv = node.child_by_field_name("receiver")
    if recv is None:
        return ""
    for param in recv.named_children:
        t = param.child_by_field_name("type")
        if t is not None:
            return t.text.decode("utf-8", "replace").replace(" ", "")
    return ""


def _decl_name(node: ts.Node) -> str:
    if node.type in ("function_declaration", "method_declaration"):
        name = node.child_by_field_name("name")
        base = name.text.decode("utf-8", "replace") if name is not None else "?"
        if node.type == "method_declaration":
            return f"({_receiver_type(node)}).{base}"
        return base
    for spec in node.named_children:
        name = spec.child_by_field_name("name")
        if name is not None:
            return name.text.decode("utf-8", "replace")
        for c in spec.named_children:
            if c.type == "identifier":
                return c.text.decode("utf-8", "replace")
    return "?"


def _comment_text(raw: str) -> str:
    lines = []
    for line in raw.splitlines():
        s = line.strip()
        if s.startswith("//"):
            s = s[2:]
            if s.startswith(" "):
                s = s[1:]
            if s.startswith("go:") or s.startswith("line "):
                continue  # directives are not prose
        elif s.startswith("/*"):
            s = s[2:]
        if s.endswith("*/"):
            s = s[:-2]
        lines.append(s.rstrip())
    return "\n".join(lines).strip()


def declarations(source: str | bytes) -> list[Decl]:
    """Top-level func/type/var/const declarations in file order, with their doc comments."""
    return parse_file(source)[0]


def parse_file(source: str | bytes) -> tuple[list[Decl], str]:
    """(declarations, package doc comment) from one parse."""
    data = source.encode("utf-8") if isinstance(source, str) else source
    root = _parser().parse(data).root_node
    out: list[Decl] = []
    pkg_doc = ""
    pending: list[ts.Node] = []  # comments directly above the next node
    for node in root.children:
        if node.type == "comment":
            if pending and pending[-1].end_point.row + 1 < node.start_point.row:
                pending = []
            pending.append(node)
            continue
        attached = pending if pending and pending[-1].end_point.row + 1 >= node.start_point.row else []
        pending = []
        if node.type == "package_clause":
            pkg_doc = _comment_text("\n".join(n.text.decode("utf-8", "replace") for n in attached))
            continue
        kind = KINDS.get(node.type)
        if kind is None:
            continue
        start = attached[0].start_byte if attached else node.start_byte
        doc = _comment_text("\n".join(n.text.decode("utf-8", "replace") for n in attached))
        out.append(Decl(kind, _decl_name(node), start, node.end_byte, doc,
                        data[node.start_byte:node.end_byte].decode("utf-8", "replace")))
    return out, pkg_doc


def has_syntax_errors(source: str | bytes) -> bool:
    """True when tree-sitter finds an ERROR or MISSING node."""
    data = source.encode("utf-8") if isinstance(source, str) else source
    return _parser().parse(data).root_node.has_error


def package_doc(source: str | bytes) -> str:
    """The comment directly above the package clause ("Package x ..."), or ""."""
    return parse_file(source)[1]


@dataclass(frozen=True)
class Chunk:
    """A run of whole top-level declarations (the first chunk also holds package and imports)."""

    text: str
    decls: tuple[Decl, ...]


def chunks(source: str, max_bytes: int, decls: list[Decl] | None = None) -> list[Chunk]:
    """Cut a file at declaration boundaries into pieces of about ``max_bytes`` (never inside one).

    ``decls`` (from ``parse_file(source)``) saves a second parse."""
    data = source.encode("utf-8")
    decls = declarations(data) if decls is None else decls
    if not decls or len(data) <= max_bytes:
        return [Chunk(source, tuple(decls))]
    out: list[Chunk] = []
    start = 0
    cur: list[Decl] = []
    for i, d in enumerate(decls):
        seg_end = decls[i + 1].start if i + 1 < len(decls) else len(data)
        if cur and seg_end - start > max_bytes:
            out.append(Chunk(data[start:d.start].decode("utf-8", "replace"), tuple(cur)))
            start, cur = d.start, []
        cur.append(d)
    out.append(Chunk(data[start:].decode("utf-8", "replace"), tuple(cur)))
    return out


@dataclass(frozen=True)
class DeclChange:
    """How a file's top-level declarations changed between two versions."""

    added: tuple[Decl, ...]
    removed: tuple[Decl, ...]
    modified: tuple[tuple[Decl, Decl], ...]  # (before, after)
    renamed: tuple[tuple[Decl, Decl], ...]  # same body under a new name
    moved_in: tuple[tuple[Decl, str], ...] = ()  # (declaration, path it came from) in one commit

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified or self.renamed or self.moved_in)

    def after_decls(self) -> list[Decl]:
        """Declarations of the new version that the change touched."""
        return [*self.added, *(a for _, a in self.modified), *(a for _, a in self.renamed),
                *(d for d, _ in self.moved_in)]

    def with_moves(self, removed_elsewhere: dict[tuple[str, str], str]) -> DeclChange:
        """Added declarations whose (kind, text) another file of the same commit removed
        become moves (``removed_elsewhere`` maps (kind, text) -> that file's path)."""
        moved = [(d, removed_elsewhere[(d.kind, d.text)]) for d in self.added
                 if (d.kind, d.text) in removed_elsewhere]
        if not moved:
            return self
        ids = {id(d) for d, _ in moved}
        return DeclChange(tuple(d for d in self.added if id(d) not in ids), self.removed,
                          self.modified, self.renamed, (*self.moved_in, *moved))


def _key(d: Decl) -> tuple[str, str]:
    return (d.kind, d.name)


def _body_without_name(d: Decl) -> str:
    short = d.name.rsplit(".", 1)[-1]
    return d.text.replace(short, "\0", 1)


def diff_declarations(before: str, after: str, after_decls: list[Decl] | None = None) -> DeclChange:
    """Compare top-level declarations by (kind, name) and text."""
    b = {_key(d): d for d in declarations(before)} if before else {}
    if after_decls is None:
        after_decls = declarations(after) if after else []
    a = {_key(d): d for d in after_decls}
    added = [d for k, d in a.items() if k not in b]
    removed = [d for k, d in b.items() if k not in a]
    modified = tuple((b[k], d) for k, d in a.items()
                     if k in b and (b[k].text != d.text or b[k].doc != d.doc))
    renamed: list[tuple[Decl, Decl]] = []
    by_body = {}
    for d in removed:
        by_body.setdefault((d.kind, _body_without_name(d)), d)
    for d in list(added):
        old = by_body.pop((d.kind, _body_without_name(d)), None)
        if old is not None:
            renamed.append((old, d))
            added.remove(d)
            removed.remove(old)
    return DeclChange(tuple(added), tuple(removed), modified, tuple(renamed))
