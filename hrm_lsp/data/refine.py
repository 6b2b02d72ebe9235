"""Refinement examples: real code, broken the way code in an editor is broken, judged by Go.

A snapshot or history document's code is corrupted (a missing brace or parenthesis, a
truncated body, a stray token); gofmt (the validators package's stage, real Go parser
messages) must reject the broken version and accept the original. The document is then
``plan broken <VALIDATE> <DIAG> line:col: message… </DIAG> <REFINE> original <VALIDATE>
<SYNTAX_OK> <EOT>``, the layout inference's refinement loop feeds the model
(``hrm_lsp.inference.refine.format_diagnostics``). Without Go, the tree-sitter syntax gate
judges instead.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hrm_lsp.data.documents import Document
from hrm_lsp.log import get_logger

log = get_logger(__name__)

MAX_DIAGNOSTICS = 8  # same cap as the inference loop
MAX_CODE_BYTES = 8000


def _drop_char(code: str, rng: random.Random, chars: str) -> str | None:
    spots = [i for i, c in enumerate(code) if c in chars]
    if not spots:
        return None
    i = rng.choice(spots)
    return code[:i] + code[i + 1:]


def _truncate(code: str, rng: random.Random) -> str | None:
    lines = code.splitlines(keepends=True)
    body = [i for i, line in enumerate(lines) if line.startswith("\t") and i > 0]
    if not body:
        return None
    return "".join(lines[: rng.choice(body) + 1])


def _stray(code: str, rng: random.Random) -> str | None:
    lines = code.splitlines(keepends=True)
    body = [i for i, line in enumerate(lines) if line.strip() and line.startswith("\t")]
    if not body:
        return None
    i = rng.choice(body)
    line = lines[i].rstrip("\n")
    lines[i] = line + rng.choice([")", "(", "{", ",", " :="]) + "\n"
    return "".join(lines)


CORRUPTIONS: tuple[tuple[str, Callable[[str, random.Random], str | None]], ...] = (
    ("drop }", lambda c, r: _drop_char(c, r, "}")),
    ("drop )", lambda c, r: _drop_char(c, r, ")")),
    ("drop {", lambda c, r: _drop_char(c, r, "{")),
    ("truncate", _truncate),
    ("stray token", _stray),
)


@dataclass(frozen=True)
class Finding:
    """One syntax error: 1-based line, 1-based column in characters, the parser's message."""

    line: int
    column: int
    message: str


_PACKAGE = re.compile(r"^package\s+\w+", re.MULTILINE)
_HEAD = "package p;"
_GOFMT_ERR = re.compile(r"^(.*?):(\d+):(\d+): (.*)$")


class Judge:
    """Syntax judgement with real diagnostics: gofmt when Go is available, else tree-sitter.

    Many texts are judged by one ``gofmt -e -l`` process over temporary files, which is what
    makes thousands of examples affordable (one process per text costs ~10-20 ms)."""

    def __init__(self) -> None:
        self.gofmt: str | None = None
        try:
            from hrm_lsp.validators import find_go

            self.gofmt = str(find_go().gofmt)
        except Exception as e:  # GoNotFoundError: fall back to the syntax gate
            log.warning("refinement examples use the tree-sitter gate only: %s", e)

    @property
    def name(self) -> str:
        return "gofmt" if self.gofmt else "tree-sitter"

    def errors_many(self, codes: list[str]) -> list[list[Finding]]:
        """Findings per text (empty list: it parses)."""
        if self.gofmt is None:
            from hrm_lsp.validators import syntax_errors

            return [[Finding(d.line, d.column, d.message) for d in syntax_errors(c)] for c in codes]
        out: list[list[Finding]] = [[] for _ in codes]
        with tempfile.TemporaryDirectory(prefix="hrm-lsp-refine-") as tmp:
            names = []
            heads = []
            for i, code in enumerate(codes):
                # A chunk after the first has no package clause; gofmt parses files as whole
                # files, so one is put in front on the same line (line numbers stay right).
                head = "" if _PACKAGE.search(code) else _HEAD
                heads.append(head)
                p = Path(tmp) / f"{i}.go"
                p.write_text(head + code, encoding="utf-8")
                names.append(str(p))
            r = subprocess.run([self.gofmt, "-e", "-l", *names], capture_output=True, timeout=120,
                               env={**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off"})
            index = {n: i for i, n in enumerate(names)}
            for line in r.stderr.decode("utf-8", "replace").splitlines():
                m = _GOFMT_ERR.match(line.strip())
                if not m or m.group(1) not in index:
                    continue
                i = index[m.group(1)]
                ln, col = int(m.group(2)), int(m.group(3))
                if ln == 1 and heads[i]:
                    col = max(1, col - len(heads[i]))
                out[i].append(Finding(ln, _char_column(codes[i], ln, col), m.group(4)))
            if r.returncode != 0 and not any(out):
                raise RuntimeError(f"gofmt failed: {r.stderr.decode('utf-8', 'replace')[:200]}")
        return out


def _char_column(text: str, line: int, byte_col: int) -> int:
    """gofmt counts columns in bytes; diagnostics everywhere else count characters."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return byte_col
    return len(lines[line - 1].encode("utf-8")[: byte_col - 1].decode("utf-8", "ignore")) + 1


def format_diagnostics(findings: list) -> str:
    """``line:col: message`` lines, at most MAX_DIAGNOSTICS (inference uses the same layout)."""
    return "\n".join(f"{d.line}:{d.column}: {d.message}" for d in findings[:MAX_DIAGNOSTICS])


def make_refinements(items: list[tuple[Document, int]], judge: Judge) -> list[tuple[Document | None, str]]:
    """A refinement document (or None and the reason) for each (document, seed)."""
    texts: list[str] = []
    plans: list[tuple[int, list[int]] | None] = []  # (index of original, indices of variants)
    for doc, seed in items:
        code = doc.code
        if len(code.encode("utf-8")) > MAX_CODE_BYTES:
            plans.append(None)
            continue
        rng = random.Random(seed)
        order = list(CORRUPTIONS)
        rng.shuffle(order)
        variants = []
        for _name, corrupt in order[:3]:
            broken = corrupt(code, rng)
            if broken is not None and broken != code and broken not in variants:
                variants.append(broken)
        first = len(texts)
        texts.append(code)
        texts.extend(variants)
        plans.append((first, list(range(first + 1, first + 1 + len(variants)))))
    verdicts = judge.errors_many(texts) if texts else []
    out: list[tuple[Document | None, str]] = []
    for (doc, _seed), plan in zip(items, plans, strict=True):
        if plan is None:
            out.append((None, "refine: code too long"))
            continue
        orig, variants = plan
        if verdicts[orig]:
            out.append((None, "refine: original does not parse"))
            continue
        for v in variants:
            if verdicts[v]:
                out.append((Document("refine", doc.repo, doc.path, doc.unit, doc.plan, texts[v],
                                     doc.commit, format_diagnostics(verdicts[v]), doc.code), ""))
                break
        else:
            out.append((None, "refine: corruption still parsed"))
    return out
