"""Sibling-body ranking: fit its weights on training corpora, compare orders on the dev split.

For every top-level function of a package whose body has 2-15 lines (the quality
benchmark's body cases), the other functions of its package that ``siblings.rank`` may
offer (``siblings.candidates_of``) are scored against the real body: a candidate is *right*
when its renamed body is at least 50% similar to it (edit similarity, as
``benchmarks/quality.py`` scores bodies). Inference validates the top three and offers the
first that go vet accepts, so what matters is that a right one comes first.

    python benchmarks/sibling_rank.py --fit --write   # fit, write hrm_lsp/assets/sibling_weights.json
    python benchmarks/sibling_rank.py                 # compare orders on the dev split

``--fit`` fits a conditional logit (softmax over each function's candidates, the mass on
the right ones, L2 0.01 on standardised features) on repositories the dev split does not
use: ``hashicorp+raft``, ``prometheus+client_golang``, ``pkg+errors`` and the packages of
the Go standard library (training material; ``shared/heldout`` is never read here). The
evaluation runs on the dev split's five repositories (``quality_dev.py``'s) and prints, per
order, how often the first candidate is right (top-1), any of the first three is (top-3),
and any candidate at all (the ceiling of ordering).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import index_mix  # noqa: E402
from quality_cases import BODY_LINES, edit_similarity, normalize_body  # noqa: E402

from hrm_lsp.index import siblings as sib  # noqa: E402

SHARED = ROOT.parent / "shared"
FIT_REPOS = ("hashicorp+raft", "prometheus+client_golang", "pkg+errors")
DEV_REPOS = ("hashicorp+golang-lru", "google+go-cmp", "rs+zerolog", "etcd-io+bbolt", "uber-go+zap")
SKIP_DIRS = {"vendor", "testdata"}
MAX_TARGETS = 60  # per package, the first in file order: big packages do not dominate


def package_dirs(root: Path):
    """Directories under ``root`` holding non-test Go files (no vendor/, testdata/, hidden
    or ``_`` directories), sorted."""
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if s not in SKIP_DIRS and s[0] not in "._")
        if any(f.endswith(".go") and not f.endswith("_test.go") for f in files):
            yield Path(d)


def package_files(d: Path) -> dict[Path, list]:
    """The functions of each non-test, non-generated Go file of ``d`` (files over 512 kB
    left out), by file."""
    files = {}
    for f in sorted(d.glob("*.go")):
        if f.name.endswith("_test.go") or f.stat().st_size > 512_000:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "// Code generated" in text[:2000]:
            continue
        files[f] = sib.file_functions(text)
    return files


def package_groups(d: Path, files: dict[Path, list], others: dict[Path, list] | None = None) -> list[dict]:
    """One group per function of ``d`` with a 2-15 line body: its candidates' features, their
    similarity to the real body and whether each is right. ``files``: the package's
    functions by file; ``others``: those of the repository's other packages (candidates of
    another package, as inference offers them with ``scope`` "repo")."""
    groups = []
    elsewhere = [(str(g), fn) for g, fns in (others or {}).items() for fn in fns]
    for f, fns in files.items():
        for target in fns:
            lines = target.body.count("\n")
            if not (BODY_LINES[0] <= lines <= BODY_LINES[1]):
                continue
            if len(groups) >= MAX_TARGETS:
                return groups
            empty = sib.FunctionBody(target.name, target.signature, target.params,
                                     target.results, "", target.start, target.end,
                                     target.receiver, target.doc)
            cands = [(None, fn) for fn in fns if fn.start != target.start]
            cands += [(str(g), fn) for g, other in files.items() if g != f for fn in other]
            want = normalize_body(target.body)
            feats, sims, seen = [], [], set()
            for _, _, text, feat in sib.candidates_of(empty, cands + elsewhere, str(d)):
                if text in seen:  # one row per body (the first: own file, package, elsewhere)
                    continue
                seen.add(text)
                feats.append(feat)
                sims.append(edit_similarity(normalize_body(text), want))
            groups.append({"name": f"{f}:{target.name}", "x": np.array(feats, dtype=np.float64)
                           .reshape(-1, len(sib.FEATURES)), "sim": np.array(sims)})
    return groups


def collect(roots: list[Path], label: str, scope: str = "repo", repo_roots: set[Path] | None = None) -> list[dict]:
    """Groups of every package under ``roots``. With ``scope`` "repo" the candidates include
    the functions of the other packages under the same root, for the roots in
    ``repo_roots`` (default: all; the standard library is not one repository)."""
    t0 = time.time()
    groups = []
    for root in roots:
        packages = {d: package_files(d) for d in package_dirs(root)}
        whole = scope == "repo" and (repo_roots is None or root in repo_roots)
        for d, files in packages.items():
            others = {g: fns for e, fs in packages.items() if e != d for g, fns in fs.items()} if whole else None
            groups += package_groups(d, files, others)
    with_cands = sum(1 for g in groups if len(g["sim"]))
    print(f"{label}: {len(groups)} functions, {with_cands} with a candidate, "
          f"{sum(len(g['sim']) for g in groups)} candidates ({time.time() - t0:.0f} s)",
          file=sys.stderr, flush=True)
    return groups


def fit(groups: list[dict], l2: float = 0.01, iters: int = 3000, lr: float = 0.05) -> np.ndarray:
    """Conditional-logit weights (raw feature scale) from the groups that have a right and a
    wrong candidate: maximise log of the softmax mass on the right ones."""
    usable = [g for g in groups if (g["sim"] >= 0.5).any() and (g["sim"] < 0.5).any()]
    allx = np.concatenate([g["x"] for g in usable])
    mu, sd = allx.mean(0), allx.std(0) + 1e-9
    xs = [(g["x"] - mu) / sd for g in usable]
    ys = [(g["sim"] >= 0.5).astype(np.float64) for g in usable]
    w = np.zeros(allx.shape[1])
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, iters + 1):
        grad = l2 * w * len(usable)
        for x, y in zip(xs, ys, strict=True):
            s = x @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            q = p * y
            q /= q.sum()
            grad -= x.T @ (q - p)  # d/dw of -log sum_{right} p
        grad /= len(usable)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        w -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    print(f"fit on {len(usable)} functions with a right and a wrong candidate", file=sys.stderr)
    return w / sd


def order_scores(groups: list[dict], w: np.ndarray | None) -> dict[str, float]:
    """top-1 / top-3 right and the ceiling, over all functions and over those with a candidate."""
    top1 = top3 = ceiling = 0
    n_cand = 0
    for g in groups:
        if not len(g["sim"]):
            continue
        n_cand += 1
        key = g["x"][:, 0] if w is None else g["x"] @ w
        order = sorted(range(len(key)), key=lambda i: (-key[i], i))  # ties: the earlier one
        right = g["sim"] >= 0.5
        top1 += bool(right[order[0]])
        top3 += bool(right[order[:3]].any())
        ceiling += bool(right.any())
    n = max(1, len(groups))
    return {"functions": len(groups), "with_candidate": n_cand, "top1": top1 / n,
            "top3": top3 / n, "ceiling": ceiling / n}


def clone(name: str, work: Path) -> Path:
    return index_mix.clone(SHARED / "corpora" / f"{name}.bundle", work)


def goroot_src() -> Path:
    from hrm_lsp.validators.go import find_go

    return Path(find_go().goroot) / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true", help="fit the weights (training corpora)")
    ap.add_argument("--write", action="store_true", help="with --fit: write them to " +
                    str(sib.WEIGHTS_FILE.relative_to(ROOT)))
    ap.add_argument("--no-stdlib", action="store_true", help="fit without the standard library")
    ap.add_argument("--scope", choices=("package", "repo"), default="repo",
                    help="candidates from the function's package only, or from its whole "
                         "repository too (what inference offers; default)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/hrm-lsp/bench/index_mix/corpora")
    args = ap.parse_args()

    weights = {"signature Jaccard (before)": None}
    if args.fit:
        roots = [clone(n, args.work) for n in FIT_REPOS]
        if not args.no_stdlib:
            roots.append(goroot_src())
        train = collect(roots, "fit", args.scope, set(roots[:len(FIT_REPOS)]))
        w = fit(train)
        print("weights: " + ", ".join(f"{n} {x:+.3f}" for n, x in zip(sib.FEATURES, w, strict=True)))
        weights["fitted now"] = w
        print("fit set: " + json.dumps({k: order_scores(train, v) for k, v in weights.items()}))
        if args.write:
            sib.WEIGHTS_FILE.write_text(json.dumps({
                "features": list(sib.FEATURES), "weights": [round(float(x), 4) for x in w],
                "fit": {"command": "python benchmarks/sibling_rank.py --fit --write"
                        + ("" if args.scope == "repo" else " --scope package"), "scope": args.scope,
                        "date": time.strftime("%Y-%m-%d"), "repositories": list(FIT_REPOS) +
                        ([] if args.no_stdlib else ["go standard library"]),
                        "functions": len(train), "rule": "conditional logit, right = edit "
                        "similarity of the renamed body >= 0.5"}}, indent=2) + "\n")
            print(f"wrote {sib.WEIGHTS_FILE}", file=sys.stderr)
    elif sib.WEIGHTS_FILE.exists():
        weights["shipped weights"] = np.array(sib.default_weights())
    dev = collect([clone(n, args.work) for n in DEV_REPOS], "dev", args.scope)
    for label, w in weights.items():
        s = order_scores(dev, w)
        print(f"dev, {label}: top-1 {s['top1']:.3f} top-3 {s['top3']:.3f} ceiling {s['ceiling']:.3f} "
              f"({s['functions']} functions, {s['with_candidate']} with a candidate)")


if __name__ == "__main__":
    main()
