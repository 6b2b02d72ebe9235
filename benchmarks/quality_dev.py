"""Exact-match on a dev split of the training corpora, in process: where engine choices are
made before the held-out quality benchmark (``quality.py``, ``shared/heldout``) measures them.

    .venv/bin/python benchmarks/quality_dev.py --sources both
    .venv/bin/python benchmarks/quality_dev.py --sources model --set LINE_CANDIDATES=1 --context 512
    .venv/bin/python benchmarks/quality_dev.py --sources model --kinds body --set stops.REPEAT_LINES=0

Cases: the quality benchmark's case cutter (``quality_cases.file_cases``) on the non-test
files of five ``../shared/corpora`` repositories (cloned under ``--work``): four next-line
and two mid-line holes per file (``--kinds body``: one function body per file), shuffled
with ``--seed``, the first ``--per-repo`` of each repository. Each hole is completed by
``Engine.complete`` with a ``RepoIndex`` of its repository, the holed file excluded from the
repository tiers as the server does. Line holes get the server's single-line settings (48
tokens, no refinement, ``--min-confidence``) and only their first line is scored (exact,
trailing blanks ignored); body holes get its invoked multi-line settings (the ``Settings``
defaults: 256 tokens, refinement through the validators, the doc comment as plan) and are
scored by ``quality.py``'s own scorer: the spliced file parses (``gofmt -e``), the body's
similarity to the one removed, and go vet (counted over the cases whose original passes vet
offline) with vet+sim50; "sibling bodies" counts answers that are a sibling function's body
(``Engine._sibling_body``). The shipped model trained on these repositories, so
its figures here are optimistic: use them to compare configurations with each other, never
as the quality of the product (docs/benchmarks.md, "Suggestion quality").
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHARED = ROOT.parent / "shared"
DEV_REPOS = ("hashicorp+golang-lru", "google+go-cmp", "rs+zerolog", "etcd-io+bbolt", "uber-go+zap")


def engine_setting(text: str) -> tuple[str, object]:
    """NAME=VALUE for a module constant of ``hrm_lsp.inference.engine``, or stops.NAME=VALUE
    for one of ``hrm_lsp.inference.stops`` (int, float or str)."""
    name, sep, value = text.partition("=")
    bare = name.removeprefix("stops.")
    if not sep or not bare.isidentifier() or not bare.isupper():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (an engine constant), got {text!r}")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def body_request(case, text: str, path: Path, sources: str):
    """The request the server sends for an invoked completion in an emptied body."""
    from hrm_lsp.server.settings import Settings

    return Settings().completion_request(case.holed(text), case.offset, str(path),
                                         multiline=True, plan=True, sources=sources)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", default="both", choices=("model", "index", "both"))
    ap.add_argument("--model", default=None, help="model file (default: the shipped model)")
    ap.add_argument("--context", type=int, default=None, help="Engine(context=N)")
    ap.add_argument("--per-repo", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-confidence", type=float, default=0.0)
    ap.add_argument("--kinds", default="line,midline",
                    help="comma list of line, midline, body (default line,midline)")
    ap.add_argument("--set", dest="settings", type=engine_setting, action="append", default=[],
                    help="NAME=VALUE: an engine constant (e.g. LINE_CANDIDATES=1, CHOOSE_BY=index), "
                         "stops.NAME=VALUE: a stop-rule one (e.g. stops.REPEAT_LINES=0)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/hrm-lsp/bench/index_mix/corpora")
    args = ap.parse_args()

    from quality import Scorer
    from quality_cases import checkout_cases

    import hrm_lsp.inference.engine as engine_mod
    import hrm_lsp.inference.stops as stops_mod
    from hrm_lsp.index import RepoIndex
    from hrm_lsp.inference import CompletionRequest, Engine

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in ("line", "midline", "body") for k in kinds):
        ap.error(f"--kinds: expected a comma list of line, midline, body; got {args.kinds!r}")
    for name, value in args.settings:
        mod = stops_mod if name.startswith("stops.") else engine_mod
        bare = name.removeprefix("stops.")
        if not hasattr(mod, bare):
            ap.error(f"--set {name}: {mod.__name__} has no such constant")
        setattr(mod, bare, value)
    engine = Engine.load(args.model, context=args.context)
    totals = {k: [0, 0] for k in kinds}
    body = {"parses": 0, "similarity": 0.0, "ms": [], "vet": 0, "vet_sim50": 0, "vet_n": 0,
            "sibling": 0}
    shown_wrong = 0
    t0 = time.time()
    for name in DEV_REPOS:
        repo = args.work / name
        if not repo.exists():
            bundle = SHARED / "corpora" / f"{name}.bundle"
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", str(bundle), str(repo)], check=True)
        scorer = Scorer({name: repo}, timeout=30.0)
        index = RepoIndex(engine.tok, background=False)
        index.start([repo])
        cases = [(f, text, c) for f, text, got in checkout_cases(repo, 1, name)
                 for c in got["line"][:4 * ("line" in kinds)] +
                 got["midline"][:2 * ("midline" in kinds)] + got["body"][:1 * ("body" in kinds)]]
        random.Random(args.seed).shuffle(cases)
        for f, text, c in cases[:args.per_repo]:
            if c.kind == "body":
                tc = time.time()
                comp = engine.complete(body_request(c, text, f, args.sources), index=index)
                body["ms"].append((time.time() - tc) * 1000)
                out = "" if comp.withheld else comp.text
                rec = scorer.score(c, text, out)
                body["parses"] += rec["parses"]
                body["similarity"] += rec["similarity"]
                body["vet_n"] += rec["vet_eligible"]
                body["vet"] += rec["vet_ok"]
                body["vet_sim50"] += rec["vet_ok"] and rec["similarity"] >= 0.5
                body["sibling"] += bool(out) and comp.stop_reason == "sibling"
                totals["body"][0] += rec["exact"]
                totals["body"][1] += 1
                continue
            req = CompletionRequest(text=c.holed(text), offset=c.offset, path=str(f),
                                    sources=args.sources, plan=False, refine=False,
                                    stages=("syntax",), max_tokens=48, time_budget_ms=5000,
                                    min_confidence=args.min_confidence)
            comp = engine.complete(req, index=index)
            out = "" if comp.withheld else comp.text.split("\n")[0]
            ok = out.rstrip() == c.expected(text).rstrip()
            totals[c.kind][0] += ok
            totals[c.kind][1] += 1
            shown_wrong += bool(out.strip()) and not ok
        index.close()
    parts = [f"{k} exact {a / max(1, n):.3f} (n={n})" for k, (a, n) in totals.items()]
    if "body" in totals:
        n = max(1, totals["body"][1])
        ms = sorted(body["ms"]) or [0.0]
        vn = max(1, body["vet_n"])
        parts.append(f"body parses {body['parses'] / n:.3f} similarity {body['similarity'] / n:.3f} "
                     f"vet {body['vet'] / vn:.3f} vet+sim50 {body['vet_sim50'] / vn:.3f} "
                     f"(vet n={body['vet_n']}) sibling bodies {body['sibling']} "
                     f"p50 {ms[len(ms) // 2]:.0f} ms")
    print(f"{args.sources}: {' | '.join(parts)} | shown wrong {shown_wrong} | "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
