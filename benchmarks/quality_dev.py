"""Exact-match on a dev split of the training corpora, in process: where engine choices are
made before the held-out quality benchmark (``quality.py``, ``shared/heldout``) measures them.

    .venv/bin/python benchmarks/quality_dev.py --sources both
    .venv/bin/python benchmarks/quality_dev.py --sources model --set LINE_CANDIDATES=1 --context 512

Cases: the quality benchmark's case cutter (``quality_cases.file_cases``) on the non-test
files of five ``../shared/corpora`` repositories (cloned under ``--work``): four next-line
and two mid-line holes per file, shuffled with ``--seed``, the first ``--per-repo`` of each
repository. Each hole is completed by ``Engine.complete`` with a ``RepoIndex`` of its
repository, the holed file excluded from the repository tiers as the server does, with the
server's single-line settings (48 tokens, no refinement, ``--min-confidence``). Only the
first line is scored (exact, trailing blanks ignored). The shipped model trained on these
repositories, so its figures here are optimistic: use them to compare configurations with
each other, never as the quality of the product (docs/benchmarks.md, "Suggestion quality").
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
    """NAME=VALUE for a module constant of ``hrm_lsp.inference.engine`` (int, float or str)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier() or not name.isupper():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (an engine constant), got {text!r}")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", default="both", choices=("model", "index", "both"))
    ap.add_argument("--model", default=None, help="model file (default: the shipped model)")
    ap.add_argument("--context", type=int, default=None, help="Engine(context=N)")
    ap.add_argument("--per-repo", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-confidence", type=float, default=0.0)
    ap.add_argument("--set", dest="settings", type=engine_setting, action="append", default=[],
                    help="NAME=VALUE: an engine constant (e.g. LINE_CANDIDATES=1, CHOOSE_BY=index)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/hrm-lsp/bench/index_mix/corpora")
    args = ap.parse_args()

    from quality_cases import checkout_cases

    import hrm_lsp.inference.engine as engine_mod
    from hrm_lsp.index import RepoIndex
    from hrm_lsp.inference import CompletionRequest, Engine

    for name, value in args.settings:
        if not hasattr(engine_mod, name):
            ap.error(f"--set {name}: the engine has no such constant")
        setattr(engine_mod, name, value)
    engine = Engine.load(args.model, context=args.context)
    totals = {"line": [0, 0], "midline": [0, 0]}
    shown_wrong = 0
    t0 = time.time()
    for name in DEV_REPOS:
        repo = args.work / name
        if not repo.exists():
            bundle = SHARED / "corpora" / f"{name}.bundle"
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", str(bundle), str(repo)], check=True)
        index = RepoIndex(engine.tok, background=False)
        index.start([repo])
        cases = [(f, text, c) for f, text, got in checkout_cases(repo, 1, name)
                 for c in got["line"][:4] + got["midline"][:2]]
        random.Random(args.seed).shuffle(cases)
        for f, text, c in cases[:args.per_repo]:
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
    print(f"{args.sources}: {' | '.join(parts)} | shown wrong {shown_wrong} | "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
