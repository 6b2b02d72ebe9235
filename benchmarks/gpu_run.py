"""Helpers of the one-shot GPU run (``scripts/gpu_run.sh``, issue 14), run on the device machine.

    python benchmarks/gpu_run.py check                       # imports, GPU, data: fail in seconds
    python benchmarks/gpu_run.py data-rate DATA --recipe R   # batches/s the worker processes build
    python benchmarks/gpu_run.py report RUN --train-log LOG  # tokens/s, MFU, peak memory, bits/byte

``data-rate`` prints one integer on its last line: the steps that the batch builders can feed
in ``--minutes`` (``schedule.steps`` is capped by it, so a run whose data cannot keep up with
the GPU still ends its cosine schedule inside the time). ``report`` prints a Markdown table
from the run's ``metrics.jsonl`` and the budget estimate in its log.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def check(device: str) -> None:
    """Everything training and export import, and the GPU; a clear line for what is missing."""
    missing = []
    for mod in ("numpy", "torch", "sentencepiece", "tree_sitter", "tree_sitter_go", "gguf",
                "click", "rich", "tqdm", "safetensors"):
        try:
            __import__(mod)
        except ImportError as e:
            missing.append(f"{mod} ({e})")
    if missing:
        sys.exit("gpu_run check: cannot import " + "; ".join(missing) +
                 " (carry its wheel in gpu/wheels: scripts/gpu_pack.sh)")
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_run check: torch sees no CUDA device")
    from hrm_lsp.validators.treesitter import parse

    parse("package p\n")  # the Go grammar loads
    where = (f"{torch.cuda.get_device_name(0)}, "
             f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB") \
        if device == "cuda" else device
    print(f"gpu_run check: torch {torch.__version__}, {where}")


def data_rate(data: Path, recipe_name: str, minutes: float, batches: int,
              sets: list[str]) -> None:
    from hrm_lsp.data import Dataset
    from hrm_lsp.training.recipe import load_recipe

    r = load_recipe(recipe_name, sets)
    d = r.data
    it = Dataset(data).batches("train", batch_size=d.batch_size, seq_len=d.seq_len,
                               seed=r.run.seed, fim_rate=d.fim_rate, workers=d.workers)
    warm = d.workers * 4 + 1  # the prefetched ones come at once
    t0 = None
    for i, _ in enumerate(it):
        if i == warm:
            t0 = time.perf_counter()
        if i == warm + batches:
            break
    it.close()
    rate = batches / (time.perf_counter() - t0)
    tokens = rate * r.tokens_per_step
    steps = int(rate * minutes * 60)
    print(f"data: {rate:.1f} batches/s from {d.workers} worker processes, "
          f"{tokens:,.0f} tokens/s; {steps} steps fit in {minutes:g} min")
    print(steps)


def report(run: Path, train_log: Path | None) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "tok_s" in r]
    evals = [r for r in rows if "val_bpb" in r]
    later = steps[len(steps) // 4:] or steps  # past compilation and warm-up
    med = lambda key: statistics.median(r[key] for r in later if key in r) if any(key in r for r in later) else None  # noqa: E731
    est = None
    if train_log is not None and train_log.is_file():
        m = re.search(r"estimated peak memory ([0-9.]+) GiB", train_log.read_text(errors="replace"))
        est = float(m.group(1)) if m else None
    peak = max((r["peak_mem_gb"] for r in steps if "peak_mem_gb" in r), default=None)
    tok_s, mfu = med("tok_s"), med("mfu")
    out = [
        "| figure | value |", "|---|---:|",
        f"| steps | {steps[-1]['step'] if steps else 0} |",
        f"| tokens | {steps[-1]['tokens'] if steps else 0:,} |",
        f"| tokens/s (median of the last three quarters of the logged steps) | {tok_s:,.0f} |" if tok_s else "| tokens/s | - |",
        f"| MFU (same steps) | {mfu:.1%} |" if mfu is not None else "| MFU | - (unknown GPU peak) |",
        f"| peak memory, measured | {peak:.2f} GiB |" if peak is not None else "| peak memory | - |",
        f"| peak memory, estimated | {est:.2f} GiB |" if est is not None else "| peak memory, estimated | - |",
    ]
    for e in evals:
        out.append(f"| validation at step {e['step']} | {e['val_bpb']:.3f} bits/byte |")
    print("\n".join(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p = sub.add_parser("data-rate")
    p.add_argument("data", type=Path)
    p.add_argument("--recipe", default="gpu-h200")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE, as train --set")
    p = sub.add_parser("report")
    p.add_argument("run", type=Path)
    p.add_argument("--train-log", type=Path)
    args = ap.parse_args()
    if args.cmd == "check":
        check(args.device)
    elif args.cmd == "data-rate":
        data_rate(args.data, args.recipe, args.minutes, args.batches, args.sets)
    else:
        report(args.run, args.train_log)


if __name__ == "__main__":
    main()
