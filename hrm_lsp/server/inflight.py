"""One generation in flight per document: a newer request supersedes the older one.

Cancellation is cooperative (a thread cannot be stopped from outside), so superseding
means firing the older request's cancel token; the engine checks it between tokens and
returns early, and the older request answers empty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class InFlight:
    """Tracks the current cancel token of each document."""

    def __init__(self, token_factory: Callable[[], Any]) -> None:
        self._factory = token_factory
        self._current: dict[str, Any] = {}
        self._lock = threading.Lock()

    def begin(self, key: str) -> Any:
        """A fresh token for ``key``; the previous one (if any) is cancelled."""
        token = self._factory()
        with self._lock:
            old = self._current.get(key)
            self._current[key] = token
        if old is not None:
            old.cancel()
        return token

    def end(self, key: str, token: Any) -> None:
        """Forget ``token`` if it is still the current one for ``key``."""
        with self._lock:
            if self._current.get(key) is token:
                del self._current[key]

    def cancel(self, key: str) -> None:
        """Cancel whatever runs for ``key`` (document closed or changed)."""
        with self._lock:
            old = self._current.pop(key, None)
        if old is not None:
            old.cancel()

    def cancel_all(self) -> None:
        """Cancel everything (shutdown, model reload)."""
        with self._lock:
            tokens = list(self._current.values())
            self._current.clear()
        for t in tokens:
            t.cancel()

    def active(self) -> int:
        """Number of documents with a generation in flight."""
        with self._lock:
            return len(self._current)
