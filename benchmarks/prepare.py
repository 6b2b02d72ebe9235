"""Benchmark: ``hrm-lsp prepare --stdlib`` end to end (tokenizer training included).

Reports wall time per step, peak RSS (this process, and the largest worker process), files,
tokens and bytes per token. Results go to docs/benchmarks.md ("Data preparation") by hand,
with the machine and date printed here.

    .venv/bin/python benchmarks/prepare.py --tokenizer spm --vocab 50000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", choices=["spm", "byte"], default="spm")
    ap.add_argument("--vocab", type=int, default=50000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--refine-examples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="keep the data here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    from hrm_lsp.data import PrepareOptions, prepare
    from hrm_lsp.tokenizer import load_tokenizer

    opts = PrepareOptions(stdlib=True, tokenizer=args.tokenizer, vocab=args.vocab,
                          refine_examples=args.refine_examples)
    with tempfile.TemporaryDirectory(prefix="hrm-lsp-bench-") as tmp:
        out = args.out or Path(tmp) / "data"
        t0 = time.monotonic()
        m = prepare(opts, out, workers=args.workers, force=True,
                    progress=sys.stderr.isatty())
        wall = time.monotonic() - t0
        # Compression on held-out code: UTF-8 bytes per token of the val documents' code.
        tok = load_tokenizer(out)
        code_bytes = code_tokens = 0
        with (out / "work" / "val.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                code = json.loads(line)["code"]
                code_bytes += len(code.encode("utf-8"))
                code_tokens += len(tok.encode(code))
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tokens = sum(s["tokens"] for s in m["splits"].values())
    res = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
        "command": " ".join(["benchmarks/prepare.py", *sys.argv[1:]]),
        "tokenizer": args.tokenizer, "vocab": m["tokenizer"]["vocab_size"],
        "workers": args.workers or os.cpu_count(),
        "wall_s": round(wall, 1), "steps_s": m["timings_s"],
        # Children: the largest of the worker processes and of the git/gofmt processes; a child
        # forked from the main process briefly counts the parent's pages, so this is an upper bound.
        "peak_rss_main_mib": round(self_rss), "peak_rss_children_mib": round(child_rss),
        "files": m["counts"]["files"], "source_mb": round(m["counts"]["bytes"] / 1e6, 1),
        "documents": sum(s["documents"] for s in m["splits"].values()),
        "tokens": tokens,
        "val_code_bytes_per_token": round(code_bytes / max(code_tokens, 1), 3),
    }
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
