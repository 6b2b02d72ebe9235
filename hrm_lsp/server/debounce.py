"""Debounce for automatic inline-completion triggers.

Editors ask for ghost text on every keystroke. Waiting a few tens of milliseconds and
answering only the newest request per document means the model works on what the user
is looking at, not on every intermediate prefix.
"""

from __future__ import annotations

import asyncio


class Debouncer:
    """``await settle(key, delay)`` is True only for the newest caller per key."""

    def __init__(self) -> None:
        self._seq: dict[str, int] = {}

    async def settle(self, key: str, delay_s: float) -> bool:
        """Wait ``delay_s``; False when a newer call for ``key`` arrived meanwhile."""
        n = self._seq.get(key, 0) + 1
        self._seq[key] = n
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        return self._seq.get(key) == n

    def forget(self, key: str) -> None:
        """Drop state for a closed document."""
        self._seq.pop(key, None)
