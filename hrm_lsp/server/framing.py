"""LSP base-protocol framing: ``Content-Length`` frames in, resynchronising on anything else.

pygls 2's reader (``pygls/io_.py``) matches one exact header spelling, keeps a partial
header across lines and reads a declared length without a limit, so one bad frame glues
its leftovers to the next header and the server stays alive but deaf, and a huge declared
length kills it. ``FrameParser`` replaces it; it is sans-I/O (bytes in, events out), so
every rule below is tested without a process:

- headers: ``Name: value`` lines ended by CRLF or a bare LF, names case-insensitive,
  ``Content-Length`` the only one that matters (``Content-Type`` and others are ignored),
  a blank line ends the block;
- a header block without a usable ``Content-Length`` (missing, not a number, over
  ``MAX_FRAME_BYTES``) is skipped, and so is everything up to the next
  ``Content-Length:`` header, even when that header is glued to the end of a garbage line;
- a declared length that is too long is caught as soon as a new ``Content-Length: N``
  header line appears inside the body: a JSON body cannot hold a raw line break inside a
  string, and ``Content-Length`` is not JSON outside one, so a legitimate body never
  contains such a line. The bytes before it are the frame (a JSON object: dispatched;
  anything else: skipped) and parsing resumes at the header;
- a declared length that is too short leaves the rest of the body as garbage before the
  next header, which the rule above skips;
- no line or buffer grows without bound: a header line longer than ``MAX_HEADER_LINE``
  without a line break is garbage, bodies are capped at ``MAX_FRAME_BYTES``.

Skipped bytes are reported in coalesced ``Skipped`` events (one per run of garbage, at
least one per MiB), so a flood of junk costs one log line per MiB, not one per line.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_FRAME_BYTES = 64 * 1024 * 1024  # a declared Content-Length above this is refused
MAX_HEADER_LINE = 8 * 1024  # longest header line kept while waiting for its line break
_SKIP_REPORT_BYTES = 1024 * 1024  # report a long run of garbage at least once per MiB
_PREVIEW = 60

_CL_NAME = re.compile(rb"content-length[ \t]*:", re.IGNORECASE)
_CL_LINE = re.compile(rb"content-length[ \t]*:[ \t]*[0-9]+[ \t]*\r?\n", re.IGNORECASE)
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_KEEP = 32  # tail kept from a line-less run of garbage: a header may start in it


@dataclass(frozen=True)
class Frame:
    """One frame's body; ``note`` says what was odd about its framing (or is empty)."""

    body: bytes
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    """A run of input that is not part of any frame: how many bytes, how it began, why."""

    count: int
    preview: bytes
    reason: str


class FrameParser:
    """Incremental parser: ``feed(bytes) -> [Frame | Skipped, ...]``; ``close()`` at EOF."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES, max_header_line: int = MAX_HEADER_LINE):
        self.max_frame = max_frame
        self.max_header_line = max_header_line
        self._buf = bytearray()
        self._length: int | None = None  # declared length once a valid header is seen
        self._header_bytes = 0  # bytes of the current header block so far
        self._problem = ""  # what was wrong with the current header block
        self._body: int | None = None  # body length being read (None: reading headers)
        self._scan = 0  # where the next embedded-header scan of the body starts
        self._skip_count = 0
        self._skip_preview = b""
        self._skip_reason = ""
        self._events: list[Frame | Skipped] = []

    # -- public ------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Frame | Skipped]:
        """Add bytes; return the frames (and skipped runs) they complete."""
        self._buf += data
        while self._body is not None and self._step_body() or \
                self._body is None and self._step_header():
            pass
        return self._take()

    def close(self) -> list[Frame | Skipped]:
        """End of input: whatever is left (a partial frame or header) is reported skipped."""
        if self._buf:
            what = "input ended inside a frame body" if self._body is not None else \
                "input ended inside a header"
            self._skip(bytes(self._buf[: _PREVIEW]), len(self._buf), what)
            self._buf.clear()
        self._flush_skip()
        return self._take()

    # -- body ----------------------------------------------------------------------------

    def _step_body(self) -> bool:
        n = self._body
        assert n is not None
        buf = self._buf
        # A new frame's header line that starts inside the declared body: the length was
        # too long. (Only a complete header line counts: a legitimate body never holds one.)
        m = _CL_LINE.search(buf, max(0, self._scan - _KEEP), min(len(buf), n + 64))
        if m is not None and m.start() < n:
            start = m.start()
            head = bytes(buf[:start])
            del buf[:start]
            self._body = None
            self._scan = 0
            if _is_json_object(head):
                self._flush_skip()
                self._events.append(Frame(head, f"declared Content-Length {n}, but a new "
                                                f"frame started after {start} bytes"))
            else:
                self._skip(head[:_PREVIEW], len(head),
                           f"frame body (declared {n} bytes) cut short by a new header")
            return True
        self._scan = min(len(buf), n)
        if len(buf) < n:
            return False
        body = bytes(buf[:n])
        del buf[:n]
        self._body = None
        self._scan = 0
        self._flush_skip()
        self._events.append(Frame(body))
        return True

    # -- headers -------------------------------------------------------------------------

    def _step_header(self) -> bool:
        buf = self._buf
        nl = buf.find(b"\n", 0, self.max_header_line + 1)
        if nl < 0:
            if len(buf) <= self.max_header_line:
                return False  # wait for the rest of the line
            # A line-less run of garbage: skip it, keeping a header that may start in it.
            m = _CL_NAME.search(buf, 1)
            cut = m.start() if m is not None else max(1, len(buf) - _KEEP)
            self._garbage(cut, "no line break within "
                          f"{self.max_header_line} bytes")
            return True
        line = bytes(buf[:nl + 1])
        content = line.rstrip(b"\r\n")
        m = _CL_NAME.search(content, 1)
        if m is not None:  # garbage glued to a header: resynchronise at the header
            self._garbage(m.start(), "bytes before a Content-Length header")
            return True
        if not content.strip():
            del buf[:nl + 1]
            return self._end_of_headers(len(line))
        name, sep, value = content.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            self._garbage(nl + 1, "not a header line")
            return True
        del buf[:nl + 1]
        self._header_bytes += len(line)
        if name.lower() == b"content-length":
            value = value.strip()
            if not value.isdigit():
                self._length, self._problem = None, f"Content-Length {value[:20]!r} is not a number"
            elif len(value) > 18 or int(value) > self.max_frame:
                self._length = None
                self._problem = (f"declared Content-Length {value[:20].decode()} is over the "
                                 f"{self.max_frame // (1024 * 1024)} MiB limit")
            else:
                self._length, self._problem = int(value), ""
        return True

    def _end_of_headers(self, blank: int) -> bool:
        if self._length is not None:
            self._body, self._scan = self._length, 0
        elif self._header_bytes:
            self._skip(b"", self._header_bytes + blank,
                       self._problem or "header block without Content-Length")
        # A stray blank line between frames is tolerated silently.
        self._length, self._header_bytes, self._problem = None, 0, ""
        return True

    def _garbage(self, n: int, reason: str) -> None:
        """Skip ``n`` bytes from the buffer's start; the current header block is void."""
        chunk = bytes(self._buf[: min(n, _PREVIEW)])
        del self._buf[:n]
        if self._header_bytes:
            reason = f"{self._problem or 'incomplete header block'}, then {reason}"
            n += self._header_bytes
        self._length, self._header_bytes, self._problem = None, 0, ""
        self._skip(chunk, n, reason)

    # -- skipped runs ----------------------------------------------------------------------

    def _skip(self, preview: bytes, n: int, reason: str) -> None:
        if self._skip_count == 0:
            self._skip_preview, self._skip_reason = preview, reason
        self._skip_count += n
        if self._skip_count >= _SKIP_REPORT_BYTES:
            self._flush_skip()

    def _flush_skip(self) -> None:
        if self._skip_count:
            self._events.append(Skipped(self._skip_count, self._skip_preview, self._skip_reason))
            self._skip_count, self._skip_preview, self._skip_reason = 0, b"", ""

    def _take(self) -> list[Frame | Skipped]:
        events, self._events = self._events, []
        return events


def _is_json_object(data: bytes) -> bool:
    stripped = data.strip()
    if not stripped.startswith(b"{") or not stripped.endswith(b"}"):
        return False
    try:
        return isinstance(json.loads(stripped), dict)
    except (ValueError, RecursionError):
        return False


async def read_frames(read: Callable[[], Awaitable[bytes]],
                      on_frame: Callable[[Frame], None],
                      on_skipped: Callable[[Skipped], None],
                      stopped: Callable[[], bool] = lambda: False) -> None:
    """The main loop: read chunks until EOF (``b""``), hand out frames and skipped runs."""
    parser = FrameParser()
    while not stopped():
        data = await read()
        events = parser.feed(data) if data else parser.close()
        for event in events:
            if isinstance(event, Frame):
                on_frame(event)
                # Let the handler task this frame started take its first step before the
                # next frame is handled (in-order semantics, as with one frame per read).
                await asyncio.sleep(0)
            else:
                on_skipped(event)
        if not data:
            return
