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

    kind: str  # "snapshot" | "git" | "pr" | "refine"
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
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[list[Document], str]:
    """Documents for one changed file: the chunks of the new version holding changed
    declarations, each with the commit/PR plan. Returns (documents, skip reason or "")."""
    unit = split_unit(rec.repo, rec.path, unit_by)
    if rec.fragment:
        change = goparse.diff_declarations("", rec.after)
        plan = plan_for_change(rec.message, change, changed_lines)
        return [Document(rec.source, rec.repo, rec.path, unit, plan, rec.after, rec.commit)], ""
    after_decls = goparse.declarations(rec.after)
    change = goparse.diff_declarations(rec.before, rec.after, after_decls)
    if change.empty:
        return [], "no declaration changed (imports/comments between declarations only)"
    plan = plan_for_change(rec.message, change, changed_lines)
    touched = {(d.start, d.end) for d in change.after_decls()}
    out = []
    for ch in goparse.chunks(rec.after, chunk_bytes, after_decls):
        if any((d.start, d.end) in touched for d in ch.decls):
            out.append(Document(rec.source, rec.repo, rec.path, unit, plan, ch.text, rec.commit))
    if not out:  # only removals: show the chunk the removal left behind
        return [], "declarations only removed"
    return out, ""
