"""Sibling bodies: the bodies of the functions around an empty one, as candidates for it.

Go packages repeat themselves: methods of one type, encoders per kind, constructors per
option. On the dev split (training-corpus repositories, ``benchmarks/quality_dev.py``), 38%
of emptied function bodies have a function in the same package whose body is at least 50%
similar to the one removed (edit similarity). When the cursor sits in an empty function
body, ``siblings`` ranks the other functions of the document and of its package by a
linear score over pair features (how much the signatures share, identifiers and their
camelCase words; the names' words; receiver, parameter types and arity; the same file and
how near; the doc comments' words; body length) with weights fitted on training corpora
(``benchmarks/sibling_rank.py``), and returns their bodies with the parameter, result and
receiver names renamed to the empty function's (matched by position and type). Inference
validates them and offers the first that ``go vet`` accepts (docs/inference.md, "Sibling
bodies").

Pure text in, text out: it knows no editor and no model. Files are parsed with tree-sitter
once per version (cached by path and disk key or live text).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from hrm_lsp.validators.treesitter import FUNC_TYPES, ByteMap, _function_span, parse
from hrm_lsp.validators.types import encode_source

MAX_BODY_LINES = 60  # longer bodies are not offered
# Signatures sharing less than this are not offered: on the dev split no sibling under 0.2
# passed go vet (26 of 113 tried did, all at 0.2 or more; identifiers only, before camelCase
# words joined them, which leave 88 of 163 dev bodies a sibling at 0.2 and 90 at 0).
MIN_SIMILARITY = 0.2
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # the words of a camelCase name


@dataclass(frozen=True)
class FunctionBody:
    """One top-level function of a file: its name, signature text (``func`` up to the body's
    ``{``), named parameters ``(name, type)`` (receiver, parameters, results, in order) and
    the body between the line after ``{`` and the ``}`` line ("" when the body is empty
    or not laid out as ``{`` ending its line, ``}`` starting its own)."""

    name: str
    signature: str
    params: tuple[tuple[str, str], ...]
    results: tuple[str, ...]  # the result types, one per value
    body: str
    start: int  # str offset of the body's first line (or of the ``{`` when no body text)
    end: int
    receiver: str | None = None  # a method's receiver type (``*Logger``), else None
    doc: str = ""  # the doc comment's text, without the comment markers

    @property
    def words(self) -> frozenset[str]:
        """The signature's identifiers and, lower-cased, the words of each (``IBytesN``:
        i, bytes, n), so ``BytesN`` and ``IBytesN`` share something."""
        names = set(_WORD.findall(self.signature))
        return frozenset(names | {p.lower() for n in names for p in _PART.findall(n)})


@dataclass(frozen=True)
class Sibling:
    """A candidate body: ``text`` (renamed for the empty function), where it came from."""

    text: str
    name: str  # the sibling function's name
    path: str | None  # its file (None: the open document)
    similarity: float  # Jaccard of the two signatures' words (``FunctionBody.words``)


def _params(node, data: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for field in ("receiver", "parameters", "result"):
        lst = node.child_by_field_name(field)
        if lst is None or lst.type != "parameter_list":
            continue
        for p in lst.named_children:
            if p.type not in ("parameter_declaration", "variadic_parameter_declaration"):
                continue
            ty = p.child_by_field_name("type")
            tt = data[ty.start_byte:ty.end_byte].decode("utf-8") if ty is not None else ""
            for c in p.children:
                if c.type == "identifier" and c != ty:
                    out.append((data[c.start_byte:c.end_byte].decode("utf-8"), tt))
    return out


def _results(node, data: bytes) -> tuple[str, ...]:
    res = node.child_by_field_name("result")
    if res is None:
        return ()
    if res.type != "parameter_list":
        return (data[res.start_byte:res.end_byte].decode("utf-8"),)
    out = []
    for p in res.named_children:
        ty = p.child_by_field_name("type")
        tt = data[ty.start_byte:ty.end_byte].decode("utf-8") if ty is not None else ""
        out += [tt] * max(1, sum(1 for c in p.children if c.type == "identifier" and c != ty))
    return tuple(out)


def file_functions(text: str) -> list[FunctionBody]:
    """Every top-level function of ``text`` with a body, in source order."""
    data = encode_source(text)
    tree = parse(data)
    bm = ByteMap(text, data)
    out = []
    for node in tree.root_node.children:
        if node.type not in FUNC_TYPES:
            continue
        fn = _function_span(node, text, data, bm)
        if fn.body_start is None or fn.body_end is None:
            continue
        start, close = fn.body_start, fn.body_end - 1
        eol = text.find("\n", start)
        line = text.rfind("\n", 0, close) + 1
        inner = ""
        first = start
        if 0 <= eol < line and not text[start + 1:eol].strip() and not text[line:close].strip():
            first, inner = eol + 1, text[eol + 1:line]
        out.append(FunctionBody(fn.name, text[fn.start:start], tuple(_params(node, data)),
                                _results(node, data), inner if inner.strip() else "", first, line,
                                fn.receiver, fn.doc or ""))
    return out


def rename(body: str, source: tuple[tuple[str, str], ...],
           target: tuple[tuple[str, str], ...]) -> tuple[str, set[str]]:
    """``body`` with the names of ``source``'s parameters replaced by ``target``'s (the same
    position with the same type, else the one target name of that type; a selector's field,
    ``x.name``, is left alone), and the source names the body still uses that the target
    does not define (the copy would not compile: ``rank`` drops it)."""
    mapping: dict[str, str] = {}
    for i, (name, ty) in enumerate(source):
        if i < len(target) and target[i][1] == ty:
            mapping[name] = target[i][0]
    for name, ty in source:
        if name not in mapping:
            same = [n for n, t in target if t == ty]
            if len(same) == 1:
                mapping[name] = same[0]
    mapping = {k: v for k, v in mapping.items() if k != "_" and v != "_"}
    known = {n for n, _ in target}
    unresolved = {n for n, _ in source if n not in mapping and n not in known and n != "_"}
    used: set[str] = set()

    def sub(w: re.Match) -> str:
        name = w.group(0)
        if w.start() and body[w.start() - 1] == ".":
            return name
        if name in unresolved:
            used.add(name)
        return mapping.get(name, name)

    return _WORD.sub(sub, body), used


def empty_function(text: str, offset: int,
                   functions: list[FunctionBody] | None = None) -> FunctionBody | None:
    """The function whose body is empty (blank) and holds ``offset``, else None;
    ``functions``: ``file_functions(text)`` when the caller has it already."""
    for fn in file_functions(text) if functions is None else functions:
        if fn.body or not (fn.start <= offset <= fn.end):
            continue
        brace = text.rfind("{", 0, fn.start + 1)
        close = text.find("}", max(offset, fn.start))
        if brace < 0 or close < 0 or text[brace + 1:close].strip():
            continue
        return fn
    return None


class FunctionCache:
    """Parsed functions per file version (the index's package files)."""

    def __init__(self, size: int = 512) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[object, list[FunctionBody]]] = {}
        self._size = size

    def peek(self, path: str, key: object) -> list[FunctionBody] | None:
        """The functions of ``path`` if this version of it is parsed already, else None."""
        with self._lock:
            hit = self._cache.get(path)
        return hit[1] if hit is not None and hit[0] == key else None

    def get(self, path: str, key: object, text_of) -> list[FunctionBody]:
        hit = self.peek(path, key)
        if hit is not None:
            return hit
        text = text_of()
        fns = file_functions(text) if text else []
        with self._lock:
            if len(self._cache) >= self._size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = (key, fns)
        return fns


# What ``rank`` orders candidates by: a linear score over these pair features, with weights
# fitted on functions of training-corpus repositories that the dev split does not use
# (``benchmarks/sibling_rank.py --fit``, hrm_lsp/assets/sibling_weights.json).
FEATURES = ("signature", "name", "first_word", "last_word", "same_receiver", "same_kind",
            "param_types", "same_arity", "same_file", "adjacent", "doc", "lines", "same_package")
WEIGHTS_FILE = Path(__file__).resolve().parent.parent / "assets" / "sibling_weights.json"
_DOC_WORD = re.compile(r"[a-z]{3,}")


def _name_parts(name: str) -> list[str]:
    return [p.lower() for p in _PART.findall(name)]


def _jaccard(a: Collection, b: Collection) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(1, len(a | b))


def _types(fn: FunctionBody) -> Counter:
    skip = 1 if fn.receiver is not None and fn.params else 0
    return Counter(t for _, t in fn.params[skip:])


def pair_features(target: FunctionBody, cand: FunctionBody, same_file: bool,
                  distance: int, same_package: bool = True) -> tuple[float, ...]:
    """``FEATURES`` of ``cand`` as a body for ``target``; ``distance``: how many functions
    apart the two are in their file (used only when ``same_file``); ``same_package``: false
    for a function of another package of the workspace."""
    tn, cn = _name_parts(target.name), _name_parts(cand.name)
    tt, ct = _types(target), _types(cand)
    td, cd = set(_DOC_WORD.findall(target.doc.lower())), set(_DOC_WORD.findall(cand.doc.lower()))
    return (
        _jaccard(target.words, cand.words),
        _jaccard(tn, cn),
        float(bool(tn and cn and tn[0] == cn[0])),
        float(bool(tn and cn and tn[-1] == cn[-1])),
        float(target.receiver is not None and cand.receiver is not None
              and target.receiver.lstrip("*") == cand.receiver.lstrip("*")),
        float((target.receiver is None) == (cand.receiver is None)),
        sum((tt & ct).values()) / max(1, sum((tt | ct).values())),
        float(sum(tt.values()) == sum(ct.values())),
        float(same_file),
        1.0 / (1 + distance) if same_file else 0.0,
        _jaccard(td, cd) if td and cd else 0.0,
        math.log1p(cand.body.count("\n")),
        float(same_file or same_package),
    )


@functools.cache
def default_weights() -> tuple[float, ...]:
    """The fitted weights (``WEIGHTS_FILE``), one per name in ``FEATURES``."""
    data = json.loads(WEIGHTS_FILE.read_text(encoding="utf-8"))
    if tuple(data["features"]) != FEATURES:
        raise ValueError(f"{WEIGHTS_FILE}: features {data['features']} are not {list(FEATURES)}")
    return tuple(float(w) for w in data["weights"])


def candidates_of(target: FunctionBody, candidates: Iterable[tuple[str | None, FunctionBody]],
                  home: str | None = None):
    """(path, function, renamed body, features) of each candidate ``rank`` may offer, in the
    given order: a body of at most ``MAX_BODY_LINES`` lines, the same result types, a
    signature similarity of at least ``MIN_SIMILARITY`` and no parameter the target lacks.
    Candidates with ``path`` None are the document's own functions (``same_file``); with
    ``home`` (the target's directory) a candidate whose file is elsewhere is of another
    package (``same_package`` 0); without it every candidate counts as the target's package."""
    words = target.words
    candidates = list(candidates)
    own = sorted([fn.start for p, fn in candidates if p is None] + [target.start])
    for path, fn in candidates:
        if not fn.body or fn.body.count("\n") > MAX_BODY_LINES or fn.results != target.results:
            continue  # other result types: its returns cannot type-check here
        if len(words & fn.words) / max(1, len(words | fn.words)) < MIN_SIMILARITY:
            continue
        text, unresolved = rename(fn.body, fn.params, target.params)
        if unresolved:
            continue
        distance = 0
        if path is None:
            distance = abs(bisect.bisect_left(own, fn.start) - bisect.bisect_left(own, target.start))
        same_package = path is None or home is None or os.path.dirname(path) == home
        yield path, fn, text, pair_features(target, fn, path is None, distance, same_package)


def rank(target: FunctionBody, candidates: Iterable[tuple[str | None, FunctionBody]],
         k: int, weights: tuple[float, ...] | None = None, home: str | None = None) -> list[Sibling]:
    """The ``k`` best candidates for ``target`` by the fitted linear score over
    ``pair_features`` (ties: the earlier candidate), renamed for it, each body once (a copy
    of a better-scored one is left out); ``candidates_of`` says which may be offered at all
    (and what ``home`` means)."""
    w = default_weights() if weights is None else weights
    scored = []
    for n, (path, fn, text, f) in enumerate(candidates_of(target, candidates, home)):
        score = sum(a * b for a, b in zip(w, f, strict=True))
        scored.append((-score, n, Sibling(text, fn.name, path, f[0])))
    scored.sort(key=lambda s: (s[0], s[1]))
    out: list[Sibling] = []
    seen: set[str] = set()
    for _, _, sib in scored:
        if sib.text not in seen:
            seen.add(sib.text)
            out.append(sib)
            if len(out) == k:
                break
    return out
