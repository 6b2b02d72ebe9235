"""The one result type every validator stage returns, and the source-text helpers they share.

Positions are 1-based lines and 1-based columns counted in Unicode code points, so the
server converts to the client's position encoding in one place (``server/positions.py``).
Go and tree-sitter report byte columns; :class:`SourceText` converts them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Stage = Literal["syntax", "gofmt", "vet", "test"]
# Tool output (gofmt, go vet, go test) is parsed line by line, each line judged on its first
# MAX_OUTPUT_LINE characters, so one huge line (a 2 MB identifier echoed in a message) costs
# linear time and bounded memory.
MAX_OUTPUT_LINE = 4096
STAGES: tuple[str, ...] = ("syntax", "gofmt", "vet", "test")
Severity = Literal["error", "warning", "info"]

# Severities that make ``ok`` false. "info" is advice (e.g. "gofmt would reformat this").
FAILING_SEVERITIES = ("error", "warning")


class InvalidSourceError(ValueError):
    """The input is not Go source we can validate (e.g. not valid UTF-8); says where."""


@dataclass(frozen=True)
class Diagnostic:
    """One finding: 1-based line/column in code points, end exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int
    severity: Severity
    message: str
    stage: Stage

    def to_dict(self) -> dict:
        """Plain dict for JSON output."""
        return {
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "severity": self.severity,
            "message": self.message,
            "stage": self.stage,
        }


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of :func:`hrm_lsp.validators.validate` (see docs/validators.md)."""

    ok: bool  # every stage that ran passed (no error/warning diagnostics)
    stage: Stage  # last stage reached
    diagnostics: list[Diagnostic] = field(default_factory=list)
    formatted: str | None = None  # gofmt output when gofmt ran and parsed
    changed: bool = False  # gofmt would change the text
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why it did not run
    unavailable: str | None = None  # why vet/test could not judge (missing module, timeout)
    elapsed_ms: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage
    cached: bool = False
    go_version: str | None = None

    def to_dict(self) -> dict:
        """Plain dict for JSON output."""
        return {
            "ok": self.ok,
            "stage": self.stage,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "changed": self.changed,
            "skipped": dict(self.skipped),
            "unavailable": self.unavailable,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "cached": self.cached,
            "go_version": self.go_version,
        }


def decode_source(data: bytes, name: str = "<input>") -> str:
    """Decode Go source bytes strictly as UTF-8 (Go's only encoding), naming the bad spot."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InvalidSourceError(
            f"{name}:{line}:{col}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "Go source files must be UTF-8 — re-save the file as UTF-8"
        ) from None
    # A UTF-8 byte-order mark is legal for Go only at the very start; gofmt drops it.
    return text


def read_source(path: str | os.PathLike) -> str:
    """Read a Go file from disk as strict UTF-8; every failure is an InvalidSourceError that
    names the file and says what is wrong (missing, a directory, unreadable, not UTF-8)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InvalidSourceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidSourceError(f"{path}: is a directory; pass .go files") from None
    except OSError as e:
        raise InvalidSourceError(f"{path}: cannot read: {e.strerror or e}") from None
    return decode_source(data, str(path))


def encode_source(text: str) -> bytes:
    """Encode text for Go tools; lone surrogates (possible from editors) are a clear error."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        line = text.count("\n", 0, e.start) + 1
        raise InvalidSourceError(
            f"line {line}: text contains an unpaired surrogate (U+{ord(text[e.start]):04X}) "
            "that cannot be encoded as UTF-8"
        ) from None


class SourceText:
    """Line table over one text, converting Go/tree-sitter byte positions to code points.

    Lines split on ``\\n`` only (Go's definition); a ``\\r`` before it stays part of the line,
    which does not shift any column before it.
    """

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")

    @property
    def line_count(self) -> int:
        return len(self.lines)

    def char_column(self, line: int, byte_col: int) -> int:
        """1-based byte column on 1-based ``line`` -> 1-based code-point column (clamped)."""
        if line < 1 or line > len(self.lines):
            return 1
        s = self.lines[line - 1]
        if s.isascii():
            return max(1, min(byte_col, len(s) + 1))
        prefix = s.encode("utf-8")[: max(0, byte_col - 1)]
        return len(prefix.decode("utf-8", errors="ignore")) + 1

    def clamp_line(self, line: int) -> int:
        return max(1, min(line, len(self.lines)))

    def line_end_column(self, line: int) -> int:
        """Column just past the last character of ``line`` (excluding a trailing ``\\r``)."""
        s = self.lines[self.clamp_line(line) - 1]
        return len(s.rstrip("\r")) + 1

    def offset_to_position(self, offset: int) -> tuple[int, int]:
        """str index -> (1-based line, 1-based code-point column)."""
        offset = max(0, min(offset, len(self.text)))
        line = self.text.count("\n", 0, offset) + 1
        start = self.text.rfind("\n", 0, offset) + 1
        return line, offset - start + 1

    def diagnostic(
        self,
        line: int,
        byte_col: int,
        message: str,
        stage: Stage,
        severity: Severity = "error",
        end_line: int | None = None,
        end_byte_col: int | None = None,
    ) -> Diagnostic:
        """Build a Diagnostic from Go-style byte positions; a missing end covers one character
        (or to the end of the line when the column is 0/unknown)."""
        line = self.clamp_line(line)
        if byte_col <= 0:
            col, end_l, end_c = 1, line, self.line_end_column(line)
        else:
            col = self.char_column(line, byte_col)
            if end_line is not None and end_byte_col is not None and end_byte_col > 0:
                end_l = self.clamp_line(end_line)
                end_c = self.char_column(end_l, end_byte_col)
                if (end_l, end_c) < (line, col):
                    end_l, end_c = line, col
            else:
                end_l = line
                end_c = col + 1 if col < self.line_end_column(line) else col
        return Diagnostic(line, col, end_l, end_c, severity, message, stage)
