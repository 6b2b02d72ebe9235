"""``hrm-lsp check``: run the pipeline over files and report (the CLI stays a thin wrapper).

Exit status contract: 0 every file passed with no diagnostic; 1 some diagnostic; 2 a usage or
environment problem (unreadable file, not UTF-8, Go missing for a requested stage, vet could
not judge because a dependency is unavailable offline or timed out). 2 wins over 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hrm_lsp.validators.pipeline import validate
from hrm_lsp.validators.types import InvalidSourceError, ValidationResult, read_source

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_ENV = 0, 1, 2


@dataclass
class FileReport:
    path: str
    result: ValidationResult | None = None
    error: str | None = None  # could not validate at all
    problems: list[str] = field(default_factory=list)  # environment notes (skipped/unavailable)

    @property
    def exit_code(self) -> int:
        if self.error or self.problems:
            return EXIT_ENV
        if self.result is not None and self.result.diagnostics:
            return EXIT_DIAGNOSTICS
        return EXIT_OK


def check_file(path: str, *, vet: bool = True, timeout: float = 60.0) -> FileReport:
    """Validate one file from disk; every failure becomes part of the report, never raised."""
    rep = FileReport(path)
    p = Path(path)
    if p.suffix != ".go":
        rep.error = f"{path}: not a .go file"
        return rep
    try:
        text = read_source(path)
    except InvalidSourceError as e:
        rep.error = str(e)
        return rep
    stages = ("syntax", "gofmt", "vet") if vet else ("syntax", "gofmt")
    rep.result = validate(text, p, stages=stages, timeout=timeout)
    for stage, why in rep.result.skipped.items():
        if not why.startswith("skipped:"):  # a missing toolchain, not an earlier failure
            rep.problems.append(f"{path}: {stage}: not run: {why}")
    if rep.result.unavailable:
        rep.problems.append(f"{path}: vet: unavailable: {rep.result.unavailable}")
    return rep


def run_check(paths: list[str], *, vet: bool = True, timeout: float = 60.0) -> list[FileReport]:
    """Check every file; the order of reports follows ``paths``."""
    return [check_file(p, vet=vet, timeout=timeout) for p in paths]


def exit_code(reports: list[FileReport]) -> int:
    """The command's exit status for these reports (see module docstring)."""
    return max((r.exit_code for r in reports), default=EXIT_OK)


def format_text(reports: list[FileReport]) -> tuple[list[str], list[str]]:
    """(stdout lines ``path:line:col: stage: message``, stderr lines for problems)."""
    out, err = [], []
    for r in reports:
        if r.error:
            err.append(f"error: {r.error}")
            continue
        assert r.result is not None
        for d in r.result.diagnostics:
            sev = "" if d.severity == "error" else f"{d.severity}: "
            out.append(f"{r.path}:{d.line}:{d.column}: {d.stage}: {sev}{d.message}")
        err.extend(f"warning: {p}" for p in r.problems)
    return out, err


def format_json(reports: list[FileReport]) -> str:
    """One JSON document with every file's result and the exit status."""
    files = []
    for r in reports:
        item: dict = {"path": r.path}
        if r.error:
            item["error"] = r.error
        else:
            item.update(r.result.to_dict())  # type: ignore[union-attr]
            item["problems"] = r.problems
        files.append(item)
    return json.dumps({"exit_code": exit_code(reports), "files": files}, indent=2, ensure_ascii=False)
