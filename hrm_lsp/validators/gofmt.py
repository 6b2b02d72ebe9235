"""Stage 2, gofmt: ``gofmt -e`` through stdin.

Parse errors become ``gofmt`` diagnostics. When the text parses, the stage returns the
formatted text and whether formatting changed anything; a change is reported as one
``info`` diagnostic at the first line gofmt would rewrite (advice, not a failure).

CRLF files: gofmt emits LF. When every line of the input ends in CRLF we compare ignoring
that, and hand back the formatted text with CRLF restored, so a Windows file is not
"unformatted" just for its line endings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hrm_lsp.validators.go import GoToolchain, run_go
from hrm_lsp.validators.types import MAX_OUTPUT_LINE, Diagnostic, SourceText, encode_source

_ERR = re.compile(r"^<standard input>:(\d+):(\d+): (.*)$")


@dataclass(frozen=True)
class GofmtOutcome:
    diagnostics: list[Diagnostic]
    formatted: str | None
    changed: bool
    elapsed_ms: float


def _is_crlf(text: str) -> bool:
    n = text.count("\n")
    return n > 0 and text.count("\r\n") == n


def run_gofmt(text: str, toolchain: GoToolchain, timeout: float = 10.0,
              cancelled=None) -> GofmtOutcome:
    """Run gofmt on ``text``; raises GoTimeoutError when it runs past ``timeout`` (and
    GoCancelledError, a subclass, when ``cancelled()`` turns true)."""
    src = SourceText(text)
    run = run_go(toolchain, ["-e"], stdin=encode_source(text), timeout=timeout, binary="gofmt",
                 cancelled=cancelled)
    if run.returncode != 0:
        diags = []
        for line in run.stderr.splitlines():
            m = _ERR.match(line[:MAX_OUTPUT_LINE].strip())
            if m:
                diags.append(src.diagnostic(int(m.group(1)), int(m.group(2)), m.group(3), "gofmt"))
        if not diags:
            msg = run.stderr.strip() or f"gofmt exited with status {run.returncode}"
            diags.append(src.diagnostic(1, 0, msg, "gofmt"))
        return GofmtOutcome(diags, None, False, run.elapsed_ms)

    formatted = run.stdout
    crlf = _is_crlf(text)
    base = text.replace("\r\n", "\n") if crlf else text
    changed = formatted != base
    diags: list[Diagnostic] = []
    if changed:
        line = _first_changed_line(base, formatted)
        diags.append(
            src.diagnostic(line, 0, "not gofmt-formatted: gofmt would rewrite from this line "
                           "(run gofmt -w, or use the formatted text)", "gofmt", severity="info")
        )
    if crlf:
        formatted = formatted.replace("\n", "\r\n")
    return GofmtOutcome(diags, formatted, changed, run.elapsed_ms)


def _first_changed_line(a: str, b: str) -> int:
    la, lb = a.split("\n"), b.split("\n")
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return i + 1
    return min(len(la), len(lb))
