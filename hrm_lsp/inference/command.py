"""``hrm-lsp complete FILE:LINE:COL``: the library side of the command (the CLI is thin)."""

from __future__ import annotations

import re
from pathlib import Path

from hrm_lsp.inference.types import Completion, CompletionRequest, InferenceError

_LOC = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<col>\d+)$")


def parse_location(spec: str) -> tuple[Path, int, int]:
    """``FILE:LINE:COL`` (1-based) -> (path, line, col); InferenceError when malformed."""
    m = _LOC.match(spec)
    if not m:
        raise InferenceError(f"{spec!r}: expected FILE:LINE:COL with 1-based LINE and COL")
    line, col = int(m.group("line")), int(m.group("col"))
    if line < 1 or col < 1:
        raise InferenceError(f"{spec!r}: LINE and COL are 1-based")
    return Path(m.group("path")), line, col


def offset_of(text: str, line: int, col: int) -> int:
    """str offset of 1-based ``line`` and ``col`` (col counts characters; clamped to the
    line's end, so COL one past the last character is the end of the line)."""
    lines = text.split("\n")
    if line > len(lines):
        raise InferenceError(f"line {line} is past the end of the file ({len(lines)} lines)")
    start = sum(len(x) + 1 for x in lines[: line - 1])
    width = len(lines[line - 1].rstrip("\r"))
    if col > width + 1:
        raise InferenceError(f"column {col} is past the end of line {line} ({width} characters)")
    return start + col - 1


def read_go_file(path: Path) -> str:
    """The file's text (strict UTF-8), or InferenceError saying what is wrong."""
    from hrm_lsp.validators.types import InvalidSourceError, read_source

    try:
        return read_source(path)
    except InvalidSourceError as e:
        raise InferenceError(str(e)) from None


def run_complete(spec: str, model: str | None, *, multiline: bool, max_tokens: int | None,
                 time_budget_ms: float, refine: bool, stages: tuple[str, ...],
                 device: str = "auto", temperature: float = 0.0, top_p: float = 1.0,
                 backend: str = "auto", sources: str = "both", min_confidence: float = 0.0,
                 workspace: Path | None = None) -> Completion:
    """Load the model, read the file, index its workspace (unless ``sources`` is model)
    and complete at the location."""
    from hrm_lsp.inference.engine import Engine

    path, line, col = parse_location(spec)
    text = read_go_file(path)
    offset = offset_of(text, line, col)
    engine = Engine.load(model, device=device, backend=backend)
    index = None
    if sources != "model":
        from hrm_lsp.index.command import build, workspace_of

        index = build([workspace or workspace_of(path)], engine.tok)
    req = CompletionRequest(
        text=text, offset=offset, path=str(path.resolve()), multiline=multiline,
        max_tokens=max_tokens or (256 if multiline else 64), temperature=temperature,
        top_p=top_p, time_budget_ms=time_budget_ms, refine=refine, stages=stages,
        sources=sources, min_confidence=min_confidence)
    return engine.complete(req, session_key=str(path), index=index)


def format_text(comp: Completion) -> list[str]:
    """Human-readable lines: plan, completion, validation, timings."""
    out = [f"plan: {comp.plan.one_line() or '(none)'}",
           f"completion ({comp.sources or 'model'}"
           + (f", confidence {comp.confidence:.2f}" if comp.confidence is not None else "")
           + "):"]
    out += ["  " + line for line in (comp.text.split("\n") if comp.text else ["(empty)"])]
    if comp.withheld:
        out.append(f"withheld (an editor would show nothing): {comp.withheld}")
    v = comp.validation
    if v is None:
        out.append("validation: not run")
    else:
        out.append(f"validation: {'ok' if v.ok else 'FAILED'} (last stage: {v.stage})")
        for d in v.diagnostics:
            out.append(f"  {d.line}:{d.column}: {d.severity}: {d.message} [{d.stage}]")
        for stage, why in (getattr(v, "skipped", None) or {}).items():
            out.append(f"  {stage} skipped: {why}")
    t = comp.timings
    out.append(f"iterations: {comp.iterations}; stop: {comp.stop_reason}; "
               f"elapsed {comp.elapsed_ms:.0f} ms (prefill {t.prefill_ms:.0f} ms for "
               f"{t.prefill_tokens} tokens, {t.reused_tokens} reused; decode {t.decode_ms:.0f} ms "
               f"for {t.decode_tokens} tokens; validate {t.validate_ms:.0f} ms)")
    return out
