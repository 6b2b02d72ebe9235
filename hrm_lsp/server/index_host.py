"""The server's repository index: when it is built, what it is told, what status shows.

The index (``hrm_lsp.index``) is built in the model's tokenizer, so it starts once a model
has loaded, in the background with ``$/progress``; it is rebuilt when a model with another
tokenizer loads. With ``completionSources = "model"`` it is not built at all. Document
events only record text or mark tiers stale here; every slow step runs on the index's own
thread, so no handler and no completion waits for indexing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hrm_lsp.log import get_logger

log = get_logger(__name__)


class IndexHost:
    def __init__(self) -> None:
        self.index: Any = None  # hrm_lsp.index.RepoIndex once started
        self.folders: list[Path] = []
        self._tokenizer_sha: str | None = None
        self._live: dict[str, str] = {}

    def set_folders(self, folders: list[str]) -> None:
        self.folders = [Path(f) for f in folders if f]

    def needs_build(self, tokenizer: Any) -> bool:
        """True unless the index is already built (or building) for ``tokenizer``."""
        return self.index is None or self._tokenizer_sha != tokenizer.sha256

    def start(self, tokenizer: Any, progress: Callable[[str, int], None] | None,
              done: Callable[[str], None] | None) -> bool:
        """Build for ``tokenizer`` (in the background); False when already built for it."""
        if not self.needs_build(tokenizer):
            return False
        from hrm_lsp.index import RepoIndex

        if self.index is not None:
            self.index.close()
        index = RepoIndex(tokenizer)
        for path, text in self._live.items():
            index.set_live(path, text)
        self.index, self._tokenizer_sha = index, tokenizer.sha256
        report = progress or (lambda *_: None)

        def progress_and_done(message: str, percent: int) -> None:
            report(message, percent)
            if percent >= 100 and done is not None:
                done(message)

        index.start(self.folders, progress_and_done)
        return True

    @property
    def version(self) -> int:
        """Changes whenever the index's answers may have (part of the result-cache key)."""
        return -1 if self.index is None else self.index.version

    def for_request(self, sources: str) -> Any:
        return None if sources == "model" else self.index

    # -- document events (cheap: record, mark stale) -----------------------------------

    def opened(self, path: str, text: str) -> None:
        self._live[path] = text
        if self.index is not None:
            self.index.set_live(path, text)
            self.index.prepare(path)

    def changed(self, path: str, text: str) -> None:
        self._live[path] = text
        if self.index is not None:
            self.index.set_live(path, text)

    def closed(self, path: str) -> None:
        self._live.pop(path, None)
        if self.index is not None:
            self.index.set_live(path, None)

    def files_changed(self, paths: list[str]) -> None:
        if self.index is not None:
            for p in paths:
                if p.endswith(".go"):
                    self.index.file_changed(p)

    def status(self) -> dict[str, Any]:
        if self.index is None:
            return {"state": "off", "folders": [str(f) for f in self.folders]}
        rep = self.index.report()
        rep["state"] = "ready" if rep["ready"] else "building"
        return rep
