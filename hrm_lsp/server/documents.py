"""Open documents as the client sees them, kept in sync with incremental changes.

pygls ships a workspace of its own, but it splits lines with ``str.splitlines`` (which
also breaks on form feeds and U+2028) and rewrites the whole text line by line on every
keystroke. This store applies each change as one slice through ``positions.LineIndex``,
the single place where LSP positions become ``str`` offsets, so a document with CRLF line
endings, astral characters or out-of-range edit ranges stays exactly what the client has.
The line index is updated with each edit (``LineIndex.replace``), not rebuilt, so typing
in a multi-megabyte document stays cheap on the event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from hrm_lsp.server.positions import UTF16, LineIndex


@dataclass
class Document:
    """One open document: its text, version and a lazily built line index."""

    uri: str
    text: str
    version: int
    language_id: str = ""
    _index: LineIndex | None = field(default=None, repr=False)

    @property
    def index(self) -> LineIndex:
        """Line index of the current text (rebuilt after each change, on first use)."""
        idx = self._index
        if idx is None or idx.text is not self.text:
            idx = self._index = LineIndex(self.text)
        return idx

    @property
    def path(self) -> Path:
        """A filesystem-like path for the document (validators use its name and folder)."""
        return uri_to_path(self.uri)

    @property
    def is_go(self) -> bool:
        """Whether this is a Go source file (by language id, else by extension)."""
        if self.language_id:
            return self.language_id.lower() == "go"
        return self.uri.lower().endswith(".go")


def uri_to_path(uri: str) -> Path:
    """``file:///a/b.go`` -> ``/a/b.go``; other schemes keep their path part."""
    parsed = urlparse(uri)
    path = unquote(parsed.path or parsed.netloc or "untitled.go")
    if len(path) >= 3 and path[0] == "/" and path[2] == ":":  # file:///C:/x on Windows
        path = path[1:]
    return Path(path)


class DocumentStore:
    """Thread-safe map of URI -> Document (handlers run on the loop, generation in threads)."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}
        self._lock = threading.Lock()

    def open(self, uri: str, text: str, version: int, language_id: str = "") -> Document:
        """Start tracking a document (re-opening replaces it)."""
        doc = Document(uri=uri, text=text, version=version, language_id=language_id)
        with self._lock:
            self._docs[uri] = doc
        return doc

    def close(self, uri: str) -> None:
        """Forget a document; unknown URIs are ignored."""
        with self._lock:
            self._docs.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        """The open document for ``uri``, or None (never opened, or closed)."""
        with self._lock:
            return self._docs.get(uri)

    def change(self, uri: str, version: int, changes: list[tuple[tuple[int, int, int, int] | None, str]],
               encoding: str = UTF16) -> Document | None:
        """Apply content changes in order; each is ``((l0, c0, l1, c1) | None, text)``.

        ``None`` as the range means the whole text. Ranges are clamped into the document
        (reversed ranges are put in order). Returns None for a document that is not open.
        """
        with self._lock:
            doc = self._docs.get(uri)
            if doc is None:
                return None
            idx: LineIndex | None = doc._index if doc._index is not None and \
                doc._index.text is doc.text else None
            text = doc.text
            for rng, new in changes:
                if rng is None:
                    text, idx = new, None
                    continue
                if idx is None:
                    idx = LineIndex(text)
                a = idx.offset(rng[0], rng[1], encoding)
                b = idx.offset(rng[2], rng[3], encoding)
                if b < a:
                    a, b = b, a
                idx = idx.replace(a, b, new)  # only the touched lines are rescanned
                text = idx.text
            doc.text = text
            doc._index = idx
            doc.version = version
            return doc

    def uris(self) -> list[str]:
        """URIs of all open documents."""
        with self._lock:
            return list(self._docs)
