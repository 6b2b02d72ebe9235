"""Stage 3, vet: ``go vet -json`` on the package that holds the file, with the edited text
overlaid, output parsed into diagnostics mapped back to the user's file.

Three kinds of outcome, kept apart:
- analyzer findings (printf, unreachable, ...) from the JSON on stdout → ``warning``;
- type/parse errors (``vet: ./a.go:9:2: declared and not used: x``) on stderr → ``error``;
- the environment could not judge (a module not in the local cache while offline, a go.mod
  needing a newer Go, a broken go.mod, ...) → ``unavailable`` with the reason, no diagnostic.
Findings in *other* files of the package are anchored at the user's ``package`` line with the
other file's name and position in the message, so the result still says "not ok".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from hrm_lsp.validators.go import GoToolchain, run_go
from hrm_lsp.validators.types import MAX_OUTPUT_LINE, Diagnostic, SourceText
from hrm_lsp.validators.workspace import (
    PackageContext,
    Workspace,
    package_clause_line,
    prepared,
    tmp_root,
)

# file.go:LINE:COL: message   (optionally prefixed by "vet: "; COL optional)
_POS = re.compile(r"^(?:vet: )?(?P<file>[^\s:][^:]*?\.go):(?P<line>\d+)(?::(?P<col>\d+))?: (?P<msg>.*)$")
_MISSING = [
    re.compile(r"cannot find module providing package (?P<pkg>\S+)"),
    re.compile(r"no required module provides package (?P<pkg>\S+?);?(?:\s|$)"),
    re.compile(r"missing go\.sum entry for module providing package (?P<pkg>\S+)"),
    re.compile(r"missing go\.sum entry"),
    re.compile(r"module lookup disabled by GOPROXY=off"),
]
# "example.com/m@v1.2.3: module lookup disabled by GOPROXY=off": the module is the first
# token with an "@" before the hint (found by splitting, not by a regex with two unbounded
# quantifiers: that one was quadratic, hours on one 2 MB line of output).
_OFFLINE_HINTS = ("module lookup disabled", "GOPROXY=off", "missing go.sum entry")
_ENV_PROBLEMS = [
    (re.compile(r"requires go >= ?(\S+)|go\.mod requires go >= (\S+)|maximum version supported"),
     "the module needs a newer Go than {go}; install it or point HRM_LSP_GO at it"),
    (re.compile(r"errors parsing go\.mod|go\.mod:\d+: "), "the module's go.mod does not parse; fix it"),
]


@dataclass(frozen=True)
class VetOutcome:
    diagnostics: list[Diagnostic]
    unavailable: str | None
    elapsed_ms: float


def _json_objects(text: str):
    dec = json.JSONDecoder()
    i, n = 0, len(text)
    while i < n:
        i = text.find("{", i)
        if i < 0:
            return
        try:
            obj, j = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield obj
        i = j


class _Mapper:
    """Maps Go's file:line:col to the user's file, or anchors other files' findings."""

    def __init__(self, text: str, ctx: PackageContext, ws: Workspace):
        self.src = SourceText(text)
        self.ctx, self.ws = ctx, ws
        self.anchor = package_clause_line(text)

    def resolve(self, file: str) -> Path:
        p = Path(file)
        return p if p.is_absolute() else (self.ws.cwd / p)

    def is_user(self, p: Path) -> bool:
        if p in self.ws.user_paths:
            return True
        try:
            rp = p.resolve()
        except OSError:
            return False
        if rp in self.ws.user_paths:
            return True
        # Go replays cached vet output verbatim, so a finding can name the overlay copy of
        # an *earlier* run's workspace; any workspace copy with the file's name is ours.
        return rp.name == self.ws.file_name and rp.parent.name.startswith("ws-") and rp.parent.parent == tmp_root().resolve()

    def display(self, p: Path) -> str:
        for base in (self.ws.pkg_dir, self.ctx.module_root):
            if base is not None:
                try:
                    return str(p.resolve().relative_to(base.resolve()))
                except ValueError:
                    pass
        return str(p)

    def make(self, file: str, line: int, col: int, msg: str, severity,
             end: tuple[int, int] | None = None, stage: str = "vet") -> Diagnostic:
        p = self.resolve(file)
        if self.is_user(p):
            if end is not None:
                return self.src.diagnostic(line, col, msg, stage, severity, end[0], end[1])
            return self.src.diagnostic(line, col, msg, stage, severity)
        where = f"{self.display(p)}:{line}" + (f":{col}" if col else "")
        return self.src.diagnostic(self.anchor, 0, f"{where}: {msg}", stage, severity)


def _posn(s: str) -> tuple[str, int, int] | None:
    m = re.match(r"^(.*\.go):(\d+)(?::(\d+))?$", s or "")
    if not m:
        return None
    return m.group(1), int(m.group(2)), int(m.group(3) or 0)


def _versioned_module(line: str) -> str | None:
    """``path@version`` from a line that says the module cannot be fetched offline."""
    at = min((i for i in (line.find(h) for h in _OFFLINE_HINTS) if i >= 0), default=-1)
    if at < 0:
        return None
    head = line[:at]
    tokens = head.split()
    for k, tok in enumerate(tokens):
        # A token followed by whitespace (the hint, or more words, comes after it).
        if "@" in tok[1:-1] and (k + 1 < len(tokens) or head[-1:].isspace()):
            return tok
    return None


def _offline_package(line: str) -> tuple[bool, str]:
    """(whether ``line`` says a module is not available offline, the package or "")."""
    for rx in _MISSING[:3]:
        m = rx.search(line)
        if m:
            return True, m["pkg"]
    versioned = _versioned_module(line)
    if versioned is not None:
        return True, versioned
    return any(rx.search(line) for rx in _MISSING[3:]), ""


def classify_unavailable(output: str, ctx: PackageContext, toolchain: GoToolchain) -> str | None:
    """A reason when Go's output says a dependency or the environment, not the code, failed.

    Linear in the output: each line is judged on its first ``MAX_OUTPUT_LINE`` characters.
    """
    for line in output.splitlines():
        line = line[:MAX_OUTPUT_LINE]
        offline, pkg = _offline_package(line)
        pkg = pkg.rstrip(";:,")
        # A missing package *inside the user's own module* is a code error, not offline.
        own = bool(pkg and ctx.module_path and (pkg == ctx.module_path or
                                                pkg.startswith(ctx.module_path + "/")))
        if offline and not own:
            what = f"{pkg} is" if pkg else "a required module is"
            return (f"{what} not available offline (Go runs with GOPROXY=off): {line.strip()}; "
                    "fetch it once with network access (`go mod download` in the module) "
                    "and validation will use the local module cache")
        for rx, hint in _ENV_PROBLEMS:
            if rx.search(line):
                return f"{line.strip()} — {hint.format(go=toolchain.version)}"
    return None


def parse_vet_output(stdout: str, stderr: str, mapper: _Mapper) -> list[Diagnostic]:
    """Diagnostics from ``go vet -json`` stdout (findings) and stderr (type/parse errors)."""
    diags: list[Diagnostic] = []
    seen: set[tuple] = set()

    def add(d: Diagnostic) -> None:
        key = (d.line, d.column, d.message)
        if key not in seen:
            seen.add(key)
            diags.append(d)

    for obj in _json_objects(stdout):
        for _pkg, analyzers in obj.items():
            if not isinstance(analyzers, dict):
                continue
            for analyzer, findings in analyzers.items():
                if isinstance(findings, dict) and "error" in findings:
                    add(mapper.src.diagnostic(mapper.anchor, 0, f"{analyzer}: {findings['error']}", "vet"))
                    continue
                for f in findings if isinstance(findings, list) else []:
                    pos = _posn(f.get("posn", ""))
                    if pos is None:
                        continue
                    end = _posn(f.get("end", ""))
                    same_file = end is not None and end[0] == pos[0]
                    add(mapper.make(pos[0], pos[1], pos[2], f"{f.get('message', '')} ({analyzer})",
                                    "warning", (end[1], end[2]) if same_file else None))
    for line in stderr.splitlines():
        m = _POS.match(line[:MAX_OUTPUT_LINE].strip())
        if m:
            add(mapper.make(m["file"], int(m["line"]), int(m["col"] or 0), m["msg"], "error"))
    diags.sort(key=lambda d: (d.line, d.column))
    return diags


def run_vet(text: str, ctx: PackageContext, toolchain: GoToolchain, timeout: float = 10.0,
            cancelled=None) -> VetOutcome:
    """Vet the package containing ``ctx.file`` with ``text`` in place of that file."""
    with prepared(text, ctx, toolchain) as ws:
        run = run_go(toolchain, ["vet", "-json", *ws.flags, "."], cwd=ws.cwd, timeout=timeout,
                     cancelled=cancelled)
        mapper = _Mapper(text, ctx, ws)
        diags = parse_vet_output(run.stdout, run.stderr, mapper)
        # Type errors print only when vet fails; an unusable environment prints no positions
        # in this package, or the known offline messages.
        reason = classify_unavailable(run.stderr, ctx, toolchain) if run.returncode != 0 else None
        if reason:
            return VetOutcome([], ws.user_facing(reason), run.elapsed_ms)
        if run.returncode != 0 and not diags:
            lines = [ln for ln in run.stderr.strip().splitlines() if not ln.startswith("#")]
            tail = "\n".join(lines)[-600:] or f"exit status {run.returncode}"
            return VetOutcome([], ws.user_facing(f"go vet failed without a diagnostic for this file: {tail}"),
                              run.elapsed_ms)
        return VetOutcome(diags, None, run.elapsed_ms)
