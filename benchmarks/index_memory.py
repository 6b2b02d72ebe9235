"""Memory and build time of the repository index (docs/benchmarks.md, "Index").

    .venv/bin/python benchmarks/index_memory.py              # workspace = all of GOROOT/src
    .venv/bin/python benchmarks/index_memory.py --workspace DIR

Builds every tier (workspace, stdlib, module cache) for the shipped model's tokenizer, runs
200 queries (so the memory-mapped stdlib pages are touched), and prints the resident memory
before and after, and the peak while building.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    from hrm_lsp.export.gguf import load_model
    from hrm_lsp.index import RepoIndex
    from hrm_lsp.paths import default_model_path
    from hrm_lsp.validators.go import find_go

    _, tok, _ = load_model(args.model or default_model_path())
    ws = args.workspace or find_go().goroot / "src"
    base = rss_mb()
    t = time.time()
    idx = RepoIndex(tok, background=False)
    idx.start([ws])
    built = time.time() - t
    w = idx.info["workspace"]
    probe = next(Path(ws).rglob("*.go"))
    text = probe.read_text(errors="replace")
    for i in range(200):
        q = idx.query(text, min(len(text), 200 + i * 37), str(probe))
        q.estimate(q.prefix_ids)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"workspace {ws}: {w.files} files, {w.tokens} tokens, {w.bytes} bytes; built in {built:.1f} s")
    print(f"RSS before {base:.0f} MB, after build + 200 queries {rss_mb():.0f} MB "
          f"(+{rss_mb() - base:.0f} MB); peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
