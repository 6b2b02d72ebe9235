"""Which Go files each tier of the index reads (docs/index.md, "Tiers").

- workspace: every ``.go`` file under the workspace folders, except ``vendor/``,
  ``testdata/``, hidden and ``node_modules`` directories, files ignored by a ``.gitignore``,
  generated files (``// Code generated … DO NOT EDIT.``), files over ``MAX_FILE_BYTES`` and
  files that are not UTF-8;
- stdlib: ``GOROOT/src`` of the toolchain in use, without ``cmd/``, tests and testdata;
- module cache: the sources of the modules the workspace's ``go.mod`` files require, at the
  required versions, under ``GOMODCACHE`` (without their tests).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 1_000_000  # larger .go files are almost always generated tables
SKIP_DIRS = frozenset({"vendor", "testdata", "node_modules"})
_GENERATED = re.compile(r"^// Code generated .* DO NOT EDIT\.$", re.MULTILINE)
_REQUIRE_BLOCK = re.compile(r"^require\s*\((.*?)^\)", re.MULTILINE | re.DOTALL)
_REQUIRE_LINE = re.compile(r"^require\s+(\S+)\s+(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Skipped:
    path: str
    why: str


def read_go_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, str | None]:
    """(text, None) for an indexable Go file, else (None, why it is skipped)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, f"over {max_bytes} bytes"
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    if "\0" in text:
        return None, "binary"
    if _GENERATED.search(text[:4096]):
        return None, "generated"
    return text, None


def _gitignore(dirpath: Path):
    f = dirpath / ".gitignore"
    if not f.is_file():
        return None
    try:
        import pathspec

        return pathspec.PathSpec.from_lines("gitignore", f.read_text(errors="replace").splitlines())
    except Exception:  # an unreadable or odd .gitignore ignores nothing
        return None


def walk_go_files(root: Path, *, tests: bool = True, skip: frozenset[str] = SKIP_DIRS,
                  skipped: list[Skipped] | None = None) -> Iterator[Path]:
    """``.go`` files under ``root`` in a stable order, honouring ``.gitignore`` files."""
    root = Path(root)
    specs: list[tuple[Path, object]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        specs = [(base, s) for base, s in specs if d == base or base in d.parents]
        spec = _gitignore(d)
        if spec is not None:
            specs.append((d, spec))

        def ignored(p: Path, is_dir: bool, specs=specs) -> bool:
            for base, s in specs:
                rel = p.relative_to(base).as_posix() + ("/" if is_dir else "")
                if s.match_file(rel):
                    return True
            return False

        keep = []
        for name in sorted(dirnames):
            if name in skip or name.startswith((".", "_")):
                continue
            if ignored(d / name, True):
                if skipped is not None:
                    skipped.append(Skipped(str(d / name), ".gitignore"))
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if not name.endswith(".go") or (not tests and name.endswith("_test.go")):
                continue
            p = d / name
            if ignored(p, False):
                if skipped is not None:
                    skipped.append(Skipped(str(p), ".gitignore"))
                continue
            yield p


def stdlib_files(goroot: Path) -> Iterator[Path]:
    """The standard library's non-test sources (``cmd/`` is the toolchain, not a library)."""
    src = Path(goroot) / "src"
    yield from walk_go_files(src, tests=False, skip=SKIP_DIRS | {"cmd"})


def gomodcache() -> Path:
    """``GOMODCACHE``, else ``GOPATH``'s first entry ``/pkg/mod``, else ``~/go/pkg/mod``."""
    env = os.environ.get("GOMODCACHE")
    if env:
        return Path(env)
    gopath = os.environ.get("GOPATH", "").split(os.pathsep)[0]
    return Path(gopath or Path.home() / "go") / "pkg" / "mod"


def escape_module_path(path: str) -> str:
    """The module cache's case encoding: an upper-case letter becomes ``!`` + lower case."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group().lower(), path)


def required_modules(go_mod_text: str) -> list[tuple[str, str]]:
    """(module path, version) of each ``require`` in a go.mod text."""
    text = re.sub(r"//.*", "", go_mod_text)
    out = []
    for block in _REQUIRE_BLOCK.findall(text):
        for line in block.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out.append((parts[0].strip('"'), parts[1]))
    out += [(m.strip('"'), v) for m, v in _REQUIRE_LINE.findall(text) if m != "("]
    return sorted(set(out))


def module_dirs(workspace: list[Path], cache: Path | None = None) -> list[tuple[str, Path]]:
    """("path@version", directory) of every required module found in the module cache."""
    cache = cache or gomodcache()
    found: dict[str, Path] = {}
    for root in workspace:
        for mod in sorted(Path(root).glob("go.mod")) + sorted(Path(root).glob("*/go.mod")):
            try:
                text = mod.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for path, version in required_modules(text):
                d = cache / f"{escape_module_path(path)}@{version}"
                if d.is_dir():
                    found[f"{path}@{version}"] = d
    return sorted(found.items())
