"""What the index costs a `both` line request: its ``Query._estimate`` calls, recorded from
warm requests on training-corpus holes and replayed (docs/benchmarks.md, "Index").

    .venv/bin/python benchmarks/index_query.py                 # zap and zerolog, 30 holes each
    .venv/bin/python benchmarks/index_query.py --repos rs+zerolog --holes 60

Each hole (the quality benchmark's case cutter: next-line and mid-line holes) is completed
twice by ``Engine.complete`` with ``sources="both"`` and a ``RepoIndex`` of its repository
(the holed file excluded), as the server would: once cold, once warm (timed). Every
estimate of the warm requests is recorded and then replayed ``--replays`` times on the same
queries, giving ms per estimate and a digest of every estimate and answer: a change meant to
make the index faster must leave both digests as they were.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repos", default="uber-go+zap,rs+zerolog")
    ap.add_argument("--holes", type=int, default=30, help="holes per repository")
    ap.add_argument("--replays", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/hrm-lsp/bench/index_mix/corpora")
    args = ap.parse_args()

    from quality_cases import checkout_cases

    from hrm_lsp.index import RepoIndex, tiers
    from hrm_lsp.inference import CompletionRequest, Engine

    engine = Engine.load(None)
    calls, answers, warm_ms = [], [], []
    real = tiers.Query._estimate

    def recording(self, ids, bonus, allowed):
        calls.append((self, list(ids), dict(bonus), None if allowed is None else allowed.copy()))
        return real(self, ids, bonus, allowed)

    for name in [r for r in args.repos.split(",") if r]:
        repo = args.work / name
        if not repo.exists():
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", str(SHARED / "corpora" / f"{name}.bundle"),
                            str(repo)], check=True)
        index = RepoIndex(engine.tok, background=False)
        index.start([repo])
        cases = [(f, t, c) for f, t, got in checkout_cases(repo, 1, name)
                 for c in got["line"][:4] + got["midline"][:2]]
        random.Random(1).shuffle(cases)
        for f, text, c in cases[:args.holes]:
            req = CompletionRequest(text=c.holed(text), offset=c.offset, path=str(f), sources="both",
                                    plan=False, refine=False, stages=("syntax",), max_tokens=48,
                                    time_budget_ms=5000)
            engine.complete(req, index=index)  # cold: the session and the package tier
            tiers.Query._estimate = recording
            try:
                t0 = time.perf_counter()
                answers.append(engine.complete(req, index=index).text)
                warm_ms.append((time.perf_counter() - t0) * 1000)
            finally:
                tiers.Query._estimate = real
    warm_ms.sort()
    print(f"{len(answers)} warm requests: p50 {warm_ms[len(warm_ms) // 2]:.1f} ms, "
          f"{len(calls)} estimates ({len(calls) / max(1, len(answers)):.0f} a request); "
          f"answers digest {hashlib.sha1(chr(0).join(answers).encode()).hexdigest()[:12]}")
    for _ in range(args.replays):
        h = hashlib.sha1()
        t0 = time.perf_counter()
        for q, ids, bonus, allowed in calls:
            e = q._estimate(ids, bonus, allowed)
            h.update(b"-" if e is None else
                     f"{e.tier}{e.length}".encode() + e.tokens.tobytes() + e.counts.tobytes())
        dt = time.perf_counter() - t0
        print(f"replay: {dt * 1000 / max(1, len(calls)):.3f} ms per estimate, digest {h.hexdigest()[:12]}")


if __name__ == "__main__":
    main()
