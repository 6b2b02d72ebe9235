"""Fit the index's mixing weights on a dev split of the training corpora, and report bits
per byte of the model, the index and their mixture (docs/index.md, docs/benchmarks.md).

    .venv/bin/python benchmarks/index_mix.py --fit                    # fit, write mix_weights.json
    .venv/bin/python benchmarks/index_mix.py --eval-heldout           # score the shipped table

Cases are the quality benchmark's next-line and mid-line holes (``quality_cases.py``): the
middle is the rest of the line. For each token of it the model's probability comes from one
teacher-forced forward pass in the engine's own layout (``Engine.middle_logprobs``), and the
index's from every tier (``Query.matches``) for the document before the cursor plus the
middle so far, with the hole's own file excluded from the repository tiers exactly as the
server does. Then, on the dev split only:

1. tier bonuses (in tokens of match length) are chosen by grid search to maximise how often
   the chosen tier's top continuation is the right token;
2. λ per (tier group, length bucket, count bucket) by EM, once against the model and once
   against a unigram (the index alone).

The dev split is cut from ``../shared/corpora`` (repositories the shipped model trained on:
its probabilities there are somewhat optimistic, so the fitted λ leans towards the model;
said in docs/index.md). ``--eval-heldout`` scores ``../shared/heldout`` with the fitted table
and never fits anything on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality_cases import checkout_cases  # noqa: E402

from hrm_lsp.index import RepoIndex  # noqa: E402
from hrm_lsp.index.mix import (  # noqa: E402
    COUNT_EDGES,
    GROUP_NAMES,
    LENGTH_EDGES,
    WEIGHTS_FILE,
    MixWeights,
    cell,
)

SHARED = ROOT.parent / "shared"
DEV_REPOS = ("hashicorp+golang-lru", "pkg+errors", "google+go-cmp", "rs+zerolog", "etcd-io+bbolt")
BONUS_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
TIERS = ("document", "package", "workspace", "stdlib", "modcache")


def clone(bundle: Path, work: Path) -> Path:
    dest = work / bundle.stem
    if not (dest / ".git").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "--quiet", str(bundle), str(dest)], check=True)
    return dest


def collect(repo: Path, engine, per_repo: int, seed: int) -> list[dict]:
    """Samples (one per middle token) for up to ``per_repo`` holes of one repository."""
    index = RepoIndex(engine.tok, background=False)
    index.start([repo])
    cases = [(f, text, c) for f, text, got in checkout_cases(repo, seed)
             for c in got["line"][:6] + got["midline"][:3]]
    random.Random(seed).shuffle(cases)
    samples = []
    for f, text, case in cases[:per_repo]:
        expected = case.expected(text)
        holed = case.holed(text)
        middle = engine.tok.encode(expected)[:24]
        if not middle:
            continue
        logp = engine.middle_logprobs(holed, case.offset, middle).numpy()
        q = index.query(holed, case.offset, str(f))
        uni = q_unigram(index)
        for j, t in enumerate(middle):
            tiers = {}
            for e in q.matches(q.prefix_ids + middle[:j]):
                hit = e.tokens == t
                top_i = int(np.argmax(e.counts))
                tiers[e.tier] = (e.length, e.total,
                                 float(e.counts[hit].sum()) / e.total, int(e.tokens[top_i]) == t)
            samples.append({"p_model": float(math.exp(logp[j, t])), "tiers": tiers,
                            "p_uni": uni.get(t, 1e-6), "bytes": len(engine.tok.decode([t]).encode()),
                            "model_top": int(np.argmax(logp[j])) == t})
    return samples


_UNI: dict[int, dict[int, float]] = {}


def q_unigram(index: RepoIndex) -> dict[int, float]:
    """Token frequencies of the largest static tier (a unigram for the index alone)."""
    key = id(index)
    if key not in _UNI:
        counts = np.zeros(index.vocab_size, dtype=np.float64)
        for s in index._static:
            f = np.asarray(s.index.first, dtype=np.float64)
            n = min(len(f) - 1, index.vocab_size)
            counts[:n] += np.diff(f)[:n]
        counts += 0.5
        _UNI.clear()
        _UNI[key] = dict(enumerate(counts / counts.sum()))
    return _UNI[key]


def choose(sample: dict, bonus: dict[str, float]):
    """The tier Query.estimate would pick for this sample under ``bonus``."""
    best, score = None, -1.0
    for tier in TIERS:
        if tier in sample["tiers"]:
            sc = sample["tiers"][tier][0] + bonus.get(tier, 0.0)
            if sc > score:
                best, score = tier, sc
    return best


def fit_bonus(samples: list[dict]) -> dict[str, float]:
    best, acc = {}, -1.0
    for b in itertools.product(BONUS_GRID, repeat=3):
        bonus = dict(zip(("document", "package", "workspace"), b, strict=True))
        hits = sum(1 for s in samples if (t := choose(s, bonus)) and s["tiers"][t][3])
        if hits > acc:
            best, acc = bonus, hits
    return best


def em(pairs: list[tuple[float, float]], iters: int = 40) -> float:
    """λ maximising Σ log((1-λ) a + λ b) for (a, b) pairs."""
    if not pairs:
        return 0.0
    a = np.array([p[0] for p in pairs]) + 1e-12
    b = np.array([p[1] for p in pairs]) + 1e-12
    lam = 0.5
    for _ in range(iters):
        r = lam * b / ((1 - lam) * a + lam * b)
        lam = float(r.mean())
    return min(max(lam, 0.0), 1.0)


def fit_lambda(samples: list[dict], bonus: dict[str, float], against: str) -> np.ndarray:
    shape = (len(GROUP_NAMES), len(LENGTH_EDGES), len(COUNT_EDGES))
    cells: dict[tuple, list] = {}
    for s in samples:
        t = choose(s, bonus)
        if t is None:
            continue
        length, total, p_idx, _ = s["tiers"][t]
        base = s["p_model"] if against == "model" else s["p_uni"]
        cells.setdefault(cell(t, length, total), []).append((base, p_idx))
    lam = MixWeights.prior().model.copy() if against == "model" else MixWeights.prior().unigram.copy()
    # Pool sparse cells with their neighbours in length (same group and count bucket).
    for g, lb, cb in itertools.product(*map(range, shape)):
        pairs = list(cells.get((g, lb, cb), []))
        k = 1
        while len(pairs) < 30 and k < shape[1]:
            for nb in (lb - k, lb + k):
                if 0 <= nb < shape[1]:
                    pairs += cells.get((g, nb, cb), [])
            k += 1
        if pairs:
            lam[g, lb, cb] = em(pairs)
    return lam


def bits_per_byte(samples: list[dict], weights: MixWeights) -> dict[str, float]:
    nbytes = sum(s["bytes"] for s in samples)
    tot = {"model": 0.0, "index": 0.0, "mixture": 0.0}
    acc = {"model": 0, "index": 0}
    for s in samples:
        t = choose(s, weights.tier_bonus)
        p_m, p_u = s["p_model"], s["p_uni"]
        if t is None:
            p_i, p_mix = p_u, p_m
        else:
            length, total, p_idx, top = s["tiers"][t]
            lu = weights.lam(t, length, total, "unigram")
            lm = weights.lam(t, length, total, "model")
            p_i = (1 - lu) * p_u + lu * p_idx
            p_mix = (1 - lm) * p_m + lm * p_idx
            acc["index"] += top
        acc["model"] += s["model_top"]
        tot["model"] -= math.log2(max(p_m, 1e-12))
        tot["index"] -= math.log2(max(p_i, 1e-12))
        tot["mixture"] -= math.log2(max(p_mix, 1e-12))
    out = {k: round(v / nbytes, 4) for k, v in tot.items()}
    out.update({f"top1_{k}": round(v / len(samples), 4) for k, v in acc.items()})
    out.update(tokens=len(samples), bytes=nbytes)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true", help="fit on the dev split and write the table")
    ap.add_argument("--eval-heldout", action="store_true", help="score ../shared/heldout")
    ap.add_argument("--model", default=None)
    ap.add_argument("--per-repo", type=int, default=250, help="holes per repository")
    ap.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/hrm-lsp/bench/index_mix")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from hrm_lsp.inference import Engine

    engine = Engine.load(args.model, backend="torch")
    report: dict = {"date": time.strftime("%Y-%m-%d"), "model": args.model or "shipped"}
    t0 = time.time()
    if args.fit:
        dev = []
        for name in DEV_REPOS:
            repo = clone(SHARED / "corpora" / f"{name}.bundle", args.work / "corpora")
            got = collect(repo, engine, args.per_repo, args.seed)
            print(f"dev {name}: {len(got)} tokens", file=sys.stderr, flush=True)
            dev += got
        bonus = fit_bonus(dev)
        weights = MixWeights(fit_lambda(dev, bonus, "model"), fit_lambda(dev, bonus, "unigram"),
                             f"benchmarks/index_mix.py --fit on {', '.join(DEV_REPOS)} "
                             f"({len(dev)} tokens), {report['date']}", bonus)
        args.out.write_text(json.dumps(weights.to_json(), indent=1) + "\n")
        report["dev"] = bits_per_byte(dev, weights)
        report["dev_prior"] = bits_per_byte(dev, MixWeights.prior())
        report["tier_bonus"] = bonus
        print("dev (fitted):", report["dev"])
        print("dev (prior): ", report["dev_prior"])
    if args.eval_heldout:
        weights = MixWeights.from_json(json.loads(args.out.read_text()))
        held = []
        for bundle in sorted((SHARED / "heldout").glob("*.bundle")):
            repo = clone(bundle, args.work / "heldout")
            got = collect(repo, engine, args.per_repo, args.seed)
            print(f"heldout {bundle.stem}: {len(got)} tokens", file=sys.stderr, flush=True)
            held += got
        report["heldout"] = bits_per_byte(held, weights)
        print("heldout:", report["heldout"])
    report["seconds"] = round(time.time() - t0, 1)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
