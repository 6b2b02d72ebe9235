"""The repository index: ∞-gram tiers over the code a completion sits in (docs/index.md).

Tiers, in priority order (a longer match wins; on equal length the earlier tier wins):

1. ``document``: the open document's text before the cursor and after it, as two separate
   documents so that no match spans the hole; built per request from the live text;
2. ``package``: the other files of the document's directory (open documents' live text
   where the editor has them);
3. ``workspace``: every Go file under the workspace folders (``files.py`` says which); the
   document's own file is excluded at query time;
4. ``stdlib``: the standard library of the Go toolchain in use;
5. ``modcache``: the required modules' sources from ``GOMODCACHE``.

``stdlib`` and ``modcache`` tiers are persisted under the cache directory per Go/module
version and tokenizer and memory-mapped (``store.py``). Everything slow (tokenizing,
suffix sorting, reading the cache) runs on the index's own background thread at a lower OS
priority; a query uses what is ready and never waits for a build.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrm_lsp.index import files as gofiles
from hrm_lsp.index import siblings as sib
from hrm_lsp.index import store
from hrm_lsp.index.mix import default_weights
from hrm_lsp.index.suffix import SuffixIndex, token_dtype
from hrm_lsp.log import get_logger

log = get_logger(__name__)

TIERS = ("document", "package", "workspace", "stdlib", "modcache")
MAX_MATCH = 128  # longer matches add nothing to the estimate and cost query time
CONTEXT_CHARS = 65_536  # the document before the cursor that the document tier indexes
MAX_WORKSPACE_BYTES = 200_000_000
STATIC_ENV = "HRM_LSP_INDEX_STATIC"
MEMO_SIZE = 4096  # estimates memoised per query
SIBLING_PARSE_S = 0.1  # package files a ``siblings`` request parses itself; the rest: background
# Source bytes of the workspace's other packages whose functions ``siblings`` may offer
# (parsed in the background after a build; their text is held in memory, about this much).
SIBLING_WORKSPACE_BYTES = 16 << 20
SIBLING_FILES = 8192  # parsed files kept (package and workspace files together)
_MISSING = object()  # past this the workspace tier stops adding files

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Estimate:
    """What the deepest matching tier says follows the context: the match ``length`` (in
    tokens) and the ``counts`` of each continuation token."""

    tier: str
    length: int
    tokens: np.ndarray  # [K] token ids
    counts: np.ndarray  # [K] occurrences followed by each

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def top(self) -> tuple[int, float]:
        """(most frequent continuation, its share of the occurrences)."""
        i = int(np.argmax(self.counts))
        return int(self.tokens[i]), float(self.counts[i]) / max(1, self.total)


@dataclass
class TierInfo:
    name: str
    state: str = "pending"  # pending | building | ready | failed | off
    files: int = 0
    tokens: int = 0
    bytes: int = 0
    seconds: float = 0.0
    message: str = ""
    persisted: str = ""  # directory of a persisted tier

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.name, "state": self.state, "files": self.files,
                "tokens": self.tokens, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "message": self.message, "persisted": self.persisted}


@dataclass
class _Workspace:
    index: SuffixIndex
    paths: dict[str, int]  # file path -> document number


@dataclass
class _Static:
    name: str
    index: SuffixIndex


class Query:
    """The tiers as they were when a request started, plus that request's document tier."""

    def __init__(self, owner: RepoIndex, prefix_ids: list[int], document: SuffixIndex,
                 package: SuffixIndex | None, workspace: _Workspace | None, exclude: str | None,
                 static: list[_Static]) -> None:
        self.prefix_ids = prefix_ids
        self.tok = owner.tok
        self.bonus = default_weights().tier_bonus
        self._memo: dict = {}
        self._lengths: dict = {}  # context -> each tier's match length (or a bound on it)
        self._tiers: list[tuple[str, SuffixIndex, int | None]] = [("document", document, None)]
        if package is not None:
            self._tiers.append(("package", package, None))
        if workspace is not None:
            self._tiers.append(("workspace", workspace.index,
                                workspace.paths.get(exclude) if exclude else None))
        self._tiers += [(s.name, s.index, None) for s in static]

    @property
    def tiers(self) -> list[str]:
        return [name for name, _, _ in self._tiers]

    def matches(self, ids: Sequence[int]) -> list[Estimate]:
        """Every tier's longest match of ``ids``'s end and what follows it (tiers without
        a match are left out)."""
        out = []
        for name, index, exclude in self._tiers:
            m = index.longest_match(ids, MAX_MATCH, exclude_doc=exclude)
            if m.length:
                toks, counts = index.next_counts(m, exclude_doc=exclude)
                if toks.size:
                    out.append(Estimate(name, m.length, toks, counts))
        return out

    def estimate(self, ids: Sequence[int], bonus: Mapping[str, float] | None = None,
                 allowed: np.ndarray | None = None) -> Estimate | None:
        """The next-token estimate of the tier whose match is longest once each tier's
        ``bonus`` (in tokens) is added: a match in the user's own file or package is worth
        a longer one in the standard library. The bonuses are fitted with the mixing weights
        (``mix.py``); ties go to the earlier tier. With ``allowed`` (token healing) only
        those continuations count, and a tier backs off to shorter matches until one has
        them."""
        bonus = self.bonus if bonus is None else bonus
        # One request asks for the same contexts many times (candidates, their rescoring,
        # drafts): answers are memoised per query (the tiers do not change under it).
        key = (tuple(ids[-MAX_MATCH:]), tuple(sorted(bonus.items())),
               None if allowed is None else allowed.tobytes())
        hit = self._memo.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        best = self._estimate(ids, bonus, allowed)
        if len(self._memo) < MEMO_SIZE:
            self._memo[key] = best
        return best

    def _estimate(self, ids, bonus, allowed) -> Estimate | None:
        best, score = None, 0.0
        # A tier's match for ``ids`` is at most one token longer than its match for ``ids``
        # without the last token (that shorter suffix occurs, followed by it): a tier whose
        # bound plus bonus cannot beat the best so far is not searched. Decoding asks for
        # each context after the one before it, so the bounds are usually known.
        prev = self._lengths.get(tuple(ids[-MAX_MATCH - 1:-1])) if len(ids) > 1 else None
        lengths = []
        for i, (name, index, exclude) in enumerate(self._tiers):
            if prev is not None and best is not None and \
                    min(MAX_MATCH, prev[i] + 1) + bonus.get(name, 0.0) <= score:
                lengths.append(min(MAX_MATCH, prev[i] + 1))
                continue
            limit = MAX_MATCH
            for attempt in range(8 if allowed is not None else 1):
                m = index.longest_match(ids, limit, exclude_doc=exclude)
                if not attempt:
                    lengths.append(m.length)
                if not m.length:
                    break
                toks, counts = index.next_counts(m, exclude_doc=exclude)
                if allowed is not None:
                    keep = np.isin(toks, allowed)
                    toks, counts = toks[keep], counts[keep]
                if toks.size:
                    sc = m.length + bonus.get(name, 0.0)
                    if best is None or sc > score:
                        best, score = Estimate(name, m.length, toks, counts), sc
                    break
                limit = m.length - 1
        if len(self._lengths) < MEMO_SIZE:
            self._lengths[tuple(ids[-MAX_MATCH:])] = lengths
        return best

    def continuation(self, ids: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` tokens the index expects after ``ids`` (greedy ∞-gram): a draft."""
        out: list[int] = []
        ctx = list(ids)
        for _ in range(k):
            e = self.estimate(ctx)
            if e is None:
                break
            t, _ = e.top()
            out.append(t)
            ctx.append(t)
        return out


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class RepoIndex:
    """All tiers for one workspace; see the module docstring. Knows no editor."""

    def __init__(self, tokenizer, *, cache_dir: Path | None = None, goroot: Path | None = None,
                 stdlib: bool | None = None, modcache: bool | None = None,
                 modcache_dir: Path | None = None,
                 max_file_bytes: int = gofiles.MAX_FILE_BYTES,
                 max_workspace_bytes: int = MAX_WORKSPACE_BYTES, background: bool = True) -> None:
        self.tok = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.dtype = token_dtype(self.vocab_size)
        if cache_dir is None:
            from hrm_lsp import paths

            cache_dir = paths.cache_dir() / "index"
        self.cache_dir = Path(cache_dir)
        self.goroot = goroot
        # HRM_LSP_INDEX_STATIC=off: no stdlib/module-cache tiers unless asked for (the test
        # suite sets it: every test tokenizer would otherwise index the whole stdlib).
        static = os.environ.get(STATIC_ENV, "").lower() not in ("off", "0", "false", "no")
        stdlib = static if stdlib is None else stdlib
        modcache = static if modcache is None else modcache
        self.use_stdlib, self.use_modcache = stdlib, modcache
        self.modcache_dir = modcache_dir
        self.max_file_bytes, self.max_workspace_bytes = max_file_bytes, max_workspace_bytes
        self.folders: list[Path] = []
        self.info = {t: TierInfo(t) for t in TIERS}
        self.info["document"].state = "ready"
        self.info["package"].state = "ready"
        if not stdlib:
            self.info["stdlib"].state = "off"
        if not modcache:
            self.info["modcache"].state = "off"
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        # Per-file token cache: path -> (disk key or None for live text, ids).
        self._files: dict[str, tuple[Any, np.ndarray]] = {}
        self._live: dict[str, str] = {}  # open documents' text, by path
        self._workspace: _Workspace | None = None
        self._static: list[_Static] = []
        self._packages: dict[tuple[str, str], SuffixIndex] = {}
        self._package_pending: set[tuple[str, str]] = set()
        self._dirty = False
        self._functions = sib.FunctionCache(SIBLING_FILES)
        self._parsing_workspace = False
        # Bumped whenever a tier changes: answers computed before may differ now (the
        # server keys its result cache on it).
        self.version = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hrm-index") if background else None
        self.ready = threading.Event()  # set when the first full build has finished

    # -- building ----------------------------------------------------------------------

    def _submit(self, fn: Callable, *args: Any) -> None:
        if self._pool is None:
            fn(*args)
            return

        def run() -> None:
            try:  # below the generation thread: indexing must not slow typing down
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except (AttributeError, OSError):
                pass
            try:
                fn(*args)
            except Exception as e:  # never let a background build take the server down
                log.exception("index: %s failed", getattr(fn, "__name__", fn))
                self.warnings.append(f"index build failed: {e}")

        self._pool.submit(run)

    def start(self, folders: Sequence[str | Path], progress: Progress | None = None) -> None:
        """Index ``folders`` (and the static tiers) in the background."""
        self.folders = [Path(f) for f in folders if Path(f).is_dir()]
        self._submit(self.build, progress)

    def build(self, progress: Progress | None = None) -> None:
        """Build every tier now (blocking; ``start`` runs this in the background)."""
        report = progress or (lambda *_: None)
        report("indexing workspace", 0)
        self._build_workspace()
        report(f"workspace: {self.info['workspace'].tokens} tokens", 40)
        if self.use_stdlib:
            self._build_stdlib(report)
        report("stdlib ready", 80)
        if self.use_modcache:
            self._build_modcache()
        self._parse_workspace_functions()
        self.ready.set()
        report(self.summary(), 100)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _tokens(self, path: str) -> np.ndarray | None:
        """Token ids of a file: the live text when open, else the disk text (cached)."""
        live = self._live.get(path)
        if live is not None:
            hit = self._files.get(path)
            if hit is not None and hit[0] == ("live", hash(live)):
                return hit[1]
            ids = np.asarray(self.tok.encode(live), dtype=self.dtype)
            self._files[path] = (("live", hash(live)), ids)
            return ids
        p = Path(path)
        key = _file_key(p)
        hit = self._files.get(path)
        if key is not None and hit is not None and hit[0] == key:
            return hit[1]
        text, why = gofiles.read_go_file(p, self.max_file_bytes)
        if text is None:
            self._files.pop(path, None)
            return None
        ids = np.asarray(self.tok.encode(text), dtype=self.dtype)
        self._files[path] = (key, ids)
        return ids

    def _build_workspace(self) -> None:
        info = self.info["workspace"]
        info.state = "building"
        t0 = time.monotonic()
        docs, paths, size = [], {}, 0
        seen = set()
        for folder in self.folders:
            for p in gofiles.walk_go_files(folder):
                key = str(p)
                if key in seen:
                    continue
                seen.add(key)
                if size > self.max_workspace_bytes:
                    info.message = f"stopped at {self.max_workspace_bytes} bytes"
                    break
                ids = self._tokens(key)
                if ids is None:
                    continue
                paths[key] = len(docs)
                docs.append(ids)
                try:
                    size += p.stat().st_size
                except OSError:
                    pass
        for key in list(self._files):  # forget files that are gone
            if key not in seen and key not in self._live:
                self._files.pop(key, None)
        index = SuffixIndex.build(docs, self.vocab_size)
        with self._lock:
            self._workspace = _Workspace(index, paths)
            self._packages.clear()
            self._dirty = False
            self.version += 1
        info.files, info.tokens, info.bytes = len(docs), index.n_tokens, size
        info.seconds = time.monotonic() - t0
        info.state = "ready"

    def _tier_dir(self, key: str) -> Path:
        return self.cache_dir / f"{key}-{self.tok.sha256[:16]}"

    def _static_tier(self, name: str, key: str, file_list: Callable[[], list[Path]]) -> _Static | None:
        """Load a persisted tier, or build and persist it (rebuilding a corrupt one)."""
        directory = self._tier_dir(key)
        expect = {"key": key, "tokenizer": self.tok.sha256}
        if directory.exists():
            try:
                index, meta = store.load(directory, expect)
                return _Static(name, index)
            except store.StoreError as e:
                msg = f"index: persisted {name} tier is unusable ({e}); rebuilding"
                log.warning("%s", msg)
                self.warnings.append(msg)
        docs = []
        for p in file_list():
            text, _ = gofiles.read_go_file(p, self.max_file_bytes)
            if text is not None:
                docs.append(np.asarray(self.tok.encode(text), dtype=self.dtype))
        index = SuffixIndex.build(docs, self.vocab_size)
        try:
            store.save(index, directory, expect)
            index, _ = store.load(directory, expect)  # serve the memory-mapped copy
        except (OSError, store.StoreError) as e:
            log.warning("index: could not persist the %s tier in %s (%s)", name, directory, e)
        return _Static(name, index)

    def _goroot(self) -> Path | None:
        if self.goroot is not None:
            return Path(self.goroot)
        try:
            from hrm_lsp.validators.go import find_go

            return find_go().goroot
        except Exception as e:
            self.info["stdlib"].message = f"no Go toolchain: {e}"
            return None

    def _build_stdlib(self, report: Progress) -> None:
        info = self.info["stdlib"]
        info.state = "building"
        t0 = time.monotonic()
        root = self._goroot()
        if root is None or not (root / "src").is_dir():
            info.state = "off"
            info.message = info.message or f"no standard library sources under {root}"
            return
        version = (root / "VERSION").read_text().split()[0] if (root / "VERSION").is_file() else \
            hashlib.sha256(str(root).encode()).hexdigest()[:12]
        cached = self._tier_dir(f"stdlib-{version}").exists()
        report("reading the standard library index" if cached else
               "indexing the standard library (once per Go version)", 45)
        tier = self._static_tier("stdlib", f"stdlib-{version}",
                                 lambda: list(gofiles.stdlib_files(root)))
        with self._lock:
            self._static = [s for s in self._static if s.name != "stdlib"] + [tier]
            self.version += 1
        info.tokens, info.files = tier.index.n_tokens, tier.index.n_docs
        info.bytes = int(tier.index.rev.nbytes + tier.index.sa.nbytes)
        info.persisted = str(self.cache_dir)
        info.seconds = time.monotonic() - t0
        info.state = "ready"

    def _build_modcache(self) -> None:
        info = self.info["modcache"]
        info.state = "building"
        t0 = time.monotonic()
        mods = gofiles.module_dirs(self.folders, self.modcache_dir)
        tiers = []
        for name, d in mods:
            key = "mod-" + gofiles.escape_module_path(name).replace("/", "_")
            tiers.append(self._static_tier("modcache", key,
                                           lambda d=d: list(gofiles.walk_go_files(d, tests=False))))
        with self._lock:
            self._static = [s for s in self._static if s.name != "modcache"] + tiers
            self.version += 1
        info.files = len(tiers)
        info.tokens = sum(t.index.n_tokens for t in tiers)
        info.message = ", ".join(n for n, _ in mods) if mods else "no required modules in the module cache"
        info.seconds = time.monotonic() - t0
        info.state = "ready"

    # -- keeping current ---------------------------------------------------------------

    def set_live(self, path: str, text: str | None) -> None:
        """The editor's text of an open document (None: closed, use the disk again)."""
        if text is None:
            self._live.pop(path, None)
        else:
            self._live[path] = text
        self._invalidate_package(path)

    def file_changed(self, path: str) -> None:
        """A file was saved, created or deleted on disk: refresh the workspace tier soon."""
        self._invalidate_package(path)
        if not self._dirty:
            self._dirty = True
            self._submit(self._refresh)

    def _refresh(self) -> None:
        time.sleep(0.2)  # let a burst of file events arrive first (background thread only)
        if self._dirty:
            self._build_workspace()
            self._parse_workspace_functions()

    def _invalidate_package(self, path: str) -> None:
        """Package tiers that hold ``path`` (those of its siblings, not its own) are stale."""
        d = str(Path(path).parent)
        with self._lock:
            for key in [k for k in self._packages if k[0] == d and k[1] != path]:
                del self._packages[key]

    def _package(self, path: str | None) -> SuffixIndex | None:
        """The package tier for ``path`` if built; else schedule it and return None."""
        if not path:
            return None
        key = (str(Path(path).parent), path)
        with self._lock:
            hit = self._packages.get(key)
            if hit is not None or key in self._package_pending:
                return hit
            self._package_pending.add(key)
        self._submit(self._build_package, key)
        with self._lock:  # a synchronous index (background=False) has built it now
            return self._packages.get(key)

    def _build_package(self, key: tuple[str, str]) -> None:
        d, own = key
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".go"))
        except OSError:
            names = []
        docs = []
        for n in names:
            p = os.path.join(d, n)
            if p == own:
                continue
            ids = self._tokens(p)
            if ids is not None:
                docs.append(ids)
        index = SuffixIndex.build(docs, self.vocab_size)
        with self._lock:
            self._packages[key] = index
            self._package_pending.discard(key)
            self.version += 1

    def prepare(self, path: str | None) -> None:
        """Build the package tier of ``path`` ahead of its first request (didOpen), and
        parse its package's functions for ``siblings``."""
        self._package(path)
        if path:
            self._submit(self._parse_functions, str(Path(path)))

    # -- queries -----------------------------------------------------------------------

    def query(self, text: str, offset: int, path: str | None = None) -> Query:
        """A ``Query`` for a cursor: the document tier from ``text`` around ``offset`` plus
        whatever other tiers are ready now."""
        before = text[max(0, offset - CONTEXT_CHARS): offset]
        after = text[offset: offset + CONTEXT_CHARS // 4]
        prefix_ids = self.tok.encode(before) if before else []
        suffix_ids = self.tok.encode(after) if after else []
        document = SuffixIndex.build([prefix_ids, suffix_ids], self.vocab_size)
        key = str(Path(path)) if path else None
        with self._lock:
            workspace, static = self._workspace, list(self._static)
        return Query(self, prefix_ids, document, self._package(key), workspace, key, static)

    def siblings(self, text: str, offset: int, path: str | None = None,
                 k: int = 3) -> list[sib.Sibling]:
        """Up to ``k`` bodies of the functions of ``text``, of the other files of its
        package (live text where open) and of the workspace's other packages (up to
        ``SIBLING_WORKSPACE_BYTES`` of their source) for the empty function body at
        ``offset``, best first (``siblings.py``); [] when ``offset`` is not in one.
        Package files not parsed yet are parsed here for at most ``SIBLING_PARSE_S``; the
        rest, and workspace files, are parsed in the background (``prepare`` starts that on
        didOpen, every workspace build after it) and left out of this answer."""
        own_functions = sib.file_functions(text)
        target = sib.empty_function(text, offset, own_functions)
        if target is None:
            return []
        candidates: list[tuple[str | None, sib.FunctionBody]] = [
            (None, fn) for fn in own_functions if fn.start != target.start]
        own = str(Path(path)) if path else None
        if own:
            stop = time.monotonic() + SIBLING_PARSE_S
            deferred = False
            for p, key, text_of in self._package_sources(own):
                fns = self._functions.peek(p, key)
                if fns is None:
                    if time.monotonic() > stop:
                        deferred = True
                        continue
                    fns = self._functions.get(p, key, text_of)
                candidates += [(p, fn) for fn in fns]
            if deferred:
                self._submit(self._parse_functions, own)
            missing = False
            for p, key, _ in self._workspace_sources(own):
                fns = self._functions.peek(p, key)
                if fns is None:
                    missing = True
                    continue
                candidates += [(p, fn) for fn in fns]
            if missing and not self._parsing_workspace:
                self._parsing_workspace = True
                self._submit(self._parse_workspace_functions)
        return sib.rank(target, candidates, k, home=os.path.dirname(own) if own else None)

    def _package_sources(self, own: str):
        """(path, version key, text reader) of each other Go file in ``own``'s directory; a
        non-test file's package leaves ``_test.go`` files out (it cannot use what only tests
        define)."""
        d = os.path.dirname(own)
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".go"))
        except OSError:
            return
        tests = own.endswith("_test.go")
        for n in names:
            p = os.path.join(d, n)
            if p == own or (n.endswith("_test.go") and not tests):
                continue
            live = self._live.get(p)
            key = ("live", hash(live)) if live is not None else _file_key(Path(p))
            yield p, key, functools.partial(self._source_text, p, live)

    def _workspace_sources(self, own: str | None = None):
        """(path, version key, text reader) of the workspace tier's non-test Go files outside
        ``own``'s directory, in the tier's order, up to ``SIBLING_WORKSPACE_BYTES``."""
        with self._lock:
            ws = self._workspace
        if ws is None:
            return
        home = os.path.dirname(os.path.abspath(own)) if own else None
        size = 0
        for p in ws.paths:
            if p.endswith("_test.go") or (home and os.path.dirname(os.path.abspath(p)) == home):
                continue
            live = self._live.get(p)
            if live is not None:
                size += len(live)
                key: Any = ("live", hash(live))
            else:
                hit = self._files.get(p)
                key = hit[0] if hit is not None else None
                if key is None:
                    continue
                size += key[1]
            if size > SIBLING_WORKSPACE_BYTES:
                return
            yield p, key, functools.partial(self._source_text, p, live)

    def _source_text(self, path: str, live: str | None) -> str | None:
        """A package or workspace file's text for parsing: the editor's, else the disk's."""
        return live if live is not None else gofiles.read_go_file(Path(path), self.max_file_bytes)[0]

    def _parse_workspace_functions(self) -> None:
        """Parse the functions of the workspace's files (background: ``siblings``)."""
        try:
            for p, key, text_of in self._workspace_sources():
                self._functions.get(p, key, text_of)
        finally:
            self._parsing_workspace = False

    def _parse_functions(self, own: str) -> None:
        """Parse the functions of ``own``'s package files (background: ``siblings``)."""
        for p, key, text_of in self._package_sources(own):
            self._functions.get(p, key, text_of)

    # -- reports -----------------------------------------------------------------------

    def summary(self) -> str:
        parts = [f"{i.name} {i.tokens} tokens" for i in self.info.values()
                 if i.state == "ready" and i.name not in ("document", "package")]
        return "index ready: " + (", ".join(parts) or "empty")

    def report(self) -> dict[str, Any]:
        return {"tiers": [i.to_dict() for i in self.info.values()],
                "ready": self.ready.is_set(), "warnings": list(self.warnings),
                "folders": [str(f) for f in self.folders]}

