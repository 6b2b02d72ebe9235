"""The one place for validation cache keys, and the in-memory result cache.

A key covers everything a result depends on that can be checked cheaply (≈ microseconds):
the text's hash, the stages and options asked for, the Go version, and the package context —
name/size/mtime of the other ``.go`` files in the package directory, go.mod/go.sum, and the
same for the directories of packages the text imports from its own module (one level; a
change deeper in the import graph is not seen until one of those files changes).
Results that could not judge (timeouts, ``unavailable``) are never cached.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

from hrm_lsp.validators.workspace import PackageContext

_BLOCK_START = re.compile(r"import\s*\(")
_IMPORT_LINE = re.compile(r'^import\s+(?:[\w.]+\s+)?"([^"]+)"', re.M)
_QUOTED = re.compile(r'"([^"]+)"')
_FIRST_DECL = re.compile(r"^(?:func|type|var|const)\b", re.M)


def imported_paths(text: str) -> list[str]:
    """Import paths in ``text`` (a cheap scan; good enough for cache invalidation)."""
    # Imports precede every declaration, so only the header needs scanning.
    m = _FIRST_DECL.search(text)
    head = text[: m.start()] if m else text
    found = [m.group(1) for m in _IMPORT_LINE.finditer(head)]
    # Blocks line by line (linear; a lazy multi-line regex was quadratic in the number of
    # unclosed ``import (`` lines): quoted paths after "(" up to a line starting with ")".
    in_block = False
    for line in head.split("\n"):
        if in_block:
            if line.startswith(")"):
                in_block = False
            else:
                found.extend(_QUOTED.findall(line))
        elif line.startswith("import"):
            m = _BLOCK_START.match(line)
            if m:
                in_block = True
                found.extend(_QUOTED.findall(line, m.end()))
    return found


def _dir_stamp(d: Path, skip: str | None, h) -> None:
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except OSError:
        h.update(b"<missing>")
        return
    for e in entries:
        if e.name == skip or not (e.name.endswith(".go") or e.name in ("go.mod", "go.sum")):
            continue
        try:
            st = e.stat()
        except OSError:
            continue
        h.update(f"{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())


def context_fingerprint(text: str, ctx: PackageContext) -> str:
    """Hash of the package context ``text`` is validated in (see module docstring)."""
    h = hashlib.sha256()
    h.update(str(ctx.file).encode("utf-8", errors="surrogatepass"))
    if ctx.pkg_dir is not None:
        _dir_stamp(ctx.pkg_dir, ctx.file.name, h)
    if ctx.module_root is not None:
        for name in ("go.mod", "go.sum"):
            try:
                st = (ctx.module_root / name).stat()
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                pass
        if ctx.module_path:
            prefix = ctx.module_path + "/"
            for imp in sorted(set(imported_paths(text))):
                if imp.startswith(prefix):
                    h.update(imp.encode())
                    _dir_stamp(ctx.module_root / imp[len(prefix):], None, h)
    return h.hexdigest()


def cache_key(text: str, ctx: PackageContext, go_version: str | None, options: tuple) -> str:
    """Cache key: content hash + package context + Go version + stages/options."""
    h = hashlib.sha256()
    h.update(text.encode("utf-8", errors="surrogatepass"))
    h.update(b"\0" + context_fingerprint(text, ctx).encode())
    h.update(b"\0" + (go_version or "no-go").encode())
    h.update(b"\0" + repr(options).encode())
    return h.hexdigest()


class ResultCache:
    """A thread-safe LRU map from cache keys to results."""

    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self._data: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str):
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
