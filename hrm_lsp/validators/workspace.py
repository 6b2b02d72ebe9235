"""Where a file lives for Go (module, package) and a throw-away workspace to check it in.

The user's files are never written. In a module, the edited text reaches Go through
``-overlay`` and go.mod/go.sum through ``-modfile`` copies (``-mod=mod`` could otherwise
rewrite them). A file outside any module is copied alone into a synthesized temporary module.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hrm_lsp import paths
from hrm_lsp.validators.go import GoToolchain

_MODULE_LINE = re.compile(r"^\s*module\s+\"?([^\s\"/]+(?:/[^\s\"]+)*)\"?\s*$", re.M)
_PACKAGE_LINE = re.compile(r"^\s*package\s+\w+", re.M)
SYNTH_MODULE = "hrmlsp.check/file"


@dataclass(frozen=True)
class PackageContext:
    """Resolved location of the file being validated."""

    file: Path  # absolute path of the user's file (may not exist yet)
    pkg_dir: Path | None  # its directory when that exists and is inside a module
    module_root: Path | None
    module_path: str | None
    std: bool = False  # inside GOROOT/src (the standard library's own module)

    @property
    def synthesized(self) -> bool:
        return self.module_root is None


_module_paths: dict[str, tuple[int, str | None]] = {}


def _module_path(gomod: Path) -> str | None:
    """The ``module`` line of a go.mod, re-read only when the file changes."""
    try:
        mtime = gomod.stat().st_mtime_ns
        hit = _module_paths.get(str(gomod))
        if hit is not None and hit[0] == mtime:
            return hit[1]
        m = _MODULE_LINE.search(gomod.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    _module_paths[str(gomod)] = (mtime, m.group(1) if m else None)
    return m.group(1) if m else None


def package_context(path: str | Path | None, toolchain: GoToolchain | None = None) -> PackageContext:
    """Find the module that contains ``path`` (walking up to a go.mod)."""
    if path is None:
        return PackageContext(paths.cache_dir() / "untitled.go", None, None, None)
    # os.path on strings: this runs on every validate call, including cache hits.
    f = os.path.expanduser(os.fspath(path))
    f = os.path.normpath(f if os.path.isabs(f) else os.path.join(os.getcwd(), f))
    file = Path(f)
    d = os.path.dirname(f)
    if not os.path.isdir(d):
        return PackageContext(file, None, None, None)
    pkg_dir = Path(d)
    while True:
        gomod = os.path.join(d, "go.mod")
        if os.path.isfile(gomod):
            root = Path(d)
            std = toolchain is not None and _is_relative(root, toolchain.goroot / "src")
            return PackageContext(file, pkg_dir, root, _module_path(Path(gomod)), std=std)
        parent = os.path.dirname(d)
        if parent == d:
            return PackageContext(file, None, None, None)
        d = parent


@functools.lru_cache(maxsize=256)
def _is_relative(p: Path, base: Path) -> bool:
    # Cached: resolve() walks every path component, too slow for the ≤1 ms cache-hit path.
    try:
        p.resolve().relative_to(base.resolve())
        return True
    except ValueError:
        return False


def package_clause_line(text: str) -> int:
    """1-based line of ``package name`` (where findings in other files are anchored)."""
    m = _PACKAGE_LINE.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else 1


@dataclass
class Workspace:
    """A prepared place to run ``go vet``/``go test`` on the edited text."""

    cwd: Path
    flags: list[str]  # -overlay / -modfile / -mod flags to pass to go
    user_paths: set[Path] = field(default_factory=set)  # paths Go may print for the user's file
    pkg_dir: Path | None = None
    file_name: str = ""  # base name of the user's file inside the workspace
    modfile_copy: Path | None = None  # our copy of the user's go.mod, when -modfile is used
    module_root: Path | None = None

    def user_facing(self, message: str) -> str:
        """Name the user's go.mod/go.sum in Go's messages instead of our temporary copies."""
        if self.modfile_copy is None or self.module_root is None:
            return message
        for name in ("go.mod", "go.sum"):
            message = message.replace(str(self.modfile_copy.parent / name), str(self.module_root / name))
        return message


_swept: set[str] = set()
STALE_SECONDS = 24 * 3600


def tmp_root() -> Path:
    """Parent of all temporary workspaces (under the cache dir, not /tmp, so it is per user)."""
    d = paths.cache_dir() / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    if str(d) not in _swept:
        _swept.add(str(d))
        _sweep_stale(d)
    return d


def _sweep_stale(d: Path) -> None:
    """Remove workspaces a killed process left behind (once per process and directory)."""
    cutoff = time.time() - STALE_SECONDS
    for ws in d.glob("ws-*"):
        try:
            if ws.stat().st_mtime < cutoff:
                shutil.rmtree(ws, ignore_errors=True)
        except OSError:
            continue


@contextlib.contextmanager
def prepared(text: str, ctx: PackageContext, toolchain: GoToolchain) -> Iterator[Workspace]:
    """Yield a Workspace for ``text`` at ``ctx``; everything temporary is removed after."""
    tmp = Path(tempfile.mkdtemp(prefix="ws-", dir=tmp_root()))
    try:
        data = text.encode("utf-8")
        name = ctx.file.name if ctx.file.suffix == ".go" else ctx.file.name + ".go"
        if ctx.synthesized:
            (tmp / "go.mod").write_text(
                f"module {SYNTH_MODULE}\n\ngo {toolchain.language_version}\n", encoding="utf-8"
            )
            (tmp / name).write_bytes(data)
            yield Workspace(cwd=tmp, flags=[], user_paths={tmp / name, (tmp / name).resolve()}, pkg_dir=tmp,
                            file_name=name)
            return
        assert ctx.pkg_dir is not None and ctx.module_root is not None
        edited = tmp / name
        edited.write_bytes(data)
        target = ctx.pkg_dir / name
        overlay = {"Replace": {str(target): str(edited)}}
        if target.resolve() != target:
            overlay["Replace"][str(target.resolve())] = str(edited)
        (tmp / "overlay.json").write_text(json.dumps(overlay), encoding="utf-8")
        flags = [f"-overlay={tmp / 'overlay.json'}"]
        if not ctx.std:
            if (ctx.module_root / "vendor" / "modules.txt").is_file():
                flags.append("-mod=vendor")
            else:
                # Copies, because -mod=mod may add requirements; the user's go.mod stays as is.
                shutil.copyfile(ctx.module_root / "go.mod", tmp / "go.mod")
                if (ctx.module_root / "go.sum").is_file():
                    shutil.copyfile(ctx.module_root / "go.sum", tmp / "go.sum")
                flags.append(f"-modfile={tmp / 'go.mod'}")
        else:
            flags.append("-mod=readonly")  # the standard library is vendored differently
        yield Workspace(
            cwd=ctx.pkg_dir,
            flags=flags,
            user_paths={target, target.resolve(), edited, edited.resolve()},
            pkg_dir=ctx.pkg_dir,
            file_name=name,
            modfile_copy=tmp / "go.mod" if (tmp / "go.mod").exists() else None,
            module_root=ctx.module_root,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
