"""Stage 4, tests (opt-in: it runs the user's code): ``go test`` on the package with the
edited text overlaid, restricted with ``-run`` to the tests that mention the edited function
when such tests can be found. Passing is the ``<TEST_PASS>`` signal of the refinement loop.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from hrm_lsp.validators import treesitter
from hrm_lsp.validators.go import GoToolchain, run_go
from hrm_lsp.validators.types import MAX_OUTPUT_LINE, Diagnostic, SourceText
from hrm_lsp.validators.vet import _Mapper, classify_unavailable
from hrm_lsp.validators.workspace import PackageContext, package_clause_line, prepared

_TEST_FUNC = re.compile(r"^(Test|Fuzz|Example)")
_LOC = re.compile(r"^\s*(?P<file>[\w.\-]+\.go):(?P<line>\d+): (?P<msg>.*)$")
_BUILD_POS = re.compile(r"^(?:vet: )?(?P<file>[^\s:][^:]*?\.go):(?P<line>\d+)(?::(?P<col>\d+))?: (?P<msg>.*)$")


@dataclass(frozen=True)
class TestOutcome:
    diagnostics: list[Diagnostic]
    unavailable: str | None
    ran: tuple[str, ...]  # names of tests selected with -run (empty: the whole package)
    elapsed_ms: float


def _identifiers(node, data: bytes, out: set[str]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type in ("identifier", "field_identifier"):
            out.add(data[n.start_byte:n.end_byte].decode("utf-8", errors="replace"))
        stack.extend(n.children)


def tests_mentioning(name: str, sources: list[str]) -> list[str]:
    """Names of Test/Fuzz/Example functions in ``sources`` whose bodies mention ``name``
    (a call ``name(...)`` or a method/selector ``x.name``); a test named ``name`` itself counts."""
    found: list[str] = []
    for text in sources:
        data = text.encode("utf-8")
        tree = treesitter.parse(data)
        for node in tree.root_node.children:
            if node.type != "function_declaration":
                continue
            n = node.child_by_field_name("name")
            tname = data[n.start_byte:n.end_byte].decode() if n else ""
            if not _TEST_FUNC.match(tname):
                continue
            body = node.child_by_field_name("body")
            ids: set[str] = set()
            if body is not None:
                _identifiers(body, data, ids)
            if tname == name or name in ids:
                found.append(tname)
    return sorted(set(found))


def _package_tests(text: str, ctx: PackageContext) -> list[str]:
    """Sources of the package's _test.go files, with the edited text in place of its file."""
    sources = []
    if ctx.pkg_dir is not None:
        for p in sorted(ctx.pkg_dir.glob("*_test.go")):
            if p.name == ctx.file.name:
                continue
            try:
                sources.append(p.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
    if ctx.file.name.endswith("_test.go"):
        sources.append(text)
    return sources


def run_tests(
    text: str,
    ctx: PackageContext,
    toolchain: GoToolchain,
    *,
    focus: int | None = None,
    timeout: float = 10.0,
    cancelled=None,
) -> TestOutcome:
    """Run the package's tests (those mentioning the function at str offset ``focus`` when
    any do). Failing tests become ``test`` diagnostics at that function (else the package line)."""
    fn = treesitter.enclosing_function(text, focus) if focus is not None else None
    selected: tuple[str, ...] = ()
    if fn is not None and fn.name:
        selected = tuple(tests_mentioning(fn.name, _package_tests(text, ctx)))
    args = ["test", "-json", "-vet=off", f"-timeout={max(1, int(timeout))}s"]
    if selected:
        args.append("-run=^(" + "|".join(re.escape(t) for t in selected) + ")$")
    src = SourceText(text)
    anchor = fn.start_line if fn is not None else package_clause_line(text)
    with prepared(text, ctx, toolchain) as ws:
        run = run_go(toolchain, [*args, *ws.flags, "."], cwd=ws.cwd, timeout=timeout,
                     cancelled=cancelled)
        mapper = _Mapper(text, ctx, ws)
        outputs: dict[str, list[str]] = {}
        failed: list[str] = []
        build_lines: list[str] = []
        for obj in _events(run.stdout):
            action, test = obj.get("Action"), obj.get("Test")
            if action == "build-output":
                build_lines.append(obj.get("Output", ""))
            elif action == "output":
                outputs.setdefault(test or "", []).append(obj.get("Output", ""))
            elif action == "fail" and test and "/" not in test:
                failed.append(test)
        diags: list[Diagnostic] = []
        # Compile errors (build-output events, or stderr for older Go).
        for line in [*("".join(build_lines)).splitlines(), *run.stderr.splitlines()]:
            m = _BUILD_POS.match(line[:MAX_OUTPUT_LINE].strip())
            if m:
                diags.append(mapper.make(m["file"], int(m["line"]), int(m["col"] or 0), m["msg"], "error",
                                         stage="test"))
        if run.returncode != 0 and not diags:
            reason = classify_unavailable(run.stderr + "".join(build_lines), ctx, toolchain)
            if reason:
                return TestOutcome([], ws.user_facing(reason), selected, run.elapsed_ms)
        for test in failed:
            lines = [ln.rstrip("\n") for ln in outputs.get(test, [])]
            detail = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("=== ", "--- "))]
            line_no = anchor
            for ln in lines:  # a failure reported from the user's own (test) file points there
                m = _LOC.match(ln[:MAX_OUTPUT_LINE])
                if m and mapper.is_user(mapper.resolve(m["file"])):
                    line_no = int(m["line"])
                    break
            msg = f"{test} failed" + (": " + " | ".join(detail[:5]) if detail else "")
            diags.append(src.diagnostic(line_no, 0, msg, "test"))
        if run.returncode != 0 and not diags:
            tail = "".join(outputs.get("", []))[-400:] or run.stderr[-400:]
            diags.append(src.diagnostic(anchor, 0, f"go test failed: {tail.strip()}", "test"))
        return TestOutcome(diags, None, selected, run.elapsed_ms)


def _events(stdout: str):
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


