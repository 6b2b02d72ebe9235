"""Benchmark: SentencePiece vocabulary size vs. compression of held-out Go code.

Trains the `spm` tokenizer (the settings `prepare` uses) at several vocabulary sizes on the
train documents of a prepared directory and reports UTF-8 bytes per token on the code of its
val documents, plus training time. The model's output head costs vocab x width parameters and
its per-token decode cost grows with it, so this is the trade-off the default model's
vocabulary is chosen from.

    .venv/bin/hrm-lsp prepare --stdlib --out /tmp/std --tokenizer byte --refine-examples 0
    .venv/bin/python benchmarks/tokenizer_vocab.py /tmp/std --vocab 4000 8000 16000 32000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a directory made by hrm-lsp prepare (its work/ is read)")
    ap.add_argument("--vocab", type=int, nargs="+", default=[4000, 8000, 16000, 32000, 50000])
    ap.add_argument("--sample-mb", type=float, default=20.0, help="training text per tokenizer")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    from hrm_lsp.data.documents import Document
    from hrm_lsp.tokenizer.spm import train_spm

    work = args.data / "work"
    train = [Document.from_json(json.loads(line)) for line in (work / "train.jsonl").open(encoding="utf-8")]
    val = [json.loads(line)["code"] for line in (work / "val.jsonl").open(encoding="utf-8")]
    total = sum(len(d.code) for d in train)
    stride = max(1, int(total // (args.sample_mb * 1e6)) + 1)
    sample = [d.text() for d in train[::stride]]
    val_bytes = sum(len(c.encode("utf-8")) for c in val)
    print(f"train sample: every {stride}th of {len(train)} documents; val: {len(val)} documents, "
          f"{val_bytes / 1e6:.1f} MB of code", file=sys.stderr)
    print("| vocab | train s | val tokens | val bytes/token |")
    print("|---:|---:|---:|---:|")
    for v in args.vocab:
        t0 = time.monotonic()
        tok = train_spm(sample, v, threads=args.threads)
        secs = time.monotonic() - t0
        n = sum(len(tok.encode(c)) for c in val)
        print(f"| {v} | {secs:.1f} | {n:,} | {val_bytes / n:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
