"""Documents: what one training example holds, how records become documents, and rendering.

A document is ``<PLAN> <INTENT:X> <TARGET:y> (<STEP> text)* </PLAN> code <EOT>``, or for a
refinement example ``<PLAN>…</PLAN> broken <VALIDATE> <DIAG> diagnostics </DIAG> <REFINE>
fixed <VALIDATE> <SYNTAX_OK> <EOT>``. Documents travel between pipeline stages as JSON lines
(``to_json``/``from_json``); ``parts()`` is the single rendering used for both tokenizer
training (joined as text) and encoding (``Tokenizer.encode_parts``).
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from hrm_lsp.data import goparse
from hrm_lsp.data.plans import Plan, plan_for_change, plan_for_snapshot
from hrm_lsp.data.sources import ChangeRecord, FileRecord
from hrm_lsp.tokenizer.base import Special

DEFAULT_CHUNK_BYTES = 6000


@dataclass(frozen=True)
class Document:
    """One training example before tokenization."""

    kind: str  # "snapshot" | "git" | "pijul" | "pr" | "refine"
    repo: str
    path: str
    unit: str  # split unit: "repo" or "repo/package-dir"
    plan: Plan
    code: str
    commit: str = ""
    diagnostics: str = ""  # refine only
    fixed: str = ""  # refine only

    def parts(self) -> list[str]:
        """Plain-text pieces and ``Special`` markers, in sequence order."""
        out = self.plan.parts() + [self.code]
        if self.kind == "refine":
            out += [Special("<VALIDATE>"), Special("<DIAG>"), self.diagnostics, Special("</DIAG>"),
                    Special("<REFINE>"), self.fixed, Special("<VALIDATE>"), Special("<SYNTAX_OK>")]
        out.append(Special("<EOT>"))
        return out

    def text(self) -> str:
        """The document as text, special symbols by name (for SentencePiece training)."""
        return "".join(self.parts())

    def to_json(self) -> dict:
        d = {"k": self.kind, "repo": self.repo, "path": self.path, "unit": self.unit,
             "plan": self.plan.to_json(), "code": self.code}
        if self.commit:
            d["commit"] = self.commit
        if self.kind == "refine":
            d["diag"] = self.diagnostics
            d["fixed"] = self.fixed
        return d

    @classmethod
    def from_json(cls, d: dict) -> Document:
        return cls(d["k"], d["repo"], d["path"], d["unit"], Plan.from_json(d["plan"]), d["code"],
                   d.get("commit", ""), d.get("diag", ""), d.get("fixed", ""))


def code_keys(code: str) -> tuple[bytes, bytes]:
    """(exact, whitespace-normalized) content hashes used for duplicate removal."""
    exact = hashlib.blake2b(code.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    norm = hashlib.blake2b(" ".join(code.split()).encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return exact, norm


def split_unit(repo: str, path: str, by: str) -> str:
    """The unit that goes to one split as a whole: the repository, or its package directory."""
    if by == "package":
        return f"{repo}/{posixpath.dirname(path) or '.'}"
    return repo


def snapshot_documents(rec: FileRecord, unit_by: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[Document]:
    """Documents for one file: one per chunk of whole declarations, plans from doc comments."""
    decls, pkg_doc = goparse.parse_file(rec.text)
    unit = split_unit(rec.repo, rec.path, unit_by)
    out = []
    for ch in goparse.chunks(rec.text, chunk_bytes, decls):
        if not ch.text.strip():
            continue
        out.append(Document("snapshot", rec.repo, rec.path, unit, plan_for_snapshot(ch.decls, pkg_doc), ch.text))
    return out


def change_documents(rec: ChangeRecord, changed_lines: int, unit_by: str,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     parsed: tuple[list[goparse.Decl], goparse.DeclChange] | None = None
                     ) -> tuple[list[Document], str]:
    """Documents for one changed file: the chunks of the new version holding changed
    declarations, each with the commit/PR plan. Returns (documents, skip reason or "").

    ``parsed`` is (declarations of ``rec.after``, its DeclChange) when the caller already
    computed them (``commit_documents`` does, to find moves between files)."""
    unit = split_unit(rec.repo, rec.path, unit_by)
    if rec.fragment:
        change = goparse.diff_declarations("", rec.after)
        plan = plan_for_change(rec.message, change, changed_lines)
        return [Document(rec.source, rec.repo, rec.path, unit, plan, rec.after, rec.commit)], ""
    if parsed is None:
        after_decls = goparse.declarations(rec.after)
        parsed = (after_decls, goparse.diff_declarations(rec.before, rec.after, after_decls))
    after_decls, change = parsed
    if change.empty:
        return [], "no declaration changed (imports/comments between declarations only)"
    plan = plan_for_change(rec.message, change, changed_lines)
    touched = {(d.start, d.end) for d in change.after_decls()}
    out = []
    for ch in goparse.chunks(rec.after, chunk_bytes, after_decls):
        if any((d.start, d.end) in touched for d in ch.decls):
            out.append(Document(rec.source, rec.repo, rec.path, unit, plan, ch.text, rec.commit))
    if not out:
        return [], "declarations only removed"
    return out, ""


def commit_documents(changes: list[tuple[ChangeRecord, int]], unit_by: str,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[tuple[list[Document], str, str]]:
    """``change_documents`` for all files of one commit (or PR), recognising declarations
    moved from one file to another (removed there, added here with the same text) as moves.
    Returns (documents, skip reason, file path) per record, in order."""
    parsed: list[tuple[list[goparse.Decl], goparse.DeclChange] | None] = []
    removed: dict[tuple[str, str], str] = {}
    for rec, _ in changes:
        if rec.fragment:
            parsed.append(None)
            continue
        after_decls = goparse.declarations(rec.after)
        change = goparse.diff_declarations(rec.before, rec.after, after_decls)
        parsed.append((after_decls, change))
        for d in change.removed:
            removed.setdefault((d.kind, d.text), rec.path)
    out = []
    for (rec, n), p in zip(changes, parsed, strict=True):
        if p is not None and removed:
            others = {k: v for k, v in removed.items() if v != rec.path}
            p = (p[0], p[1].with_moves(others))
        docs, why = change_documents(rec, n, unit_by, chunk_bytes, p)
        out.append((docs, why, rec.path))
    return out
