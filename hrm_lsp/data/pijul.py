"""pijul change histories: the same ``(ChangeRecord, changed_lines)`` stream as git's history.

A pijul repository (a directory holding ``.pijul/``) is mined with the ``pijul`` command line
(1.0 series). The user's repository is never written to, and pijul never even opens it: its
``.pijul`` directory is copied into a temporary directory and every pijul command runs there:

1. ``pijul reset`` writes the recorded state of the current channel as a working copy;
2. ``pijul log --hash-only --limit 2`` names the newest change (and whether an older one is left);
3. ``pijul change HASH`` gives its header (TOML: message, description, timestamp) and hunks,
   whose headers name the touched paths (``Edit in "a.go":12 …``, ``File addition: "a.go" in
   "pkg" …``, ``Moved: …``, ``File deletion: …``); the touched ``.go`` files are read from
   the working copy (the state *after* the change);
4. ``pijul unrecord HASH`` removes the change from the copy's channel; the working copy is
   emptied and ``pijul reset`` writes it again (the state *before* the change), where the same
   paths are read again. (``unrecord --reset`` is not used: as libpijul's unrecord code reads,
   it leaves the files the change added on disk, untracked; ``reset`` writes every tracked
   file missing from disk.)

The newest change always has no dependents in its channel, so unrecording newest first always
works; the walk is newest first like ``git rev-list``, one change at a time (memory does not
grow with the history). A file whose path appears only after the change is matched to a file
that disappeared in the same change when their lines are at least half alike (a move), like
``git diff -M``. ``--since`` compares with the change timestamps and stops at the first older
change (the log is in application order, which is close to time order).

The command-line formats parsed here were read from pijul's source (``pijul log``,
``pijul change``: libpijul's printable hunks); this module was not run against a real
``pijul`` binary where it was written (docs/data.md says so).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from hrm_lsp.data.sources import (
    DEFAULT_MAX_FILE_BYTES,
    ChangeRecord,
    Skips,
    SourceError,
    _changed_lines,
    _git_toplevel,
    _skip_dir,
    check_go_bytes,
)
from hrm_lsp.log import get_logger

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = get_logger(__name__)
UTC = timezone.utc

PIJUL_DIR = ".pijul"
COMMAND_TIMEOUT = 300.0  # seconds for one pijul command
MOVE_SIMILARITY = 0.5  # lines alike for "the same file under a new path" (git -M's default)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SECTION = re.compile(r"^# (Dependencies|Hunks)[ \t]*\r?$", re.MULTILINE)
_HUNK_HEAD = re.compile(r"^(\d+)\.[ \t]+(.*?)\r?$")
_HASH = re.compile(r"^[A-Z2-7]{20,}$")  # base32 change hashes (53 characters today)
# pijul's conflict markers in an output file: ">>>>>>> 1 [AbCdEfGh]", "=======", "<<<<<<< 1".
_CONFLICT = re.compile(r"^>{7} \d+.*^<{7} \d+", re.MULTILINE | re.DOTALL)
# Hunk kinds whose header is `<prefix> "path"…`; the value is what the hunk does to the path.
_PATH_HUNKS = (
    ("File addition:", "add"),
    ("File deletion:", "delete"),
    ("File un-deletion:", "undelete"),
    ("Moved:", "move"),
    ("Edit in", "edit"),
    ("Replacement in", "edit"),
    ("Solving a name conflict in", "conflict"),
    ("Un-solving a name conflict in", "conflict"),
    ("Solving an order conflict in", "conflict"),
    ("Un-solving an order conflict in", "conflict"),
    ("Resurrecting zombie lines in", "conflict"),
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "\\": "\\", '"': '"'}


class PijulFormatError(ValueError):
    """Output of a pijul command that does not have the expected shape."""


@dataclass(frozen=True)
class PijulHunk:
    """One hunk of a change: what it does (add, delete, undelete, move, edit, conflict, root)
    and the repository-relative path it names ("" for root hunks); ``is_dir`` for directories."""

    op: str
    path: str
    is_dir: bool = False


@dataclass(frozen=True)
class PijulChange:
    """What ``pijul change HASH`` says about one change."""

    hash: str
    message: str  # the message, then the description after a blank line when there is one
    timestamp: datetime | None
    hunks: tuple[PijulHunk, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------
# finding repositories


def pijul_root(path: Path) -> Path | None:
    """The nearest directory at or above ``path`` that holds a ``.pijul`` directory, or None."""
    p = Path(path).resolve()
    for d in (p, *p.parents) if p.is_dir() else p.parents:
        if (d / PIJUL_DIR).is_dir():
            return d
    return None


def history_backend(path: Path) -> str:
    """Which history to mine for a source directory: "pijul" when the nearest enclosing
    repository is a pijul one, else "git" (also when there is none: git's check then reports
    it). A directory managed by both (git-pijul users) is mined with git."""
    pj = pijul_root(path)
    if pj is None:
        return "git"
    top = _git_toplevel(Path(path))
    if top is not None and len(top.resolve().parts) >= len(pj.parts):
        return "git"
    return "pijul"


def find_pijul() -> str | None:
    """The ``pijul`` executable on PATH, or None."""
    return shutil.which("pijul")


def check_pijul_repo(repo: Path, exe: str | None = None) -> tuple[Path, str]:
    """(repository root, pijul executable) for ``repo``; SourceError with the reason otherwise."""
    repo = Path(repo)
    if not repo.is_dir():
        raise SourceError(f"{repo}: not a directory")
    root = pijul_root(repo)
    if root is None:
        raise SourceError(f"{repo}: not a pijul repository (no {PIJUL_DIR}/ directory above it)")
    if not (root / PIJUL_DIR / "pristine").is_dir():
        raise SourceError(f"{root}: {PIJUL_DIR}/ has no pristine/ directory; not a usable pijul "
                          "repository")
    exe = exe or find_pijul()
    if exe is None:
        raise SourceError(f"{root}: a pijul repository, but the `pijul` command is not on PATH, "
                          "so its change history is skipped (its files are still read as a "
                          "snapshot); install pijul 1.0 to mine it")
    return root, exe


# ---------------------------------------------------------------------------------------------
# parsing pijul's output


def _strip(text: str) -> str:
    return _ANSI.sub("", text)


def read_quoted(s: str, i: int) -> tuple[str, int]:
    """Decode the double-quoted string starting at ``s[i]`` with pijul's escapes (``\\n \\r \\t
    \\b \\f \\\\ \\"``); returns the text and the index just after the closing quote."""
    if i >= len(s) or s[i] != '"':
        raise PijulFormatError(f"expected a quoted string at column {i}: {s!r}")
    out: list[str] = []
    j = i + 1
    while j < len(s):
        c = s[j]
        if c == '"':
            return "".join(out), j + 1
        if c == "\\":
            if j + 1 >= len(s) or s[j + 1] not in _ESCAPES:
                raise PijulFormatError(f"unknown escape at column {j}: {s!r}")
            out.append(_ESCAPES[s[j + 1]])
            j += 2
            continue
        out.append(c)
        j += 1
    raise PijulFormatError(f"unterminated quoted string: {s!r}")


def parse_hunk_header(rest: str) -> PijulHunk | None:
    """One hunk header without its number (``Edit in "a.go":3 2.15 "UTF-8"``); None for a kind
    this reader does not know (it names no path we could use)."""
    rest = rest.strip()
    if rest.startswith(("Root add", "Root del")):
        return PijulHunk("root", "")
    for prefix, op in _PATH_HUNKS:
        if not rest.startswith(prefix):
            continue
        i = len(prefix)
        while i < len(rest) and rest[i] in " \t":
            i += 1
        path, j = read_quoted(rest, i)
        if op != "add":
            return PijulHunk(op, path)
        # `File addition: "name" in "parent"[ +dx| +x] "encoding"`: the path is parent/name.
        m = re.match(r"[ \t]+in[ \t]+", rest[j:])
        if not m:
            raise PijulFormatError(f"file addition without its parent directory: {rest!r}")
        parent, k = read_quoted(rest, j + m.end())
        is_dir = rest[k:].lstrip().startswith("+dx")
        return PijulHunk("add", f"{parent}/{path}" if parent else path, is_dir)
    return None


def parse_change_text(text: str, hash_: str = "") -> PijulChange:
    """Parse the output of ``pijul change HASH``: a TOML header, ``# Dependencies`` and
    ``# Hunks`` sections (format of libpijul's ``change/text_changes.rs``)."""
    text = _strip(text)
    m = _SECTION.search(text)
    head = text[: m.start()] if m else text
    try:
        header = tomllib.loads(head)
    except tomllib.TOMLDecodeError as e:
        raise PijulFormatError(f"change {hash_ or '?'}: header is not TOML ({e})") from None
    if not isinstance(header.get("message", ""), str):
        raise PijulFormatError(f"change {hash_ or '?'}: message is not a string")
    message = header.get("message", "")
    desc = header.get("description")
    if isinstance(desc, str) and desc.strip():
        message = f"{message.rstrip()}\n\n{desc.strip()}"
    hunks: list[PijulHunk] = []
    unknown = 0
    h = re.search(r"^# Hunks[ \t]*\r?$", text, re.MULTILINE)
    if h:
        for line in text[h.end():].splitlines():
            # Content lines start with "+", "-" or "\", edges with flags or ":", contexts with
            # spaces or "up": only hunk headers start with "<number>.".
            hm = _HUNK_HEAD.match(line)
            if not hm:
                continue
            hunk = parse_hunk_header(hm.group(2))
            if hunk is None:
                unknown += 1
                log.debug("pijul change %s: unknown hunk %r", hash_, line)
            else:
                hunks.append(hunk)
        if unknown and not hunks:
            raise PijulFormatError(f"change {hash_ or '?'}: none of its {unknown} hunk headers "
                                   "is a kind this reader knows")
    return PijulChange(hash_, message, _timestamp(header.get("timestamp")), tuple(hunks))


def _iso(s: str) -> datetime:
    """``datetime.fromisoformat`` for what chrono prints on every supported Python: a trailing
    ``Z`` and nanoseconds (3.10 takes neither); naive times are UTC."""
    s = s.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    t = datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _timestamp(v: object) -> datetime | None:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, str) and v.strip():
        try:
            return _iso(v)
        except ValueError:
            return None
    return None


def parse_hash_list(text: str) -> list[str]:
    """Change hashes from ``pijul log --hash-only``, newest first; PijulFormatError on any other
    line."""
    out = []
    for line in _strip(text).splitlines():
        line = line.strip()
        if not line:
            continue
        if not _HASH.match(line):
            raise PijulFormatError(f"`pijul log --hash-only` printed {line!r}, not a change hash")
        out.append(line)
    return out


_RELATIVE = re.compile(r"^(\d+)\s*(second|minute|hour|day|week|month|year)s?\s+ago$", re.I)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
                 "month": 30 * 86400, "year": 365 * 86400}


def parse_since(s: str, now: datetime | None = None) -> datetime:
    """``--since`` for pijul histories: an ISO date or date-time (UTC unless it says otherwise),
    ``@SECONDS`` since the epoch, or ``N units ago`` (seconds … years; a month is 30 days)."""
    t = s.strip()
    now = now or datetime.now(UTC)
    if t.startswith("@") and t[1:].isdigit():
        return datetime.fromtimestamp(int(t[1:]), UTC)
    m = _RELATIVE.match(t)
    if m:
        return now - timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()])
    try:
        if len(t) == 10:
            d = date.fromisoformat(t)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        v = _iso(t)
    except ValueError:
        raise SourceError(f"--since {s!r}: for pijul histories give an ISO date (2024-03-01), a "
                          "date-time (2024-03-01T12:00:00+02:00), @SECONDS or 'N days ago'") from None
    return v


# ---------------------------------------------------------------------------------------------
# records of one change


def _similarity(a: str, b: str) -> float:
    sm = difflib.SequenceMatcher(None, a.splitlines(), b.splitlines(), autojunk=False)
    if sm.real_quick_ratio() < MOVE_SIMILARITY or sm.quick_ratio() < MOVE_SIMILARITY:
        return 0.0
    return sm.ratio()


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def change_records(change: PijulChange, after: Mapping[str, bytes | str],
                   before: Mapping[str, bytes | str], skips: Skips, *, name: str,
                   prefix: str = "", include_testdata: bool = False,
                   max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                   max_files_per_commit: int = 50) -> list[tuple[ChangeRecord, int]]:
    """The records of one change, from the ``.go`` files of the states after and before it.

    ``after``/``before`` map repository-relative paths (every ``.go`` file under ``prefix`` in
    that state) to their bytes, or to a skip reason (a symlink). Paths the change's hunks name
    are the changed files; a path new in ``after`` takes as its before-version the file that
    disappeared in the same change and looks most like it (a move), else it is a new file."""
    where0 = f"{name}@{change.hash[:12]}"
    touched: list[str] = []
    for hunk in change.hunks:
        p = hunk.path
        if hunk.is_dir or not p.endswith(".go") or not p.startswith(prefix) or p in touched:
            continue
        touched.append(p)
    gone = [p for p in before if p not in after]  # deleted, or moved away, by this change
    claimed: set[str] = set()
    plan: list[tuple[str, str | None]] = []  # (path after, path before or None for a new file)
    for p in touched:
        if p not in after:
            continue
        if any(_skip_dir(part, include_testdata) for part in p.split("/")[:-1]):
            skips.add("vendored/testdata/hidden path", f"{name}:{p}")
            continue
        if p in before:
            plan.append((p, p))
            continue
        src = None
        a = after[p]
        if isinstance(a, bytes) and gone:
            a_text = _decode(a)
            # Same file name first: the usual move is to another directory.
            cands = sorted((g for g in gone if g not in claimed and isinstance(before[g], bytes)),
                           key=lambda g: (g.rsplit("/", 1)[-1] != p.rsplit("/", 1)[-1], g))
            best = 0.0
            for g in cands[:20]:
                s = _similarity(_decode(before[g]), a_text)  # type: ignore[arg-type]
                if s >= MOVE_SIMILARITY and s > best:
                    best, src = s, g
        if src is not None:
            claimed.add(src)
        plan.append((p, src))
    for p in touched:
        if p not in after and p in before and p not in claimed:
            skips.add("file deleted", f"{where0}:{p}")
    if len(plan) > max_files_per_commit:
        skips.add("huge commit (files beyond the per-commit limit)", where0,
                  len(plan) - max_files_per_commit)
        plan = plan[:max_files_per_commit]
    out: list[tuple[ChangeRecord, int]] = []
    for p, src in plan:
        where = f"{where0}:{p}"
        a = after[p]
        if isinstance(a, str):
            skips.add(a, where)
            continue
        after_t, why = check_go_bytes(a, max_bytes)
        if after_t is None:
            skips.add(why, where)
            continue
        if _CONFLICT.search(after_t):
            skips.add("pijul conflict markers", where)
            continue
        before_t = ""
        if src is not None:
            b = before[src]
            if isinstance(b, str):
                skips.add(f"{b} (before)", where)
                continue
            bt, why = check_go_bytes(b, max_bytes)
            if bt is None:
                skips.add(f"{why} (before)", where)
                continue
            before_t = bt
        if before_t == after_t:
            skips.add("no content change (mode or rename only)", where)
            continue
        out.append((ChangeRecord(name, change.hash, p, before_t, after_t, change.message, "pijul"),
                    _changed_lines(before_t, after_t)))
    return out


# ---------------------------------------------------------------------------------------------
# walking a repository


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Plain, non-interactive output: no colours, no pager, never an editor.
    env.update({"NO_COLOR": "1", "TERM": "dumb", "PAGER": "cat", "NOPAGER": "1",
                "EDITOR": "true", "VISUAL": "true"})
    return env


def _pijul(exe: str, work: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([exe, *args], cwd=work, capture_output=True,
                              stdin=subprocess.DEVNULL, env=_env(), timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess([exe, *args], 124, b"",
                                           f"timed out after {COMMAND_TIMEOUT:.0f} s".encode())
    except OSError as e:  # removed or not executable since it was found
        return subprocess.CompletedProcess([exe, *args], 127, b"", f"cannot run {exe}: {e}".encode())


def _err(r: subprocess.CompletedProcess) -> str:
    msg = _strip(r.stderr.decode("utf-8", "replace")).strip().splitlines()
    return msg[-1] if msg else f"exit status {r.returncode}"


def _empty_working_copy(work: Path) -> None:
    """Remove everything but ``.pijul`` from the temporary working copy, so that the next
    ``pijul reset`` writes exactly the files of the channel (no leftovers of a later state)."""
    for entry in os.scandir(work):
        if entry.name == PIJUL_DIR:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _go_files(work: Path, prefix: str) -> set[str]:
    """Repository-relative paths of the ``.go`` files under ``prefix`` in the working copy."""
    base = work / prefix if prefix else work
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == work:
            dirnames[:] = [d for d in dirnames if d != PIJUL_DIR]
        for f in filenames:
            if f.endswith(".go"):
                out.add(Path(os.path.relpath(os.path.join(dirpath, f), work)).as_posix())
    return out


def _read(work: Path, rel: str) -> bytes | str:
    p = work / rel
    if p.is_symlink():
        return "symlink or submodule"
    try:
        return p.read_bytes()
    except OSError:
        return "unreadable"


class _Tree(Mapping[str, bytes | str]):
    """The ``.go`` paths of one state; subclasses say how a file's bytes are had."""

    paths: set[str]

    def __contains__(self, key: object) -> bool:
        return key in self.paths

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.paths))

    def __len__(self) -> int:
        return len(self.paths)


class _ReadTree(_Tree):
    """The ``.go`` files of a state whose changed files were read before the working copy moved
    on: every path is a member (moves are matched against them), only read ones have bytes."""

    def __init__(self, paths: set[str]) -> None:
        self.paths = paths
        self.contents: dict[str, bytes | str] = {}

    def __getitem__(self, key: str) -> bytes | str:
        if key not in self.paths:
            raise KeyError(key)
        try:
            return self.contents[key]
        except KeyError:
            raise LookupError(f"{key}: not read before the working copy changed") from None


class _LazyTree(_Tree):
    """The ``.go`` files of the working copy, read when asked (the before-state: only the
    changed files and move candidates are ever read)."""

    def __init__(self, work: Path, paths: set[str]) -> None:
        self.work, self.paths = work, paths
        self.cache: dict[str, bytes | str] = {}

    def __getitem__(self, key: str) -> bytes | str:
        if key not in self.paths:
            raise KeyError(key)
        if key not in self.cache:
            self.cache[key] = _read(self.work, key)
        return self.cache[key]


def iter_pijul_history(repo: Path, skips: Skips, *, max_commits: int | None = None,
                       since: str | None = None, include_testdata: bool = False,
                       max_bytes: int = DEFAULT_MAX_FILE_BYTES, max_files_per_commit: int = 50,
                       name: str | None = None, pijul: str | None = None
                       ) -> Iterator[tuple[ChangeRecord, int]]:
    """Stream (record, changed_lines) for every ``.go`` file changed by the changes of the
    current channel of the pijul repository holding ``repo``, newest first.

    Works in a temporary copy of ``.pijul`` (the repository itself is only read). For a
    subdirectory, only its files count, and ``max_commits`` counts changes touching it."""
    root, exe = check_pijul_repo(repo, pijul)
    repo = Path(repo)
    name = name or root.name or "root"
    cutoff = parse_since(since) if since else None
    sub = os.path.relpath(repo.resolve(), root)
    prefix = "" if sub == "." else sub.replace(os.sep, "/") + "/"
    tmp = Path(tempfile.mkdtemp(prefix="hrm-lsp-pijul-"))
    try:
        work = tmp / (root.name or "repo")
        work.mkdir()
        try:
            shutil.copytree(root / PIJUL_DIR, work / PIJUL_DIR, symlinks=True)
        except (OSError, shutil.Error) as e:
            raise SourceError(f"{root}: cannot copy {PIJUL_DIR}/ to a temporary directory: {e}") from None
        r = _pijul(exe, work, "reset")
        if r.returncode != 0:
            raise SourceError(f"{root}: `pijul reset` failed in the temporary copy: {_err(r)}")
        after_paths = _go_files(work, prefix)
        mined = 0
        first = True
        while max_commits is None or mined < max_commits:
            r = _pijul(exe, work, "log", "--hash-only", "--limit", "2")
            if r.returncode != 0:
                if first:
                    raise SourceError(f"{root}: `pijul log` failed: {_err(r)}")
                skips.add("pijul log failed (older changes not read)", f"{name}: {_err(r)}")
                break
            try:
                hashes = parse_hash_list(r.stdout.decode("utf-8", "replace"))
            except PijulFormatError as e:
                raise SourceError(f"{root}: {e}") from None
            if not hashes:
                if first:
                    raise SourceError(f"{root}: the pijul repository has no changes yet; nothing to mine")
                break
            first = False
            h = hashes[0]
            where = f"{name}@{h[:12]}"
            c = _pijul(exe, work, "change", h)
            change: PijulChange | None = None
            if c.returncode != 0:
                skips.add("change unreadable", f"{where}: {_err(c)}")
            else:
                try:
                    change = parse_change_text(c.stdout.decode("utf-8", "replace"), h)
                except PijulFormatError as e:
                    skips.add("pijul change text not understood", f"{where}: {e}")
            if change is not None and cutoff is not None and change.timestamp is not None \
                    and change.timestamp < cutoff:
                break
            # The after-state of the touched files must be read before the working copy is
            # rewritten.
            after = _ReadTree(after_paths)
            relevant = False
            if change is not None:
                for hunk in change.hunks:
                    if hunk.path and (not prefix or hunk.path.startswith(prefix)
                                      or hunk.path == prefix.rstrip("/")):
                        relevant = True
                    if hunk.path in after_paths and hunk.path not in after.contents:
                        after.contents[hunk.path] = _read(work, hunk.path)
            if len(hashes) > 1:
                u = _pijul(exe, work, "unrecord", h)
                if u.returncode != 0:
                    skips.add("pijul unrecord failed (older changes not read)", f"{where}: {_err(u)}")
                    break
                _empty_working_copy(work)
                u = _pijul(exe, work, "reset")
                if u.returncode != 0:
                    skips.add("pijul reset failed (older changes not read)", f"{where}: {_err(u)}")
                    break
                before_paths = _go_files(work, prefix)
            else:
                before_paths = set()  # the oldest change: everything it touches is new
            if change is not None and relevant:
                mined += 1
                before = _LazyTree(work, before_paths)
                yield from change_records(change, after, before, skips, name=name, prefix=prefix,
                                          include_testdata=include_testdata, max_bytes=max_bytes,
                                          max_files_per_commit=max_files_per_commit)
            if len(hashes) == 1:
                break
            after_paths = before_paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
