"""Decoding speed with the repository index: speculative decoding on/off, per backend, and
the latency of the requests the server makes (docs/benchmarks.md, "Index").

    .venv/bin/python benchmarks/index_decode.py                    # shipped model
    .venv/bin/python benchmarks/index_decode.py --repo DIR --cases 40

Cases are cut from a training-corpus repository (``--repo``, default a clone of
``../shared/corpora/hashicorp+golang-lru.bundle``): next-line holes for the single-line
path and function-body holes for the multi-line one. The index holds the repository (the
holed file excluded as in the server) and the standard library. Reported per backend and
setting: p50/p95 latency, decoded tokens/s, drafted and accepted tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality_cases import checkout_cases, percentile  # noqa: E402

from hrm_lsp.inference import engine as engine_mod  # noqa: E402
from hrm_lsp.inference.types import CompletionRequest  # noqa: E402


def cases_of(repo: Path, n: int):
    line, body = [], []
    for f, text, got in checkout_cases(repo, 0, label=lambda f: f.name):
        line += [(f, text, c) for c in got["line"][:3]]
        body += [(f, text, c) for c in got["body"][:2]]
    return line[:n], body[: max(4, n // 4)]


def run(engine, index, cases, *, multiline: bool, sources: str) -> dict:
    lat, toks, dec_ms, drafted, accepted = [], 0, 0.0, 0, 0
    for f, text, c in cases:
        holed = c.holed(text)
        req = CompletionRequest(text=holed, offset=c.offset, path=str(f), multiline=multiline,
                                plan=False, refine=False, stages=("syntax",),
                                max_tokens=128 if multiline else 48, time_budget_ms=30_000,
                                sources=sources)
        # warm: the document's session is filled by a first request, then the timed one
        engine.complete(req, session_key=str(f), index=index)
        t = time.perf_counter()
        comp = engine.complete(req, session_key=str(f), index=index)
        lat.append((time.perf_counter() - t) * 1000)
        toks += comp.timings.decode_tokens
        # the index source runs no model: its decoding time is its index time
        dec_ms += comp.timings.decode_ms or comp.timings.index_ms
        drafted += comp.timings.drafted_tokens
        accepted += comp.timings.accepted_tokens
    lat.sort()
    return {"p50": statistics.median(lat), "p95": percentile(lat, 0.95),
            "tok_s": toks / max(dec_ms / 1000, 1e-9), "drafted": drafted, "accepted": accepted,
            "n": len(lat)}


def cold_first_request(engine, n: int = 6) -> dict:
    """The first request in a file: an empty session, a full window of prompt (strings.go)."""
    from hrm_lsp.validators.go import find_go

    src = (find_go().goroot / "src" / "strings" / "strings.go").read_text()
    lat, pre = [], []
    for i in range(n):
        off = src.index("\n", 20_000 + 997 * i) + 1
        req = CompletionRequest(text=src, offset=off, plan=False, refine=False, stages=("syntax",),
                                max_tokens=16, sources="model")
        t = time.perf_counter()
        comp = engine.complete(req, session_key=f"cold-{time.time()}-{i}")
        lat.append((time.perf_counter() - t) * 1000)
        pre.append((round(comp.timings.prefill_ms), comp.timings.prefill_tokens))
    return {"p50": statistics.median(lat), "prefill": pre}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--repo", type=Path, default=None)
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--backends", default="onnx,torch")
    args = ap.parse_args()
    from hrm_lsp.index import RepoIndex
    from hrm_lsp.inference import Engine

    repo = args.repo
    if repo is None:
        repo = Path.home() / ".cache/hrm-lsp/bench/index_mix/corpora/hashicorp+golang-lru"
        if not (repo / ".git").is_dir():
            subprocess.run(["git", "clone", "--quiet", str(ROOT.parent / "shared/corpora/"
                                                           "hashicorp+golang-lru.bundle"),
                            str(repo)], check=True)
    line, body = cases_of(repo, args.cases)
    print(f"{repo.name}: {len(line)} next-line, {len(body)} body cases; "
          f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    for backend in args.backends.split(","):
        engine = Engine.load(args.model, backend=backend)
        cold = cold_first_request(engine)
        print(f"{backend:5} cold first request p50 {cold['p50']:.0f} ms; prefill (ms, tokens) "
              f"{cold['prefill']}", flush=True)
        index = RepoIndex(engine.tok, background=False)
        index.start([repo])
        for spec in (0, engine_mod.SPECULATE_TOKENS or 6):
            engine_mod.SPECULATE_TOKENS = spec
            for kind, cases, ml in (("single-line", line, False), ("multi-line", body, True)):
                for sources in ("model", "both", "index"):
                    if sources != "both" and spec:
                        continue  # drafts only matter where the model runs with the index
                    r = run(engine, index, cases, multiline=ml, sources=sources)
                    print(f"{backend:5} speculate={spec} {kind:11} {sources:5}: p50 {r['p50']:.1f} ms "
                          f"p95 {r['p95']:.1f} ms, {r['tok_s']:.0f} tok/s decoded, drafted "
                          f"{r['drafted']}, accepted {r['accepted']} (n={r['n']})", flush=True)


if __name__ == "__main__":
    main()
