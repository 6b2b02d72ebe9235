"""``hrm-lsp prepare``: sources -> documents -> splits -> tokenizer -> shards -> manifest.

Named steps, in order, each resumable (a step that finished leaves a marker under
``DIR/work/``; running the same command again continues where it stopped):

1. ``collect``  each source (git or pijul history, PR export, directory snapshot, the stdlib) becomes
   documents with plans, in parallel worker processes, into ``work/collect-NNN.jsonl``;
2. ``split``    documents are assigned to train/val/test by repository (or package directory)
   and exact + whitespace-normalized duplicates are removed across all splits;
3. ``refine``   optional refinement examples from real code broken and judged by gofmt;
4. ``tokenizer`` SentencePiece BPE or the byte table, fitted on the train split only;
5. ``encode``   documents -> ids -> memory-mapped shards (checkpointed every few batches);
6. ``manifest`` ``DIR/manifest.json`` (documents, splits, sources, tokenizer hash, counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hrm_lsp.config import ConfigError, load_dataclass, to_dict
from hrm_lsp.data.documents import (
    DEFAULT_CHUNK_BYTES,
    Document,
    code_keys,
    commit_documents,
    snapshot_documents,
    split_unit,
)
from hrm_lsp.data.pijul import history_backend, iter_pijul_history
from hrm_lsp.data.sources import (
    DEFAULT_MAX_FILE_BYTES,
    ChangeRecord,
    FileRecord,
    Skips,
    SourceError,
    iter_history,
    list_go_files,
    read_go_file,
    repo_name,
    stdlib_root,
)
from hrm_lsp.log import get_logger
from hrm_lsp.tokenizer import Tokenizer, TokenizerError, load_tokenizer, symbols, tokenizer_filename

log = get_logger(__name__)

MANIFEST = "manifest.json"
FORMAT = "hrm-lsp-data"
VERSION = 1
SPLITS = ("train", "val", "test")
BATCH = 256  # documents per worker round trip


class PrepareError(ValueError):
    """The preparation cannot run as asked (options, output directory, no usable input)."""


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides the output; recorded in the manifest and checked on resume."""

    sources: tuple[str, ...] = ()
    stdlib: bool = False
    history: bool = False
    snapshot: bool = True
    pr_jsonl: tuple[str, ...] = ()
    tokenizer: Literal["spm", "byte"] = "spm"
    vocab: int = 50000
    max_commits: int | None = None
    since: str | None = None
    include_testdata: bool = False
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    split_by: Literal["auto", "repo", "package"] = "auto"
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    refine_examples: int = 1000
    spm_sample_bytes: int = 40_000_000
    rare_mass: float = 0.01
    acc_window: int = 256
    shard_tokens: int = 1 << 27
    seed: int = 0
    # Fine-tuning: encode with an existing tokenizer (file, or a directory holding one)
    # instead of fitting a new one; its kind wins over ``tokenizer``.
    tokenizer_from: str | None = None

    def validate(self) -> None:
        if not (self.sources or self.stdlib or self.pr_jsonl):
            raise ConfigError("nothing to prepare: give SOURCE directories, --stdlib or --pr-jsonl")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 \
                or self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val/test fractions must be in [0, 1) and sum to less than 1")
        if self.max_commits is not None and self.max_commits < 1:
            raise ConfigError("--max-commits must be >= 1")
        if self.chunk_bytes < 256 or self.max_file_bytes < 1 or self.refine_examples < 0:
            raise ConfigError("chunk/file size limits must be positive (chunk >= 256 bytes)")


@dataclass
class SourceStats:
    """What one source gave."""

    kind: str  # "git" | "pijul" | "pr" | "dir" | "stdlib"
    path: str
    repo: str = ""
    files: int = 0  # files or changed files read successfully
    bytes: int = 0
    documents: int = 0
    commits: int = 0
    error: str = ""
    skips: Skips = field(default_factory=Skips)

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path, "repo": self.repo, "files": self.files,
                "bytes": self.bytes, "documents": self.documents, "commits": self.commits,
                "error": self.error, "skipped": self.skips.to_json()}


# --------------------------------------------------------------------------------------------
# worker processes


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class Workers:
    """Ordered, bounded parallel map over batches; in-process when ``n == 1``."""

    def __init__(self, n: int, initializer: Callable | None = None, initargs: tuple = ()) -> None:
        self.n = n
        self._pool = None
        if n > 1:
            self._pool = ProcessPoolExecutor(n, mp_context=get_context("spawn"),
                                             initializer=initializer, initargs=initargs)
        elif initializer is not None:
            initializer(*initargs)

    def map(self, fn: Callable, items: Iterable, batch: int = BATCH) -> Iterator:
        """``map(fn, items)`` in order, holding at most ``batch`` items per worker at a time."""
        buf: list = []
        for item in items:
            buf.append(item)
            if len(buf) >= batch * max(1, self.n):
                yield from self._run(fn, buf)
                buf = []
        if buf:
            yield from self._run(fn, buf)

    def _run(self, fn: Callable, items: list) -> Iterator:
        if self._pool is None:
            return map(fn, items)
        return self._pool.map(fn, items, chunksize=max(1, len(items) // (4 * self.n)))

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _snapshot_task(args: tuple) -> tuple[list[dict], str, int]:
    path, repo, rel, unit_by, chunk_bytes, max_bytes = args
    text, why = read_go_file(Path(path), max_bytes)
    if text is None:
        return [], why, 0
    try:
        docs = snapshot_documents(FileRecord(repo, rel, text), unit_by, chunk_bytes)
    except Exception as e:  # a parser bug must not stop a whole corpus
        return [], f"parse failure ({type(e).__name__})", 0
    return [d.to_json() for d in docs], "", len(text.encode("utf-8"))


def _commit_task(args: tuple) -> list[tuple[list[dict], str, int, str]]:
    """Documents for the changed files of one commit or PR: (docs, skip reason, bytes, where)."""
    group, unit_by, chunk_bytes = args
    rec0 = group[0][0]
    try:
        results = commit_documents(group, unit_by, chunk_bytes)
    except Exception as e:  # a parser bug must not stop a whole history
        return [([], f"parse failure ({type(e).__name__})", 0, f"{rec0.repo}@{rec0.commit[:12]}")]
    return [([d.to_json() for d in docs], why, len(rec.after.encode("utf-8")),
             f"{rec.repo}@{rec.commit[:12]}:{rec.path}")
            for (docs, why, _path), (rec, _) in zip(results, group, strict=True)]


_JUDGE = None
_TOKENIZER: Tokenizer | None = None


def _refine_task(batch: list[tuple[str, int]]) -> list[tuple[dict | None, str]]:
    global _JUDGE
    from hrm_lsp.data.refine import Judge, make_refinements

    if _JUDGE is None:
        _JUDGE = Judge()
    items = [(Document.from_json(json.loads(line)), seed) for line, seed in batch]
    return [(d.to_json() if d else None, why) for d, why in make_refinements(items, _JUDGE)]


def _init_tokenizer(data: bytes) -> None:
    global _TOKENIZER
    _TOKENIZER = load_tokenizer(data)


def _encode_task(line: str) -> np.ndarray:
    assert _TOKENIZER is not None
    doc = Document.from_json(json.loads(line))
    return np.asarray(_TOKENIZER.encode_parts(doc.parts()), dtype=np.int32)


# --------------------------------------------------------------------------------------------
# helpers


def _progress(total: int | None, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False,
                dynamic_ncols=True, unit_scale=True)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _unit_hash(unit: str) -> float:
    return int.from_bytes(hashlib.sha256(unit.encode("utf-8")).digest()[:8], "big") / 2.0**64


def assign_splits(units: Iterable[str], val: float, test: float) -> dict[str, str]:
    """Deterministic split per unit from a hash of its name (never content or order).

    With at least three units, a held-out split whose fraction is > 0 never ends up empty:
    the train units with the smallest hashes move there."""
    units = sorted(set(units), key=lambda u: (_unit_hash(u), u))
    out = {}
    for u in units:
        h = _unit_hash(u)
        out[u] = "test" if h < test else "val" if h < test + val else "train"
    if len(units) >= 3:
        for split, frac in (("test", test), ("val", val)):
            if frac > 0 and split not in out.values():
                train = [u for u in units if out[u] == "train"]
                if len(train) > 1:
                    out[train[0]] = split
    return out


# Auto split of a few sources (one repository, say): units are held out at the coarsest of
# these levels that keeps something in train, val and test and at most this share of the
# code out of training.
HOLDOUT_LEVELS = ("package", "file", "document")
MAX_HELDOUT_SHARE = 0.3


def holdout_unit(by: str, repo: str, path: str, ordinals: Counter | None = None) -> str:
    """The split unit of a document at level ``by``: its package directory, its file, or its
    place among the documents of its file (``ordinals`` counts them, in collection order)."""
    if by == "package":
        return split_unit(repo, path, "package")
    if by == "file":
        return f"{repo}/{path}"
    assert ordinals is not None
    k = ordinals[(repo, path)]
    ordinals[(repo, path)] += 1
    return f"{repo}/{path}#{k}"


def assign_by_size(size: dict[str, int], val: float, test: float,
                   cap: float = MAX_HELDOUT_SHARE / 2) -> dict[str, str]:
    """Hold out whole units, walked in the order of a hash of their names: each goes to test
    (then val) while that split holds less than its fraction of the bytes, if it keeps the
    split within ``cap`` of all bytes (an empty split takes one unit of up to a third); the
    rest train. So a few units give a held-out slice of about the asked size, never the one
    package that is most of the code."""
    total = max(1, sum(size.values()))
    held = {"test": 0, "val": 0}
    want = {"test": test * total, "val": val * total}
    out = {}
    for u in sorted(size, key=lambda u: (_unit_hash(u), u)):
        out[u] = "train"
        for s in ("test", "val"):
            fits = held[s] + size[u] <= cap * total or (held[s] == 0 and 3 * size[u] <= total)
            if want[s] > 0 and held[s] < want[s] and fits:
                out[u] = s
                held[s] += size[u]
                break
    return out


def choose_holdout(docs: list[tuple], val: float, test: float) -> dict:
    """How the user's code is held out; ``docs`` are (repo, path, bytes[, code_lines]) in
    collection order.

    In order: packages split by hash as for large corpora (``assign_splits``); whole packages
    picked by ``assign_by_size`` (a repository of several packages); files (one package);
    documents (one file). Train documents that copy held-out code (``copies_held_out``: the
    code moved in the history) are dropped, so they count as lost. The first plan that leaves
    train, val and test non-empty with at most MAX_HELDOUT_SHARE of the remaining bytes held
    out is used; else the one holding out the least. Deterministic. Returns {"by", "reason",
    "share", "units", "val", "test", "dropped", "assignment", "held_lines"}.
    """
    docs = [d if len(d) == 4 else (*d, frozenset()) for d in docs]
    plans = [("package", assign_splits), *((by, assign_by_size) for by in HOLDOUT_LEVELS)]
    tried = []
    for by, assign in plans:
        ordinals: Counter = Counter()
        size: Counter = Counter()
        units = [holdout_unit(by, repo, path, ordinals) for repo, path, _, _ in docs]
        for u, (_, _, b, _) in zip(units, docs, strict=True):
            size[u] += b
        split_of = assign(size, val, test)
        held = {s: sorted(u for u, x in split_of.items() if x == s) for s in ("val", "test")}
        lines: set[int] = set()
        for u, d in zip(units, docs, strict=True):
            if split_of[u] != "train":
                lines |= d[3]
        held_b = sum(d[2] for u, d in zip(units, docs, strict=True) if split_of[u] != "train")
        kept = [d[2] for u, d in zip(units, docs, strict=True)
                if split_of[u] == "train" and not copies_held_out(d[3], lines)]
        share = held_b / max(1, held_b + sum(kept))
        ok = all(held.values()) and bool(kept)
        tried.append({"by": by, "ok": ok, "share": share, "held": held, "split_of": split_of,
                      "units": len(size), "lines": frozenset(lines),
                      "dropped": sum(1 for u in units if split_of[u] == "train") - len(kept)})
        if ok and share <= MAX_HELDOUT_SHARE:
            break
    usable = [t for t in tried if t["ok"]]
    t = tried[-1] if tried[-1]["ok"] and tried[-1]["share"] <= MAX_HELDOUT_SHARE else \
        min(usable, key=lambda t: t["share"]) if usable else tried[1]
    if not t["ok"]:
        reason = f"too little code to hold any out: {t['units']} {t['by']}(s)"
    elif t["by"] == "package":
        reason = f"{t['units']} packages"
    else:
        prev = tried[tried.index(t) - 1]
        reason = (f"{prev['units']} {prev['by']}(s); whole {prev['by']}s would hold out "
                  f"{prev['share']:.0%} of the code" if prev["ok"]
                  else f"{prev['units']} {prev['by']}(s), too few to hold out whole {prev['by']}s")
    return {"by": t["by"], "reason": reason, "share": round(t["share"], 4), "units": t["units"],
            "val": t["held"]["val"], "test": t["held"]["test"], "dropped": t["dropped"],
            "assignment": t["split_of"], "held_lines": t["lines"]}


NEAR_COPY_SHARE = 0.5  # a train document with this share of its lines held out is dropped


def code_lines(code: str) -> frozenset[int]:
    """Hashes of the distinct lines of ``code`` that say something (10+ characters, trimmed)."""
    return frozenset(hash(t) for t in (x.strip() for x in code.splitlines()) if len(t) >= 10)


def copies_held_out(lines: frozenset[int], held_lines: frozenset[int] | set[int]) -> bool:
    """Whether a document (its ``code_lines``) is mostly held-out lines: an older copy of code
    that moved between files or packages in the history, which must not train."""
    if len(lines) < 3 or not held_lines:
        return False
    return len(lines & held_lines) >= NEAR_COPY_SHARE * len(lines)


def describe_holdout(h: dict, limit: int = 6) -> str:
    """One line saying what was held out of training, and why at that level."""
    def names(units: list[str]) -> str:
        shown = ", ".join(units[:limit])
        return shown + (f", … ({len(units)} in all)" if len(units) > limit else "") if units else "nothing"

    copies = (f"; {h['dropped']} older copies of it (moved in the history) left out of train"
              if h.get("dropped") else "")
    return (f"held out by {h['by']} ({h['reason']}): val: {names(h['val'])}; test: {names(h['test'])} "
            f"— {h['share']:.0%} of the code, not trained on{copies}")


def _magic(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(4)


def reuse_tokenizer(source: str | Path) -> Tokenizer:
    """The tokenizer of ``--tokenizer-from``: a ``.gguf`` model file (its embedded tokenizer),
    a run, checkpoint or prepared-data directory, or a tokenizer file (SentencePiece
    ``.model``, byte ``tokenizer.json``). PrepareError saying which of these was expected."""
    p = Path(source)
    what = ("expected a .gguf model file, a run, checkpoint or data directory, or a tokenizer "
            "file (SentencePiece .model, byte tokenizer.json)")
    if not p.exists():
        raise PrepareError(f"--tokenizer-from {p}: no such file or directory ({what})")
    if p.is_file() and _magic(p) == b"GGUF":
        from hrm_lsp.export.errors import ModelFileError
        from hrm_lsp.export.gguf import read_tokenizer

        try:
            return read_tokenizer(p)
        except ModelFileError as e:
            raise PrepareError(f"--tokenizer-from: {e}") from None
    if p.is_dir() and not any((p / tokenizer_filename(k)).is_file() for k in ("spm", "byte")):
        if p.parent.name == "checkpoints":  # a checkpoint: the tokenizer is its run's
            p = p.parent.parent
        elif (p / "model.gguf").is_file():
            return reuse_tokenizer(p / "model.gguf")
    try:
        return load_tokenizer(p)
    except TokenizerError as e:
        raise PrepareError(f"--tokenizer-from {source}: not a usable tokenizer ({e}); {what}") from None


def _batched(items: Iterable, n: int) -> Iterator[list]:
    buf: list = []
    for x in items:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def _iter_lines(path: Path) -> Iterator[str]:
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield line


# --------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class SourceSpec:
    """One unit of step 1: a source to read, with its repository name and split unit."""

    kind: str
    path: str
    repo: str = ""
    unit_by: str = "repo"


class Preparer:
    """Runs the steps for one output directory."""

    def __init__(self, opts: PrepareOptions, out: Path, *, workers: int = 0, force: bool = False,
                 progress: bool = False, echo: Callable[[str], None] | None = None) -> None:
        self.opts, self.out = opts, Path(out)
        self.workers = workers or _default_workers()
        self.progress = progress
        self.echo = echo or (lambda s: log.info("%s", s))
        self.work = self.out / "work"
        self._setup(force)

    # -- output directory and resume ----------------------------------------------------------

    def _our_files(self) -> list[Path]:
        pats = [MANIFEST, "tokenizer.model", "tokenizer.json", *(f"{s}-*" for s in SPLITS)]
        found = [p for pat in pats for p in self.out.glob(pat)]
        return found + ([self.work] if self.work.exists() else [])

    def _setup(self, force: bool) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise PrepareError(f"--out {self.out}: exists and is not a directory")
        opts_json = to_dict(self.opts)
        if force:
            for p in self._our_files():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        elif (self.out / MANIFEST).exists():
            raise PrepareError(f"{self.out} already holds prepared data ({MANIFEST}); "
                               "use --force to prepare it again, or choose another --out")
        elif (self.work / "options.json").exists():
            if _read_json(self.work / "options.json") != json.loads(json.dumps(opts_json)):
                raise PrepareError(f"{self.out} holds an unfinished preparation with different "
                                   "options; rerun with the same options to resume, or --force")
            self.echo(f"resuming the unfinished preparation in {self.out}")
        elif self.out.exists() and any(self.out.iterdir()):
            raise PrepareError(f"--out {self.out}: directory is not empty and holds no preparation; "
                               "choose an empty or new directory")
        self.work.mkdir(parents=True, exist_ok=True)
        _write_json(self.work / "options.json", opts_json)

    # -- step 1 ---------------------------------------------------------------------------------

    def plan_sources(self) -> list[SourceSpec]:
        """The ordered list of sources. History and PRs come first so that, when the same code
        appears again in a snapshot, the copy with a commit-message plan is the one kept."""
        o = self.opts
        dir_unit = o.split_by if o.split_by != "auto" else ("repo" if len(o.sources) >= 10 else "package")
        pr_unit = o.split_by if o.split_by != "auto" else "repo"
        out: list[SourceSpec] = []
        if o.history:
            # A pijul repository is mined with pijul (or reported, when pijul is missing).
            out += [SourceSpec(history_backend(Path(s)), s, unit_by=dir_unit) for s in o.sources]
        out += [SourceSpec("pr", p, unit_by=pr_unit) for p in o.pr_jsonl]
        if o.snapshot:
            out += [SourceSpec("dir", s, unit_by=dir_unit) for s in o.sources]
        if o.stdlib:
            # Always by package: as one unit the whole stdlib would land in a single split.
            out.append(SourceSpec("stdlib", "", "go-stdlib", "package"))
        return out

    def collect(self) -> list[dict]:
        """Step 1: every source -> work/collect-NNN.jsonl (+ its stats as a marker)."""
        stats: list[dict] = []
        pool: Workers | None = None  # one pool for all sources: starting processes is not free
        try:
            for i, src in enumerate(self.plan_sources()):
                marker = self.work / f"collect-{i:03d}.json"
                if marker.exists():
                    stats.append(_read_json(marker))
                    continue
                pool = pool or Workers(self.workers)
                st = SourceStats(src.kind, src.path)
                out_path = self.work / f"collect-{i:03d}.jsonl"
                with out_path.open("w", encoding="utf-8") as fh:
                    try:
                        self._collect_one(src, st, fh, pool)
                    except SourceError as e:
                        st.error = str(e)
                        self.echo(f"skipped source {src.path or src.kind}: {e}")
                s = st.to_json()
                _write_json(marker, s)
                stats.append(s)
        finally:
            if pool is not None:
                pool.close()
        return stats

    def _collect_one(self, src: SourceSpec, st: SourceStats, fh, pool: Workers) -> None:
        o = self.opts
        if src.kind in ("dir", "stdlib"):
            root = stdlib_root() if src.kind == "stdlib" else Path(src.path)
            st.path = str(root)
            repo = src.repo or repo_name(root if root.is_dir() else root.parent)
            st.repo = repo
            files = list_go_files(root, st.skips, include_testdata=o.include_testdata,
                                  max_bytes=o.max_file_bytes)
            base = root if root.is_dir() else root.parent
            tasks = ((str(p), repo, p.relative_to(base).as_posix(), src.unit_by,
                      o.chunk_bytes, o.max_file_bytes) for p in files)
            bar = _progress(len(files), f"{src.kind} {repo}", "file", self.progress)
            for (docs, why, nbytes), p in zip(pool.map(_snapshot_task, tasks), files, strict=True):
                bar.update(1)
                if why:
                    st.skips.add(why, str(p))
                    continue
                st.files += 1
                st.bytes += nbytes
                self._emit(docs, st, fh)
            bar.close()
        elif src.kind in ("git", "pijul", "pr"):
            if src.kind in ("git", "pijul"):
                root = Path(src.path)
                st.repo = repo_name(root) if root.is_dir() else root.name
                mine = iter_history if src.kind == "git" else iter_pijul_history
                records: Iterator[tuple[ChangeRecord, int]] = mine(
                    root, st.skips, max_commits=o.max_commits, since=o.since,
                    include_testdata=o.include_testdata, max_bytes=o.max_file_bytes,
                    name=st.repo)
            else:
                from hrm_lsp.data.prs import iter_pr_jsonl

                records = iter_pr_jsonl(Path(src.path), st.skips, o.max_file_bytes)
            commits: set[str] = set()
            bar = _progress(None, f"{src.kind} {st.repo or Path(src.path).name}", "change", self.progress)

            def tasks() -> Iterator[tuple]:
                # One task per commit (records of a commit arrive together), so that a
                # declaration moved between two files of the commit is seen as a move.
                group: list[tuple[ChangeRecord, int]] = []
                for rec, changed in records:
                    commits.add(rec.commit)
                    if group and (group[0][0].repo, group[0][0].commit) != (rec.repo, rec.commit):
                        yield (group, src.unit_by, o.chunk_bytes)
                        group = []
                    group.append((rec, changed))
                if group:
                    yield (group, src.unit_by, o.chunk_bytes)

            for results in pool.map(_commit_task, tasks(), batch=64):
                for docs, why, nbytes, where in results:
                    bar.update(1)
                    if why:
                        st.skips.add(why, where)
                        continue
                    st.files += 1
                    st.bytes += nbytes
                    self._emit(docs, st, fh)
            bar.close()
            st.commits = len(commits)

    @staticmethod
    def _emit(docs: list[dict], st: SourceStats, fh) -> None:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        st.documents += len(docs)

    # -- step 2 ---------------------------------------------------------------------------------

    def split(self, n_sources: int) -> dict:
        """Step 2: assign units to splits, drop duplicates -> work/{split}.jsonl."""
        marker = self.work / "split.json"
        if marker.exists():
            result = _read_json(marker)
            if result.get("holdout"):
                self.echo(describe_holdout(result["holdout"]))
            return result
        o = self.opts
        specs = self.plan_sources()
        # Sources whose split unit "auto" chose (git/pijul history and directories): their
        # unit may be refined from package to file to document (choose_holdout).
        refinable = {i for i, sp in enumerate(specs[:n_sources])
                     if o.split_by == "auto" and sp.kind in ("git", "pijul", "dir") and sp.unit_by == "package"}
        paths = [self.work / f"collect-{i:03d}.jsonl" for i in range(n_sources)]
        fixed: set[str] = set()
        keys: list[tuple] = []  # (repo, path, code bytes, line hashes) of refinable documents
        for i, path in enumerate(paths):
            if not path.exists():
                continue
            for line in _iter_lines(path):
                d = json.loads(line)
                if i in refinable:
                    keys.append((d["repo"], d["path"], len(d["code"].encode("utf-8")), code_lines(d["code"])))
                else:
                    fixed.add(d["unit"])
        split_of = assign_splits(fixed, o.val_fraction, o.test_fraction)
        holdout = choose_holdout(keys, o.val_fraction, o.test_fraction) if keys else None
        held_lines: frozenset[int] = frozenset()
        if holdout is not None:
            split_of.update(holdout.pop("assignment"))
            held_lines = holdout.pop("held_lines")
            self.echo(describe_holdout(holdout))
        seen_exact: set[bytes] = set()
        seen_norm: set[bytes] = set()
        dups: Counter = Counter()
        counts = {s: Counter() for s in SPLITS}
        units: dict[str, set[str]] = {s: set() for s in SPLITS}
        outs = {s: (self.work / f"{s}.jsonl").open("w", encoding="utf-8") for s in SPLITS}
        try:
            for i, path in enumerate(paths):
                if not path.exists():
                    continue
                ordinals: Counter = Counter()
                for line in _iter_lines(path):
                    d = json.loads(line)
                    if holdout is not None and i in refinable:
                        unit = holdout_unit(holdout["by"], d["repo"], d["path"], ordinals)
                        if unit != d["unit"]:
                            d["unit"] = unit
                            line = json.dumps(d, ensure_ascii=False) + "\n"
                        if split_of[unit] == "train" and copies_held_out(code_lines(d["code"]), held_lines):
                            dups["copy of held-out code (moved in history)"] += 1
                            continue
                    exact, norm = code_keys(d["code"])
                    if exact in seen_exact:
                        dups["exact"] += 1
                        continue
                    if norm in seen_norm:
                        dups["whitespace-normalized"] += 1
                        continue
                    seen_exact.add(exact)
                    seen_norm.add(norm)
                    unit = d["unit"]
                    s = split_of[unit]
                    units[s].add(unit)
                    outs[s].write(line)
                    c = counts[s]
                    c["documents"] += 1
                    c["bytes"] += len(d["code"].encode("utf-8"))
                    c[f"intent:{d['plan'][0]}"] += 1
                    c[f"target:{d['plan'][1]}"] += 1
                    c[f"kind:{d['k']}"] += 1
        finally:
            for fh in outs.values():
                fh.close()
        result = {"duplicates": dict(dups), "splits": {s: dict(counts[s]) for s in SPLITS},
                  "units": {s: len(units[s]) for s in SPLITS},
                  "unit_examples": {s: sorted(units[s])[:20] for s in SPLITS},
                  "holdout": holdout}
        _write_json(marker, result)
        return result

    # -- step 3 ---------------------------------------------------------------------------------

    def refine(self, split_stats: dict) -> dict:
        """Step 3: refinement documents -> work/{split}.refine.jsonl."""
        marker = self.work / "refine.json"
        if marker.exists():
            return _read_json(marker)
        n = self.opts.refine_examples
        made: Counter = Counter()
        skips = Skips()
        total = sum(split_stats["splits"][s].get("documents", 0) for s in SPLITS)
        if n and total:
            bar = _progress(n, "refinement examples", "doc", self.progress)
            sizes = {s: split_stats["splits"][s].get("documents", 0) for s in SPLITS}
            wants = {s: n * sizes[s] // total for s in SPLITS}
            wants["train"] += n - sum(wants.values())  # the rounding remainder
            with Workers(self.workers) as pool:
                for s in SPLITS:
                    docs, want = sizes[s], wants[s]
                    if not want:
                        continue
                    # Try up to 3x the wanted count (some code has no corruption gofmt catches).
                    stride = max(1, docs // (3 * want))
                    picks = ((line, self.opts.seed * 1_000_003 + k)
                             for k, line in enumerate(_iter_lines(self.work / f"{s}.jsonl"))
                             if k % stride == 0)
                    with (self.work / f"{s}.refine.jsonl").open("w", encoding="utf-8") as fh:
                        for results in pool.map(_refine_task, _batched(picks, 48), batch=1):
                            if made[s] >= want:
                                break  # the rest of the picks are never sent to a worker
                            for doc, why in results:
                                if made[s] >= want:
                                    break
                                if doc is None:
                                    skips.add(why)
                                    continue
                                fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
                                made[s] += 1
                                bar.update(1)
            bar.close()
        result = {"made": dict(made), "skipped": skips.to_json()}
        _write_json(marker, result)
        return result

    def _split_docs(self, split: str) -> Iterator[str]:
        yield from _iter_lines(self.work / f"{split}.jsonl")
        extra = self.work / f"{split}.refine.jsonl"
        if extra.exists():
            yield from _iter_lines(extra)

    # -- step 4 ---------------------------------------------------------------------------------

    def train_tokenizer(self, split_stats: dict) -> Tokenizer:
        """Step 4: fit (or load, with tokenizer_from) the tokenizer; written beside the shards."""
        o = self.opts
        if o.tokenizer_from:
            tok = reuse_tokenizer(o.tokenizer_from)
            (self.out / tokenizer_filename(tok.kind)).write_bytes(tok.to_bytes())
            return tok
        path = self.out / tokenizer_filename(o.tokenizer)
        if (self.work / "tokenizer.done").exists() and path.exists():
            return load_tokenizer(path)
        train_docs = split_stats["splits"]["train"].get("documents", 0)
        if not train_docs:
            raise PrepareError("the train split is empty: no usable Go code in the sources "
                               "(see the skipped counts above)")
        t0 = time.monotonic()
        if o.tokenizer == "spm":
            from hrm_lsp.tokenizer.spm import train_spm

            stride = max(1, -(-split_stats["splits"]["train"].get("bytes", 0) // o.spm_sample_bytes))
            texts = (Document.from_json(json.loads(line)).text()
                     for k, line in enumerate(self._split_docs("train")) if k % stride == 0)
            self.echo(f"training SentencePiece BPE (vocab {o.vocab}) on the train split"
                      + (f" (1 document in {stride})" if stride > 1 else ""))
            try:
                tok = train_spm(texts, o.vocab, threads=self.workers, seed=o.seed)
            except TokenizerError as e:
                raise PrepareError(str(e)) from None
        else:
            from hrm_lsp.tokenizer.byte import ByteTokenizer, NibblePairTable

            base = ByteTokenizer()
            counts = np.zeros(17 * 17, dtype=np.int64)
            for line in self._split_docs("train"):
                ids = np.asarray(base.encode_parts(Document.from_json(json.loads(line)).parts()))
                counts += NibblePairTable.count_pairs(ids)
            tok = ByteTokenizer(NibblePairTable.fit(counts, o.rare_mass, o.acc_window))
        path.write_bytes(tok.to_bytes())
        (self.work / "tokenizer.done").write_text(f"{time.monotonic() - t0:.1f}\n")
        return tok

    # -- step 5 ---------------------------------------------------------------------------------

    def encode(self, tok: Tokenizer, split_stats: dict, refine_stats: dict) -> dict:
        """Step 5: documents -> ids -> shards, checkpointed so a rerun continues."""
        from hrm_lsp.data.shards import ShardState, ShardWriter, dtype_for

        dtype = dtype_for(tok.vocab_size)
        result = {}
        with Workers(self.workers, _init_tokenizer, (tok.to_bytes(),)) as pool:
            for s in SPLITS:
                done = self.work / f"encode-{s}.done.json"
                if done.exists():
                    result[s] = _read_json(done)
                    continue
                state_path = self.work / f"encode-{s}.json"
                state = ShardState.from_json(_read_json(state_path)) if state_path.exists() else None
                writer = ShardWriter(self.out, s, dtype, state, self.opts.shard_tokens)
                skip = writer.state.docs_done
                total = split_stats["splits"][s].get("documents", 0) + refine_stats["made"].get(s, 0)
                bar = _progress(total, f"encode {s}", "doc", self.progress)
                bar.update(skip)
                lines = (line for k, line in enumerate(self._split_docs(s)) if k >= skip)
                for k, ids in enumerate(pool.map(_encode_task, lines), 1):
                    writer.add(ids)
                    bar.update(1)
                    if k % (BATCH * 8) == 0:
                        _write_json(state_path, writer.checkpoint().to_json())
                state = writer.close()
                bar.close()
                result[s] = {"shards": state.shards, "documents": sum(x["documents"] for x in state.shards),
                             "tokens": sum(x["tokens"] for x in state.shards)}
                _write_json(done, result[s])
        return result

    # -- step 6 ---------------------------------------------------------------------------------

    def run(self) -> dict:
        """All steps; returns the manifest (also written to DIR/manifest.json)."""
        from hrm_lsp.data.shards import dtype_for

        t0 = time.monotonic()
        timings: dict[str, float] = {}

        def step(name: str, fn: Callable, *args: Any) -> Any:
            t = time.monotonic()
            self.echo(f"step {name}")
            out = fn(*args)
            timings[name] = round(time.monotonic() - t, 2)
            return out

        plan = self.plan_sources()
        sources = step("collect", self.collect)
        usable = [s for s in sources if not s["error"]]
        if not usable:
            raise PrepareError("no source could be read: " + "; ".join(s["error"] for s in sources))
        split_stats = step("split", self.split, len(plan))
        refine_stats = step("refine", self.refine, split_stats)
        tok = step("tokenizer", self.train_tokenizer, split_stats)
        shards = step("encode", self.encode, tok, split_stats, refine_stats)
        skipped: Counter = Counter()
        for s in sources:
            for reason, v in s["skipped"].items():
                skipped[reason] += v["count"]
        for reason, v in refine_stats["skipped"].items():
            skipped[reason] += v["count"]
        counts: Counter = Counter()
        for s in SPLITS:
            for k, v in split_stats["splits"][s].items():
                if k.startswith(("intent:", "target:", "kind:")):
                    counts[k] += v
        counts["kind:refine"] += sum(refine_stats["made"].values())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tokenizer": {"kind": tok.kind, "file": tokenizer_filename(tok.kind), "sha256": tok.sha256,
                          "vocab_size": tok.vocab_size, "pad_id": tok.pad_id, "eot_id": tok.eot_id},
            "specials": list(symbols.SPECIALS),
            "dtype": str(dtype_for(tok.vocab_size)),
            "splits": {s: {"documents": shards[s]["documents"], "tokens": shards[s]["tokens"],
                           "bytes": split_stats["splits"][s].get("bytes", 0),
                           "units": split_stats["units"][s], "shards": shards[s]["shards"],
                           "refinement_documents": refine_stats["made"].get(s, 0)}
                       for s in SPLITS},
            "sources": sources,
            "counts": {
                "files": sum(s["files"] for s in sources),
                "bytes": sum(s["bytes"] for s in sources),
                "documents_collected": sum(s["documents"] for s in sources),
                "duplicates_removed": split_stats["duplicates"],
                "skipped": dict(sorted(skipped.items())),
                "plans": {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("intent:")},
                "targets": {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("target:")},
                "kinds": {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("kind:")},
            },
            "split_units": split_stats["unit_examples"],
            "holdout": split_stats.get("holdout"),
            "options": to_dict(self.opts),
            "elapsed_s": round(time.monotonic() - t0, 1),
            "timings_s": timings,
        }
        _write_json(self.out / MANIFEST, manifest)
        return manifest


def prepare(sources: PrepareOptions | Iterable[str | Path], out: str | Path, *, workers: int = 0,
            force: bool = False, progress: bool = False, echo: Callable[[str], None] | None = None,
            **options: Any) -> dict:
    """Run ``hrm-lsp prepare``; returns the manifest. Raises PrepareError/ConfigError.

    ``sources`` is either a ``PrepareOptions`` or source paths, with ``PrepareOptions`` fields
    as keyword options (``vocab_size`` is accepted for ``vocab``)."""
    if isinstance(sources, PrepareOptions):
        if options:
            raise ConfigError("pass options either in PrepareOptions or as keywords, not both")
        opts = sources
    else:
        if "vocab_size" in options:
            options["vocab"] = options.pop("vocab_size")
        raw = {"sources": [str(p) for p in sources], **options}
        raw = {k: list(v) if isinstance(v, tuple) else v for k, v in raw.items()}
        opts = load_dataclass(PrepareOptions, raw)
    opts.validate()
    return Preparer(opts, Path(out), workers=workers, force=force, progress=progress, echo=echo).run()


def summary_table(manifest: dict):
    """A rich Table: per source and per split figures, skips by reason, plans by intent."""
    from rich.table import Table

    t = Table(title=f"prepared data ({manifest['tokenizer']['kind']}, vocab {manifest['tokenizer']['vocab_size']})")
    t.add_column("what")
    t.add_column("value", justify="right")
    for s in manifest["sources"]:
        label = f"{s['kind']} {s['repo'] or s['path']}"
        value = s["error"] or f"{s['files']} files, {s['bytes'] / 1e6:.1f} MB, {s['documents']} docs"
        t.add_row(label, value)
    for name, sp in manifest["splits"].items():
        t.add_row(f"split {name}", f"{sp['documents']} docs, {sp['tokens']:,} tokens, {sp['units']} units")
    c = manifest["counts"]
    for k, v in c["duplicates_removed"].items():
        t.add_row(f"duplicates removed ({k})", str(v))
    for k, v in c["skipped"].items():
        t.add_row(f"skipped: {k}", str(v))
    for k, v in c["plans"].items():
        t.add_row(f"plans {k}", str(v))
    for k, v in c["kinds"].items():
        t.add_row(f"documents from {k}", str(v))
    t.add_row("tokenizer sha256", manifest["tokenizer"]["sha256"][:16])
    t.add_row("elapsed", f"{manifest['elapsed_s']} s")
    return t
