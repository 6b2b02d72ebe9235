"""Which Go files each tier of the index reads (docs/index.md, "Tiers").

- workspace: every ``.go`` file under the workspace folders, except ``vendor/``,
  ``testdata/``, hidden, ``_`` and ``node_modules`` directories, files git ignores (inside a
  git repository), generated files (``// Code generated … DO NOT EDIT.``), files over
  ``MAX_FILE_BYTES`` and files that are not UTF-8 -- the data pipeline's own walk and
  checks (``hrm_lsp.data.sources``);
- stdlib: ``GOROOT/src`` of the toolchain in use, without ``cmd/``, tests and testdata;
- module cache: the sources of the modules the workspace's ``go.mod`` files require, at the
  required versions, under ``GOMODCACHE`` (without their tests).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hrm_lsp.data.sources import DEFAULT_MAX_FILE_BYTES, Skips, check_go_bytes, list_go_files

MAX_FILE_BYTES = DEFAULT_MAX_FILE_BYTES  # larger .go files are almost always generated tables
_REQUIRE_BLOCK = re.compile(r"^require\s*\((.*?)^\)", re.MULTILINE | re.DOTALL)
_REQUIRE_LINE = re.compile(r"^require\s+(\S+)\s+(\S+)", re.MULTILINE)


def read_go_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, str]:
    """(text, "") for an indexable Go file, else (None, why it is skipped): the data
    pipeline's own checks (size, empty, binary, UTF-8, generated)."""
    try:
        if Path(path).stat().st_size > max_bytes:
            return None, "too large"
        data = Path(path).read_bytes()
    except OSError:
        return None, "unreadable"
    return check_go_bytes(data, max_bytes)


def walk_go_files(root: Path, *, tests: bool = True) -> list[Path]:
    """``.go`` files under ``root``, sorted: the data pipeline's walk (vendor/, testdata/,
    hidden and ``_`` directories skipped, ``.gitignore`` honoured inside git repositories)."""
    files = list_go_files(Path(root), Skips())
    return files if tests else [f for f in files if not f.name.endswith("_test.go")]


def stdlib_files(goroot: Path) -> list[Path]:
    """The standard library's non-test sources (``cmd/`` is the toolchain, not a library)."""
    src = Path(goroot) / "src"
    return [f for f in walk_go_files(src, tests=False)
            if f.relative_to(src).parts[0] != "cmd"]


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
