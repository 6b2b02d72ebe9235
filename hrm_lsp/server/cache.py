"""Completion results cached by (document, version, position, mode).

A client asks again for the same spot all the time (inline and popup completion on the
same keystroke, re-renders, a request cancelled and re-sent), and a document version
pins the text exactly, so a hit can be answered without touching the model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class ResultCache:
    """A small thread-safe LRU map; ``forget(uri)`` drops a closed document's entries."""

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        """The cached value, refreshed as most recent, or None."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value``, evicting the least recently used entry when full."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def forget(self, uri: str) -> None:
        """Drop every entry whose key starts with ``uri``."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k and k[0] == uri]:
                del self._items[key]

    def clear(self) -> None:
        """Drop everything (settings or model changed)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
