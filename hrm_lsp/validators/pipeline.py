"""The validator pipeline: syntax → gofmt → vet → (opt-in) test, as named steps in order.

Each stage runs only when asked for and when the stages before it passed; a stage that did
not run says why in ``result.skipped``. Results are cached (see cache.py); timeouts and
"could not judge" outcomes are reported through ``unavailable`` and never cached.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from hrm_lsp.log import get_logger
from hrm_lsp.validators import cache as vcache
from hrm_lsp.validators.go import (
    GoCancelledError,
    GoNotFoundError,
    GoTimeoutError,
    GoToolchain,
    find_go,
)
from hrm_lsp.validators.gofmt import run_gofmt
from hrm_lsp.validators.gotest import run_tests
from hrm_lsp.validators.treesitter import syntax_errors
from hrm_lsp.validators.types import (
    FAILING_SEVERITIES,
    STAGES,
    Diagnostic,
    ValidationResult,
    decode_source,
    encode_source,
    read_source,
)
from hrm_lsp.validators.vet import run_vet
from hrm_lsp.validators.workspace import package_context

log = get_logger(__name__)

DEFAULT_STAGES = ("syntax", "gofmt", "vet")
GO_STAGES = ("gofmt", "vet", "test")

RESULTS = vcache.ResultCache()


def _failing(diags: list[Diagnostic]) -> bool:
    return any(d.severity in FAILING_SEVERITIES for d in diags)


def validate(
    text: str | bytes,
    path: str | os.PathLike | None = None,
    stages: tuple[str, ...] | list[str] = DEFAULT_STAGES,
    timeout: float = 10.0,
    *,
    go: GoToolchain | str | os.PathLike | None = None,
    focus: int | None = None,
    use_cache: bool = True,
    deadline: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ValidationResult:
    """Validate Go source ``text`` as the file at ``path`` (see docs/architecture.md).

    ``stages`` is any of syntax/gofmt/vet/test (test is opt-in: it runs code); ``timeout`` is
    per Go process, in seconds; ``go`` is a toolchain or an explicit go path (default:
    discovery); ``focus`` is a str offset inside the edited function, used by the test stage
    to pick tests with ``-run``. ``deadline`` (a ``time.monotonic()`` value) bounds the Go
    stages: each Go process gets at most the time left, and a stage is not started once it
    has passed ("skipped: time budget spent"); ``cancelled()`` turning true kills a running
    Go process and skips the rest. Results cut short either way are not cached. Raises
    InvalidSourceError for text that is not UTF-8 and ValueError for unknown stages;
    everything else is reported in the result.
    """
    t0 = time.perf_counter()
    if isinstance(text, (bytes, bytearray)):
        text = decode_source(bytes(text), str(path) if path is not None else "<input>")
    encode_source(text)  # lone surrogates -> InvalidSourceError before any work
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown validator stage(s) {', '.join(map(repr, unknown))}; choose from {', '.join(STAGES)}")
    wanted = [s for s in STAGES if s in stages]
    if not wanted:
        raise ValueError("no validator stages requested")

    toolchain: GoToolchain | None = None
    go_problem: str | None = None
    if any(s in GO_STAGES for s in wanted):
        try:
            toolchain = go if isinstance(go, GoToolchain) else find_go(go)
        except GoNotFoundError as e:
            go_problem = str(e)
    ctx = package_context(path, toolchain)

    key = None
    # Test results depend on what the tests read (env, files); Go's own test cache tracks
    # that, so runs with the test stage are never cached here.
    if use_cache and "test" not in wanted:
        key = vcache.cache_key(text, ctx, toolchain.version if toolchain else go_problem, tuple(wanted))
        hit = RESULTS.get(key)
        if hit is not None:
            return _copy(hit, cached=True, elapsed_ms=(time.perf_counter() - t0) * 1000.0)

    diags: list[Diagnostic] = []
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    formatted: str | None = None
    changed = False
    unavailable: str | None = None
    reached = wanted[0]
    blocked: str | None = None  # why later stages do not run
    cut_short = False  # a stage skipped for time or cancellation: not a result to cache

    for stage in wanted:
        if blocked:
            skipped[stage] = blocked
            continue
        if stage in GO_STAGES and toolchain is None:
            skipped[stage] = go_problem or "Go not found"
            continue
        stage_timeout = timeout
        if stage in GO_STAGES:
            if cancelled is not None and cancelled():
                skipped[stage] = blocked = "skipped: cancelled"
                cut_short = True
                continue
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    skipped[stage] = blocked = "skipped: time budget spent"
                    cut_short = True
                    continue
                stage_timeout = min(timeout, left)
        reached = stage
        s0 = time.perf_counter()
        try:
            if stage == "syntax":
                found = syntax_errors(text)
                diags += found
                if found:
                    blocked = "skipped: syntax errors"
            elif stage == "gofmt":
                out = run_gofmt(text, toolchain, stage_timeout, cancelled)
                diags += out.diagnostics
                formatted, changed = out.formatted, out.changed
                if _failing(out.diagnostics):
                    blocked = "skipped: gofmt could not parse the file"
            elif stage == "vet":
                out = run_vet(text, ctx, toolchain, stage_timeout, cancelled)
                diags += out.diagnostics
                if out.unavailable:
                    unavailable = out.unavailable
                    blocked = "skipped: vet could not judge the package"
                elif _failing(out.diagnostics):
                    blocked = "skipped: go vet found problems"
            elif stage == "test":
                out = run_tests(text, ctx, toolchain, focus=focus, timeout=stage_timeout,
                                cancelled=cancelled)
                diags += out.diagnostics
                if out.unavailable:
                    unavailable = out.unavailable
        except GoCancelledError:
            unavailable = f"{stage}: cancelled"
            blocked = "skipped: cancelled"
        except GoTimeoutError as e:
            if stage_timeout < timeout:
                unavailable = f"{stage}: stopped at the request's time budget ({e})"
            else:
                unavailable = f"{stage}: {e}"
            blocked = f"skipped: {stage} timed out"
        timings[stage] = (time.perf_counter() - s0) * 1000.0

    result = ValidationResult(
        ok=not _failing(diags),
        stage=reached,  # type: ignore[arg-type]
        diagnostics=diags,
        formatted=formatted,
        changed=changed,
        skipped=skipped,
        unavailable=unavailable,
        elapsed_ms=(time.perf_counter() - t0) * 1000.0,
        timings_ms=timings,
        go_version=toolchain.version if toolchain else None,
    )
    if key is not None and unavailable is None and not cut_short:
        RESULTS.put(key, result)
    return result


def _copy(r: ValidationResult, **changes) -> ValidationResult:
    from dataclasses import replace

    return replace(r, diagnostics=list(r.diagnostics), skipped=dict(r.skipped),
                   timings_ms=dict(r.timings_ms), **changes)


def validate_file(path: str | os.PathLike, **kwargs) -> ValidationResult:
    """Read ``path`` (strict UTF-8, InvalidSourceError otherwise) and validate it in place."""
    return validate(read_source(path), Path(path), **kwargs)
