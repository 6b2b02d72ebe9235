"""Fit the single-line reranker (``hrm_lsp/inference/rerank.py``) on holes of training-corpus
repositories that the dev split (``quality_dev.py``) does not use; never on ``shared/heldout``.

    .venv/bin/python benchmarks/line_rerank.py --fit            # writes rerank_weights.json
    .venv/bin/python benchmarks/line_rerank.py --repos pkg+errors --per-repo 40   # report only

Each hole (the quality benchmark's cutter: next-line and mid-line holes of non-test files)
is completed by ``Engine.complete`` with a ``RepoIndex`` of its repository (the holed file
excluded from the repository tiers), once with ``--sources both`` and once with ``index``;
the engine's reranked candidates are recorded with their features, a candidate is right
when its first line completes the original line exactly, and one conditional logit per
source is fitted on the requests that have a right candidate. Prints, per source, how often
the right line is among the candidates, how often the current weights and the fitted ones
choose it, and the loss.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHARED = ROOT.parent / "shared"
FIT_REPOS = ("hashicorp+raft", "prometheus+client_golang", "pkg+errors")


def right(req, cand_text: str, full_line: str) -> bool:
    head = req.text[req.text.rfind("\n", 0, req.offset) + 1: req.offset]
    return (head + cand_text.split("\n")[0]).rstrip() == full_line.rstrip()


def collect(engine, index, cases, sources: str) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(features [n, F], labels [n], index chosen) per reranked request."""
    from hrm_lsp.inference import CompletionRequest

    groups = []
    for f, text, c in cases:
        holed = c.holed(text)
        line_start = holed.rfind("\n", 0, c.offset) + 1
        full = holed[line_start:c.offset] + c.expected(text).split("\n")[0]
        engine.rerank_log = []
        req = CompletionRequest(text=holed, offset=c.offset, path=str(f), sources=sources,
                                plan=False, refine=False, stages=("syntax",), max_tokens=48,
                                time_budget_ms=5000)
        engine.complete(req, index=index)
        for inner, cands, scores in engine.rerank_log:
            x = np.stack([k.features() for k in cands])
            y = np.array([right(inner, k.text, full) for k in cands])
            groups.append((x, y, int(np.argmax(scores))))
    engine.rerank_log = None
    return groups


def top1(groups, w: np.ndarray) -> float:
    """Share of requests whose best-scoring shown candidate is right (as the engine picks)."""
    from hrm_lsp.inference.rerank import FEATURES

    shown = FEATURES.index("shown")
    hits = 0
    for x, y, _ in groups:
        s = x @ w
        order = np.argsort(-s, kind="stable")
        pick = next((i for i in order if x[i, shown] > 0), order[0])
        hits += bool(y[pick])
    return hits / max(1, len(groups))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repos", default=",".join(FIT_REPOS))
    ap.add_argument("--per-repo", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--fit", action="store_true", help="write the fitted weights to --out")
    ap.add_argument("--out", type=Path, default=ROOT / "hrm_lsp/inference/rerank_weights.json")
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/hrm-lsp/bench/index_mix/corpora")
    args = ap.parse_args()

    from quality_cases import checkout_cases

    from hrm_lsp.index import RepoIndex
    from hrm_lsp.inference import Engine
    from hrm_lsp.inference.rerank import Reranker, fit, loss

    repos = [r.strip() for r in args.repos.split(",") if r.strip()]
    engine = Engine.load(None)
    current = engine._reranker
    groups: dict[str, list] = {"both": [], "index": []}
    t0 = time.time()
    for name in repos:
        repo = args.work / name
        if not repo.exists():
            bundle = SHARED / "corpora" / f"{name}.bundle"
            if not bundle.exists():
                ap.error(f"--repos: no corpus {bundle}")
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", str(bundle), str(repo)], check=True)
        index = RepoIndex(engine.tok, background=False)
        index.start([repo])
        cases = [(f, text, c) for f, text, got in checkout_cases(repo, args.seed, name)
                 for c in got["line"][:4] + got["midline"][:2]]
        random.Random(args.seed).shuffle(cases)
        for sources in groups:
            groups[sources] += collect(engine, index, cases[:args.per_repo], sources)
        index.close()
        print(f"{name}: {time.time() - t0:.0f} s", file=sys.stderr)
    weights = dict(current.weights)
    for sources, gs in groups.items():
        reach = sum(bool(y.any()) for _, y, _ in gs) / max(1, len(gs))
        now = sum(bool(y[i]) for _, y, i in gs) / max(1, len(gs))
        w = fit([(x, y) for x, y, _ in gs], l2=args.l2)
        cur = current.weights.get(sources, current.weights["both"])
        print(f"{sources}: {len(gs)} requests, right line among the candidates {reach:.3f}, "
              f"chosen now {now:.3f}, fitted {top1(gs, w):.3f}; loss "
              f"{loss([(x, y) for x, y, _ in gs], cur):.3f} -> {loss([(x, y) for x, y, _ in gs], w):.3f}")
        weights[sources] = w
    if args.fit:
        src = (f"benchmarks/line_rerank.py --fit on {', '.join(repos)} (--per-repo {args.per_repo}, "
               f"--seed {args.seed}), {time.strftime('%Y-%m-%d')}")
        args.out.write_text(json.dumps(Reranker(weights, src).to_json(), indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
