"""Debounce for automatic inline-completion triggers.

Editors ask for ghost text on every keystroke. Waiting a few tens of milliseconds and
answering only the newest request per document means the model works on what the user
is looking at, not on every intermediate prefix. A waiting request is released early (and
answers empty) as soon as a newer request for the same document arrives.
"""

from __future__ import annotations

import asyncio


class Debouncer:
    """``await settle(key, delay)`` is True only for the newest caller per key."""

    def __init__(self) -> None:
        self._seq: dict[str, int] = {}
        self._waiting: dict[str, asyncio.Event] = {}

    def supersede(self, key: str) -> None:
        """A newer request for ``key`` arrived: release whoever waits, as superseded."""
        self._seq[key] = self._seq.get(key, 0) + 1
        ev = self._waiting.pop(key, None)
        if ev is not None:
            ev.set()

    async def settle(self, key: str, delay_s: float) -> bool:
        """Wait up to ``delay_s``; False when a newer request for ``key`` arrived meanwhile."""
        self.supersede(key)
        n = self._seq[key]
        if delay_s > 0:
            ev = self._waiting[key] = asyncio.Event()
            try:
                await asyncio.wait_for(ev.wait(), delay_s)
            except asyncio.TimeoutError:
                pass
            finally:
                if self._waiting.get(key) is ev:
                    del self._waiting[key]
        return self._seq.get(key) == n

    def forget(self, key: str) -> None:
        """Drop state for a closed document (releasing a waiter)."""
        self.supersede(key)
        self._seq.pop(key, None)
