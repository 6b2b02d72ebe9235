"""Suggestion quality through the real server (docs/benchmarks.md, "Suggestion quality").

    .venv/bin/python benchmarks/quality.py                              # 300+100+100 cases, model
    .venv/bin/python benchmarks/quality.py --sources model,index,both --json out.json
    .venv/bin/python benchmarks/quality.py --limit 50                   # a quick run
    .venv/bin/python benchmarks/quality.py --repo ~/src/mine --packages internal/foo

Cases come from the held-out repositories in ``../shared/heldout/`` (git bundles, never
training data), cloned under the work directory (``--work``, default
``~/.cache/hrm-lsp/bench/quality``), or from ``--repo`` checkouts. Tree-sitter picks the
sites (``benchmarks/quality_cases.py``): next-line, mid-line and function-body holes,
deterministic for a ``--seed``, spread over every repository and many files (at most a few
cases of each kind per file). ``_test.go``, generated files, ``vendor/``, ``testdata/`` and
files git ignores are never holed (they stay in the workspace).

Each case goes through ``hrm-lsp serve`` over stdio as an editor sends it: ``initialize``
with the repository's copy as the workspace folder, ``didOpen``/``didChange`` of the holed
document, ``textDocument/inlineCompletion`` (Automatic trigger for line and mid-line cases,
Invoked for bodies), then ``textDocument/completion`` when inline answers nothing. One
server serves one file: the workspace is a copy of the repository without ``.git`` in
which that file is deleted while its server runs, so the original text of a holed file is
never readable by the server (the open document is the holed text). The sources
(``completionSources`` = model | index | both) are switched with
``workspace/didChangeConfiguration`` on the same server, every case and source with a new
document version, so no answer comes from the server's result cache of another source.

Scores: exact match and edit similarity (1 - Levenshtein / max length) of the suggestion's
first line against the rest of the line; for bodies, the whole body against the removed
one, plus: the spliced file parses (``gofmt -e``), passes ``go vet`` (only over cases whose
original file passes vet offline), vet-ok and similarity >= 0.5. An unanswered case fails
every metric. Latency is the client's round trip (inline plus the fallback when it ran).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("GOTOOLCHAIN", "local")
os.environ.setdefault("GOPROXY", "off")

from lsprotocol import types  # noqa: E402

from benchmarks.quality_cases import (  # noqa: E402
    KINDS,
    Case,
    aggregate,
    file_cases,
    score_body_text,
    score_line,
    select_cases,
    summary_line,
)
from benchmarks.server import start_client, stop_client, wait_model  # noqa: E402
from hrm_lsp.server.positions import LineIndex  # noqa: E402

HELDOUT = ROOT.parent / "shared" / "heldout"
SOURCES = ("model", "index", "both")
DEFAULT_COUNTS = {"line": 300, "midline": 100, "body": 100}
DEFAULT_CAPS = {"line": 8, "midline": 3, "body": 3}
READY_TIMEOUT_S = 600.0
VET_STAGES = ("syntax", "gofmt", "vet")


# --- repositories and cases ---------------------------------------------------------------

def clone_bundles(heldout: Path, work: Path) -> list[Path]:
    """Clone each ``*.bundle`` of ``heldout`` once under ``work/repos`` (reused later)."""
    bundles = sorted(heldout.glob("*.bundle"))
    if not bundles:
        raise SystemExit(f"no .bundle files in {heldout}; pass --repo DIR")
    out = []
    for b in bundles:
        dest = work / "repos" / b.stem
        if not (dest / ".git").is_dir():
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "--quiet", str(b), str(dest)], check=True)
        out.append(dest)
    return out


def module_path(repo: Path) -> str | None:
    """The ``module`` line of ``repo/go.mod`` (for --packages given as import paths)."""
    try:
        for line in (repo / "go.mod").read_text(encoding="utf-8").splitlines():
            if line.startswith("module "):
                return line.split()[1].strip('"')
    except OSError:
        return None
    return None


def wanted_package(rel_dir: str, module: str | None, packages: set[str] | None) -> bool:
    """Does a file in ``rel_dir`` (posix, "." for the root) belong to ``--packages``?"""
    if packages is None:
        return True
    names = {rel_dir, rel_dir.strip("./") or "."}
    if module:
        names.add(module if rel_dir == "." else f"{module}/{rel_dir}")
    return bool(names & packages)


def repo_label(repo: Path) -> str:
    return repo.name


def collect_files(repos: list[Path], packages: set[str] | None) -> dict[tuple[str, str], str]:
    """{(repo, path): text} of every Go file a hole may be cut from."""
    from hrm_lsp.data.sources import Skips, list_go_files, read_go_file

    files: dict[tuple[str, str], str] = {}
    for repo in repos:
        mod = module_path(repo)
        for f in list_go_files(repo, Skips()):
            if f.name.endswith("_test.go"):
                continue
            rel = f.relative_to(repo).as_posix()
            rel_dir = Path(rel).parent.as_posix()
            if not wanted_package(rel_dir, mod, packages):
                continue
            text, _why = read_go_file(f)
            if text is not None:  # generated, binary, not UTF-8, too large: skipped
                files[(repo_label(repo), rel)] = text
    return files


def kind_counts(args: argparse.Namespace) -> dict[str, int]:
    counts = dict(DEFAULT_COUNTS)
    if args.per_kind:
        vals = [int(v) for v in args.per_kind.split(",")]
        if len(vals) == 1:
            vals *= len(KINDS)
        if len(vals) != len(KINDS) or min(vals) < 0:
            raise SystemExit("--per-kind takes N or LINE,MIDLINE,BODY (non-negative)")
        counts = dict(zip(KINDS, vals, strict=True))
    if args.limit is not None:
        total = sum(counts.values()) or 1
        counts = {k: min(v, max(1 if v else 0, round(args.limit * v / total)))
                  for k, v in counts.items()}
    return counts


# --- the server side ----------------------------------------------------------------------

def fresh_workspace(pristine: Path, ws: Path) -> None:
    """A copy of the repository without ``.git`` (git objects hold every original)."""
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(pristine, ws, ignore=shutil.ignore_patterns(".git"), symlinks=True)


def index_state(status: dict) -> str | None:
    """The index state ``hrm-lsp.status`` reports (``off``, ``building``, ``ready``), if any."""
    idx = status.get("index")
    return str(idx.get("state", "")).lower() if isinstance(idx, dict) else None


INDEX_BUSY = ("building", "loading", "indexing", "pending", "starting")
INDEX_START_TIMEOUT_S = 30.0


async def wait_ready(client, need_index: bool, timeout: float = READY_TIMEOUT_S) -> dict:
    """Model ready, no ``$/progress`` running and no index building (with ``need_index``,
    an index that has not started yet counts as building): cases then see everything the
    server will have for them. A request never waits for the index; the benchmark measures
    the settled state."""
    st, _ = await wait_model(client)
    t0 = time.perf_counter()
    while True:
        state = index_state(st)
        waited = time.perf_counter() - t0
        starting = need_index and state == "off" and waited < INDEX_START_TIMEOUT_S
        if not (client.progress_active or state in INDEX_BUSY or starting):
            break
        if waited > timeout:
            print(f"warning: server still busy after {timeout:.0f} s (index {state}, progress "
                  f"{sorted(map(str, client.progress_active))}); measuring anyway", file=sys.stderr)
            break
        await asyncio.sleep(0.1)
        st = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="hrm-lsp.status", arguments=[]))
    if need_index and index_state(st) not in (None, "ready"):
        print(f"warning: index state {index_state(st)!r} for {sorted(client.progress_active)}",
              file=sys.stderr)
    return st


def _inline_text(res) -> str | None:
    items = res.items if isinstance(res, types.InlineCompletionList) else (res or [])
    if not items:
        return None
    text = items[0].insert_text
    return text if isinstance(text, str) else getattr(text, "value", None)


def _completion_text(res, holed: str, offset: int) -> str | None:
    """What a completion item inserts after the cursor (its textEdit replaces the word typed)."""
    items = res.items if isinstance(res, types.CompletionList) else (res or [])
    if not items:
        return None
    item = items[0]
    edit = item.text_edit
    if edit is None:
        return item.insert_text or item.label
    rng = getattr(edit, "range", None) or getattr(edit, "replace", None)
    idx = LineIndex(holed)
    start = idx.offset(rng.start.line, rng.start.character)
    typed = holed[start:offset]
    return edit.new_text[len(typed):] if edit.new_text.startswith(typed) else edit.new_text


async def ask(client, uri: str, case: Case, holed: str) -> tuple[str | None, float, str]:
    """One case as an editor asks for it: (suggestion, round trip ms, which request answered)."""
    p = LineIndex(holed).position(case.offset)
    pos = types.Position(p.line, p.character)
    doc = types.TextDocumentIdentifier(uri=uri)
    body = case.kind == "body"
    trigger = types.InlineCompletionTriggerKind.Invoked if body else \
        types.InlineCompletionTriggerKind.Automatic
    t0 = time.perf_counter()
    res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=doc, position=pos, context=types.InlineCompletionContext(trigger_kind=trigger)))
    text, via = _inline_text(res), "inline"
    if not (text and text.strip()):
        # Typing-time popup requests carry no Invoked context (the server's fast path);
        # a body is what Ctrl+Space asks for.
        ctx = types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked) if body else None
        res = await client.text_document_completion_async(types.CompletionParams(
            text_document=doc, position=pos, context=ctx))
        text, via = _completion_text(res, holed, case.offset), "completion"
    return text, (time.perf_counter() - t0) * 1000, via


def source_settings(base: dict, source: str) -> dict:
    return {**base, "completionSources": source}


async def run_file(model: Path, ws: Path, rel: str, original: str, cases: list[Case],
                   sources: list[str], base: dict, log_file: Path, progress,
                   log_level: str = "ERROR") -> list[dict]:
    """One server for one holed file: every case under every source."""
    target = ws / rel
    target.unlink()  # the original is never readable by the server
    try:
        client = await start_client(model, source_settings(base, sources[0]), workspace=ws,
                                    log_file=log_file, log_level=log_level, name="hrm-lsp-quality")
        try:
            st = await wait_ready(client, sources[0] != "model")
            check_sources(st, sources)
            uri = target.resolve().as_uri()
            version = 1
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="go", version=version,
                                                     text=cases[0].holed(original))))
            out = []
            for i, source in enumerate(sources):
                if i > 0:
                    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
                        settings={"hrmLsp": source_settings(base, source)}))
                    await wait_ready(client, source != "model")
                for case in cases:
                    holed = case.holed(original)
                    version += 1  # a new version per case and source: no cached answers
                    client.text_document_did_change(types.DidChangeTextDocumentParams(
                        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                        content_changes=[types.TextDocumentContentChangeWholeDocument(text=holed)]))
                    text, ms, via = await ask(client, uri, case, holed)
                    out.append({"id": case.id, "kind": case.kind, "repo": case.repo,
                                "path": case.path, "source": source, "suggestion": text,
                                "latency_ms": round(ms, 1), "via": via})
                    progress.update(1)
        finally:
            await stop_client(client)
    finally:
        target.write_text(original, encoding="utf-8")
    return out


_checked_sources = False


def check_sources(status: dict, sources: list[str]) -> None:
    """Refuse to report index/both figures from a server that does not know the setting."""
    global _checked_sources
    if _checked_sources:
        return
    _checked_sources = True
    settings = status.get("settings", {})
    if "completion_sources" not in settings and "completionSources" not in settings:
        if any(s != "model" for s in sources):
            raise SystemExit("this server has no completionSources setting (it answers with "
                             "the model only); run with --sources model")


# --- scoring ------------------------------------------------------------------------------

class Scorer:
    """Go checks of body suggestions, spliced into the pristine repository's file."""

    def __init__(self, pristine: dict[str, Path], timeout: float) -> None:
        self.pristine = pristine
        self.timeout = timeout
        self._vet_eligible: dict[tuple[str, str], bool] = {}

    def vet_eligible(self, case: Case, original: str) -> bool:
        """Does the original file pass go vet offline? (Only those cases count for vet.)"""
        key = (case.repo, case.path)
        if key not in self._vet_eligible:
            r = self._validate(case, original, VET_STAGES)
            self._vet_eligible[key] = r.ok and r.unavailable is None and r.stage == "vet"
        return self._vet_eligible[key]

    def _validate(self, case: Case, text: str, stages: tuple[str, ...]):
        from hrm_lsp.validators import validate

        return validate(text, path=self.pristine[case.repo] / case.path, stages=stages,
                        timeout=self.timeout)

    def score(self, case: Case, original: str, suggestion: str | None) -> dict:
        expected = case.expected(original)
        if case.kind != "body":
            return score_line(suggestion, expected)
        rec = score_body_text(suggestion, expected)
        rec["vet_eligible"] = self.vet_eligible(case, original)
        rec["parses"] = rec["vet_ok"] = False
        if rec["answered"]:
            spliced = case.splice(original, suggestion or "")
            r = self._validate(case, spliced, ("gofmt",))  # gofmt -e: does it parse?
            rec["parses"] = r.ok and "gofmt" not in r.skipped and r.unavailable is None
            if rec["parses"] and rec["vet_eligible"]:
                r = self._validate(case, spliced, VET_STAGES)
                rec["vet_ok"] = r.ok and r.unavailable is None and r.stage == "vet"
        return rec


# --- main ---------------------------------------------------------------------------------

async def run_all(args, model: Path, repos: list[Path], cases: list[Case],
                  texts: dict[tuple[str, str], str], sources: list[str], base: dict) -> list[dict]:
    from tqdm import tqdm

    work: Path = args.work
    by_file: dict[tuple[str, str], list[Case]] = {}
    for c in cases:
        by_file.setdefault((c.repo, c.path), []).append(c)
    ws_root = work / "ws"
    pristine = {repo_label(r): r for r in repos}
    for label, repo in pristine.items():
        if any(k[0] == label for k in by_file):
            fresh_workspace(repo, ws_root / label)
    records: list[dict] = []
    log_file = work / "server.log"
    log_file.unlink(missing_ok=True)
    with tqdm(total=len(cases) * len(sources), desc="cases", unit="case", file=sys.stderr) as bar:
        for (repo, rel), file_cases_ in sorted(by_file.items()):
            records += await run_file(model, ws_root / repo, rel, texts[(repo, rel)], file_cases_,
                                      sources, base, log_file, bar, args.server_log_level)
    return records


def score_all(records: list[dict], cases: list[Case], texts, repos: list[Path],
              timeout: float) -> None:
    from tqdm import tqdm

    scorer = Scorer({repo_label(r): r for r in repos}, timeout)
    by_id = {c.id: c for c in cases}
    for rec in tqdm(records, desc="scoring", unit="case", file=sys.stderr):
        case = by_id[rec["id"]]
        rec.update(scorer.score(case, texts[(case.repo, case.path)], rec["suggestion"]))
        rec["expected"] = case.expected(texts[(case.repo, case.path)])


def parse_setting(s: str) -> tuple[str, object]:
    key, sep, value = s.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--setting wants KEY=VALUE, got {s!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    from hrm_lsp.paths import cache_dir, default_model_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", default="model",
                    help="comma list of completionSources to compare: model,index,both")
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    ap.add_argument("--repo", type=Path, action="append", default=None,
                    help="a git checkout to cut cases from instead of ../shared/heldout (repeatable)")
    ap.add_argument("--packages", default=None,
                    help="comma list of package dirs (relative, '.' = root) or import paths to cut from")
    ap.add_argument("--heldout", type=Path, default=HELDOUT, help="folder of held-out *.bundle files")
    ap.add_argument("--per-kind", default=None, help="cases per kind: N or LINE,MIDLINE,BODY "
                    "(default 300,100,100)")
    ap.add_argument("--limit", type=int, default=None,
                    help="at most N cases in all, split over the kinds like --per-kind")
    ap.add_argument("--per-file", default=None,
                    help="at most LINE,MIDLINE,BODY cases of each kind per file (default 8,3,3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", type=parse_setting, action="append", default=[],
                    help="extra server setting KEY=VALUE (JSON value), e.g. minConfidence=0")
    ap.add_argument("--work", type=Path, default=None,
                    help="work directory (clones, workspaces, server log); default "
                    "~/.cache/hrm-lsp/bench/quality")
    ap.add_argument("--vet-timeout", type=float, default=60.0)
    ap.add_argument("--server-log-level", default="ERROR",
                    choices=["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"],
                    help="the servers' --log-level (log: WORK/server.log; debug says why a "
                    "suggestion was withheld)")
    ap.add_argument("--json", type=Path, default=None, help="write summaries and every case here")
    args = ap.parse_args()

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    bad = [s for s in sources if s not in SOURCES]
    if not sources or bad or len(set(sources)) != len(sources):
        raise SystemExit(f"--sources: a comma list drawn from {', '.join(SOURCES)}")
    model = args.model or default_model_path()
    if not model.exists():
        raise SystemExit(f"model file {model} not found")
    args.work = (args.work or cache_dir() / "bench" / "quality").resolve()
    if _inside(args.work, ROOT):
        raise SystemExit(f"--work {args.work} is inside the repository; choose a folder outside it")
    args.work.mkdir(parents=True, exist_ok=True)

    if args.repo:
        repos = [r.resolve() for r in args.repo]
        for r in repos:
            if not r.is_dir():
                raise SystemExit(f"--repo {r}: not a directory")
    else:
        repos = clone_bundles(args.heldout, args.work)
    if len({repo_label(r) for r in repos}) != len(repos):
        raise SystemExit("two --repo folders have the same name")
    packages = {p.strip() for p in args.packages.split(",") if p.strip()} if args.packages else None
    texts = collect_files(repos, packages)
    if not texts:
        raise SystemExit("no Go files to cut cases from (check --repo / --packages)")
    caps = dict(DEFAULT_CAPS)
    if args.per_file:
        vals = [int(v) for v in args.per_file.split(",")]
        caps = dict(zip(KINDS, vals * 3 if len(vals) == 1 else vals, strict=True))
    counts = kind_counts(args)
    per_file = {key: file_cases(key[0], key[1], text, seed=args.seed) for key, text in texts.items()}
    cases = select_cases(per_file, counts, caps)
    got = Counter(c.kind for c in cases)
    short = [f"{k}: {got[k]} of {counts[k]}" for k in KINDS if got[k] < counts[k]]
    if short:
        print(f"note: fewer cases than asked ({', '.join(short)})", file=sys.stderr)
    base = {"debounceMs": 0, "device": "cpu", **dict(args.setting)}

    code_at_start = code_version()  # servers run the working tree: say what it was
    t0 = time.perf_counter()
    records = asyncio.run(run_all(args, model, repos, cases, texts, sources, base))
    serve_s = time.perf_counter() - t0
    score_all(records, cases, texts, repos, args.vet_timeout)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "load_avg": [round(x, 1) for x in os.getloadavg()],
        "model": str(model),
        "model_bytes": model.stat().st_size,
        "code": code_at_start,
        "code_changed_during_run": code_version() != code_at_start,
        "settings": base,
        "seed": args.seed,
        "repos": [repo_label(r) for r in repos],
        "cases": {k: got[k] for k in KINDS},
        "files": len({(c.repo, c.path) for c in cases}),
        "cases_per_repo": dict(sorted(Counter(c.repo for c in cases).items())),
        "serve_seconds": round(serve_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "sources": {},
    }
    for source in sources:
        agg = aggregate([r for r in records if r["source"] == source])
        result["sources"][source] = agg
        print(summary_line(source, agg))
    result["records"] = records
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)


def code_version() -> dict:
    """The commit the servers ran and whether hrm_lsp/ had uncommitted changes."""
    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    import hashlib

    diff = git("diff", "HEAD", "--", "hrm_lsp")
    return {"commit": git("rev-parse", "HEAD") or None,
            "hrm_lsp_dirty": bool(git("status", "--porcelain", "--", "hrm_lsp")),
            "hrm_lsp_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None}


def _inside(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    main()
