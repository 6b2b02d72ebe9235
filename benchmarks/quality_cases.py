"""Pure pieces of the suggestion-quality benchmark (``benchmarks/quality.py``): cutting holes
from Go files with tree-sitter, splicing suggestions back, and the metrics.

Nothing here starts a server or runs Go, so ``tests/test_bench_quality.py`` can check it on
a Go file written in the test.

Case kinds (docs/benchmarks.md, "Suggestion quality"):

- ``line`` (next line): the cursor at the first non-blank character of a statement line
  inside a top-level function (nested blocks and function literals included); expected = the
  rest of that line, which the hole removes (the line keeps its indentation).
- ``midline``: the same kind of line, the cursor after a random prefix of its code (at least
  one character typed, at least one left); expected = the rest of the line.
- ``body``: a top-level function or method whose body has 2-15 lines between a ``{`` that
  ends its line and a ``}`` that starts its own; the hole removes those lines, the cursor
  sits at column 0 of the line after ``{`` (the one holding ``}``); expected = the lines.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hrm_lsp.validators.treesitter import FUNC_TYPES, functions, parse

KINDS = ("line", "midline", "body")
BODY_LINES = (2, 15)


@dataclass(frozen=True)
class Case:
    """One hole: ``original[offset:hole_end]`` is removed, the cursor sits at ``offset``."""

    kind: str  # line | midline | body
    repo: str
    path: str  # posix path relative to the repository root
    offset: int  # str index of the cursor (same in the original and the holed text)
    hole_end: int  # str index in the original where the hole ends
    line: int  # 1-based line of the cursor
    column: int  # 0-based column (code points) of the cursor

    @property
    def id(self) -> str:
        """Stable name: ``repo/path:line:column:kind``."""
        return f"{self.repo}/{self.path}:{self.line}:{self.column}:{self.kind}"

    def expected(self, original: str) -> str:
        """What the hole removed (for line kinds: the rest of the line, no line break)."""
        return original[self.offset:self.hole_end]

    def holed(self, original: str) -> str:
        """The document the server sees: the original without the hole."""
        return original[:self.offset] + original[self.hole_end:]

    def splice(self, original: str, suggestion: str) -> str:
        """The holed document with ``suggestion`` inserted at the cursor. A body suggestion
        gets the line break its closing ``}`` needs; a line suggestion is cut at its first line."""
        if self.kind == "body":
            if suggestion and not suggestion.endswith("\n"):
                suggestion += "\n"
        else:
            suggestion = first_line(suggestion)
        return original[:self.offset] + suggestion + original[self.hole_end:]


# --- sites --------------------------------------------------------------------------------

class _Offsets:
    """UTF-8 byte offset -> str index for one text."""

    def __init__(self, text: str, data: bytes) -> None:
        self._ascii = len(text) == len(data)
        self._data = data

    def char(self, b: int) -> int:
        return b if self._ascii else len(self._data[:b].decode("utf-8", errors="ignore"))


_STATEMENT_PARENTS = ("statement_list",)


def statement_sites(text: str) -> list[int]:
    """Str offsets of statements inside top-level functions that start their line (only
    blanks before them on it) and leave code on it; sorted, one per line."""
    data = text.encode("utf-8")
    tree = parse(data)
    conv = _Offsets(text, data)
    found: set[int] = set()
    for top in tree.root_node.children:
        if top.type not in FUNC_TYPES:
            continue
        body = top.child_by_field_name("body")
        if body is None:
            continue
        stack = [body]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.parent is None or node.parent.type not in _STATEMENT_PARENTS:
                continue
            if not node.is_named or node.type == "comment" or node.has_error:
                continue
            off = conv.char(node.start_byte)
            line_start = text.rfind("\n", 0, off) + 1
            if text[line_start:off].strip():
                continue  # another statement shares the line (`a; b`)
            if rest_of_line(text, off).strip():
                found.add(off)
    return sorted(found)


def rest_of_line(text: str, offset: int) -> str:
    """``text`` from ``offset`` to the end of its line (no line break, no ``\\r``)."""
    end = text.find("\n", offset)
    end = len(text) if end < 0 else end
    return text[offset:end].removesuffix("\r")


def body_sites(text: str, lines: tuple[int, int] = BODY_LINES) -> list[tuple[int, int]]:
    """(start, end) str offsets of the bodies of top-level functions with ``lines[0]..lines[1]``
    body lines: start = the line after ``{``, end = the start of the ``}`` line."""
    out = []
    for fn in functions(text):
        if fn.body_start is None or fn.body_end is None:
            continue
        open_eol = text.find("\n", fn.body_start)
        close = fn.body_end - 1  # the closing "}"
        if open_eol < 0 or text[fn.body_start + 1:open_eol].strip():
            continue  # `{` must end its line
        close_line = text.rfind("\n", 0, close) + 1
        if text[close_line:close].strip() or close_line <= open_eol:
            continue  # `}` must start its own line
        start, end = open_eol + 1, close_line
        n = text.count("\n", start, end)
        if lines[0] <= n <= lines[1] and text[start:end].strip():
            out.append((start, end))
    return out


def _position(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start


def file_cases(repo: str, path: str, text: str, seed: int = 0) -> dict[str, list[Case]]:
    """Every candidate case of each kind in one file, in a seeded random order.

    A statement line is a next-line site or a mid-line site, never both (decided by the
    seeded draw), so the two kinds do not test the same line twice."""
    rng = random.Random(f"{seed}:{repo}/{path}")
    out: dict[str, list[Case]] = {k: [] for k in KINDS}
    for off in statement_sites(text):
        rest = rest_of_line(text, off).rstrip()
        end = off + len(rest)
        line, col = _position(text, off)
        if len(rest) >= 2 and rng.random() < 0.5:
            cut = off + rng.randint(1, len(rest) - 1)
            out["midline"].append(Case("midline", repo, path, cut, end, line, col + cut - off))
        else:
            out["line"].append(Case("line", repo, path, off, end, line, col))
    for start, end in body_sites(text):
        line, col = _position(text, start)
        out["body"].append(Case("body", repo, path, start, end, line, col))
    for k in KINDS:
        rng.shuffle(out[k])
    return out


def checkout_cases(repo: Path, seed: int = 0, name: str | None = None,
                   label: Callable[[Path], str] | None = None):
    """``(file, text, file_cases(...))`` for every non-test Go file of a checkout that the
    data pipeline's file walk reads (``hrm_lsp.data.sources``); ``name``: the repository's
    name in the cases (default: the folder's), ``label``: a file's path in them (default:
    relative to ``repo``)."""
    from hrm_lsp.data.sources import Skips, list_go_files, read_go_file

    for f in list_go_files(repo, Skips()):
        if f.name.endswith("_test.go"):
            continue
        text, _ = read_go_file(f)
        if text is None:
            continue
        path = label(f) if label else f.relative_to(repo).as_posix()
        yield f, text, file_cases(name or repo.name, path, text, seed)


def select_cases(per_file: dict[tuple[str, str], dict[str, list[Case]]],
                 counts: dict[str, int], caps: dict[str, int]) -> list[Case]:
    """Pick ``counts[kind]`` cases spread over repositories and files.

    Each file offers at most ``caps[kind]`` cases of a kind (the first of its seeded order);
    repositories take turns, and within a repository its files take turns, so every
    repository and many files are represented. Deterministic for the same input."""
    chosen: list[Case] = []
    for kind in KINDS:
        by_repo: dict[str, list[list[Case]]] = defaultdict(list)
        for (repo, _path), kinds in sorted(per_file.items()):
            offered = kinds.get(kind, [])[:caps.get(kind, 0)]
            if offered:
                by_repo[repo].append(list(offered))
        # Per repository: round-robin over its files -> one queue.
        queues = {repo: _round_robin(files) for repo, files in sorted(by_repo.items())}
        picked: list[Case] = []
        want = counts.get(kind, 0)
        while len(picked) < want and any(queues.values()):
            for repo in sorted(queues):
                if queues[repo] and len(picked) < want:
                    picked.append(queues[repo].pop(0))
        chosen += sorted(picked, key=lambda c: (c.repo, c.path, c.offset))
    return chosen


def _round_robin(lists: list[list[Case]]) -> list[Case]:
    out: list[Case] = []
    i = 0
    while any(lists):
        for lst in lists:
            if len(lst) > i:
                out.append(lst[i])
        i += 1
        if all(len(lst) <= i for lst in lists):
            break
    return out


# --- metrics ------------------------------------------------------------------------------

def first_line(text: str) -> str:
    """The first line of ``text`` as the editor shows it (no line break)."""
    return text.split("\n", 1)[0].removesuffix("\r")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert/delete/substitute one code point), bit-parallel (Hyyrö 2001,
    after Myers 1999): one pass over ``a`` with ``b`` as bit vectors in Python ints."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    full = (1 << m) - 1
    top = 1 << (m - 1)
    pv, mv, score = full, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & full
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein / max length; 1.0 for two empty strings."""
    n = max(len(a), len(b))
    return 1.0 if n == 0 else 1.0 - levenshtein(a, b) / n


def normalize_body(text: str) -> str:
    """A body for comparison: trailing blanks of each line and blank lines at its ends off."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip("\n")


def score_line(suggestion: str | None, expected: str) -> dict:
    """exact / similarity of a line suggestion's first line (trailing whitespace ignored)."""
    if not suggestion or not suggestion.strip():
        return {"answered": False, "exact": False, "similarity": 0.0}
    got, want = first_line(suggestion).rstrip(), expected.rstrip()
    return {"answered": True, "exact": got == want, "similarity": round(edit_similarity(got, want), 4)}


def score_body_text(suggestion: str | None, expected: str) -> dict:
    """exact / similarity of a body suggestion against the removed body (Go checks apart)."""
    if not suggestion or not suggestion.strip():
        return {"answered": False, "exact": False, "similarity": 0.0}
    got, want = normalize_body(suggestion), normalize_body(expected)
    return {"answered": True, "exact": got == want, "similarity": round(edit_similarity(got, want), 4)}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty list."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def latency_summary(values: list[float]) -> dict:
    """p50 / p95 / max in ms (``{"n": 0}`` for no values)."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(percentile(values, 0.5), 1),
            "p95_ms": round(percentile(values, 0.95), 1), "max_ms": round(max(values), 1)}


def aggregate(records: list[dict]) -> dict:
    """Per kind: rates over the kind's cases (an unanswered case fails every metric) and
    latency; body vet rates only over cases whose original passes vet."""
    out: dict[str, dict] = {}
    for kind in KINDS:
        rs = [r for r in records if r["kind"] == kind]
        if not rs:
            continue
        n = len(rs)
        agg = {"n": n,
               "answered": round(sum(r["answered"] for r in rs) / n, 4),
               "exact": round(sum(r["exact"] for r in rs) / n, 4),
               "similarity": round(sum(r["similarity"] for r in rs) / n, 4),
               "latency": latency_summary([r["latency_ms"] for r in rs])}
        if kind == "body":
            agg["parses"] = round(sum(bool(r.get("parses")) for r in rs) / n, 4)
            eligible = [r for r in rs if r.get("vet_eligible")]
            agg["vet_n"] = len(eligible)
            if eligible:
                agg["vet_ok"] = round(sum(bool(r.get("vet_ok")) for r in eligible) / len(eligible), 4)
                agg["vet_ok_sim50"] = round(sum(bool(r.get("vet_ok")) and r["similarity"] >= 0.5
                                                for r in eligible) / len(eligible), 4)
        out[kind] = agg
    return out


def summary_line(source: str, agg: dict) -> str:
    """One line per source, e.g. ``index: next-line exact 0.290 sim 0.59 ans 0.98 | …``."""
    parts = [f"{source}:"]
    names = {"line": "next-line", "midline": "mid-line", "body": "body"}
    for kind in KINDS:
        a = agg.get(kind)
        if not a:
            continue
        s = f"{names[kind]} exact {a['exact']:.3f} sim {a['similarity']:.2f} ans {a['answered']:.2f}"
        if kind == "body":
            s += f" parses {a['parses']:.2f}"
            if a.get("vet_n"):
                s += f" vet {a['vet_ok']:.2f} vet+sim50 {a['vet_ok_sim50']:.2f} (vet n={a['vet_n']})"
        lat = a["latency"]
        s += f" p50 {lat['p50_ms']:.0f} p95 {lat['p95_ms']:.0f} max {lat['max_ms']:.0f} ms (n={a['n']})"
        parts.append(s)
    return " | ".join([parts[0] + " " + parts[1]] + parts[2:]) if len(parts) > 1 else parts[0]
