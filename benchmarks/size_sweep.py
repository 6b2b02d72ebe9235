"""Model size, vocabulary and recurrence at a fixed training-compute budget (issue 14).

Each variant is the ``small-cpu`` recipe with ``--set`` overrides, trained by ``hrm-lsp
train`` for as many optimiser steps as the budget allows: ``steps = budget / (training FLOPs
per token x tokens per step)``, the FLOPs from ``hrm_lsp.model.flops`` (every recurrence step
counted). Budgets are in FLOPs, not seconds, so a loaded machine changes the wall time but not
the comparison. Every run is scored on the held-out ``test`` split (packages and repositories it
never saw) in bits per UTF-8 byte, so different vocabularies compare; the validation curve at
each evaluation is kept for docs/model.md.

    python benchmarks/size_sweep.py --data 4k=data/ship4k --data 8k=data/ship8k \\
        --budget 2e13 --out runs/sweep --json runs/sweep.json

One run at a time on one thread (``run.threads=1``), no ``torch.compile`` (its minutes of
compile time would be a large, unequal share of a short run). Results: docs/model.md ("Size
and recurrence at a fixed budget") with machine, date and command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_compare import heldout_score  # noqa: E402

from hrm_lsp.data import Dataset  # noqa: E402
from hrm_lsp.model.flops import flops_per_token  # noqa: E402
from hrm_lsp.training.run import TrainOptions, model_config_for, recipe_for, train  # noqa: E402

RECIPE = "small-cpu"
M = "model.overrides."


@dataclass(frozen=True)
class Variant:
    name: str
    data: str  # key of --data
    sets: tuple[str, ...]


VARIANTS = (
    Variant("small 1x1", "4k", ()),
    Variant("small 2x2 gated", "4k", (f"{M}H_cycles=2", f"{M}L_cycles=2", f"{M}recurrent_gates=true")),
    Variant("small 2x2 gated, random cycles", "4k",
            (f"{M}H_cycles=2", f"{M}L_cycles=2", f"{M}recurrent_gates=true", "run.random_cycles=true")),
    Variant("small GPT", "4k", ("model.arch=gpt",)),
    Variant("narrow 1x1", "4k", (f"{M}d_model=128", f"{M}n_heads=4", f"{M}mlp_hidden=384")),
    Variant("medium 1x1", "4k", (f"{M}d_model=256", f"{M}n_heads=8", f"{M}H_layers=3",
                                 f"{M}L_layers=3", f"{M}mlp_hidden=768")),
    Variant("small 1x1, 8k vocab", "8k", ()),
)


def plan_steps(variant: Variant, data: Path, budget: float, base: tuple[str, ...]) -> tuple[int, float, int]:
    """(steps, training FLOPs per token, tokens per step) for ``budget`` FLOPs."""
    recipe = recipe_for(TrainOptions(recipe=RECIPE, data=(data,), overrides=(*base, *variant.sets)))
    cfg = model_config_for(recipe, Dataset(data).tokenizer.vocab_size)
    counts = [(h, l_) for h in range(1, cfg.H_cycles + 1) for l_ in range(1, cfg.L_cycles + 1)] \
        if recipe.run.random_cycles else [(cfg.H_cycles, cfg.L_cycles)]
    # Random cycles: the mean over the counts a step draws from (uniformly).
    fpt = sum(flops_per_token(replace(cfg, H_cycles=h, L_cycles=l_), recipe.data.seq_len,
                              training=True).total for h, l_ in counts) / len(counts)
    per_step = recipe.data.batch_size * recipe.data.seq_len * recipe.optim.grad_accum
    return max(1, round(budget / (fpt * per_step))), fpt, per_step


def curve(run: Path) -> list[tuple[int, float]]:
    """(training tokens, validation bits/byte) at each evaluation of the run."""
    points = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "val_bpb" in row:
            points.append((int(row.get("tokens", 0)), float(row["val_bpb"])))
    return points


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True, metavar="KEY=DIR",
                   help="prepared data directory per vocabulary key (4k=..., 8k=...)")
    p.add_argument("--budget", type=float, default=2e13, help="training FLOPs per variant")
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--json", help="write the results here as well")
    p.add_argument("--only", action="append", default=[], help="variant names to run (default: all)")
    p.add_argument("--test-batches", type=int, default=64, help="batches of the test split to score")
    p.add_argument("--evals", type=int, default=4, help="validation points per run")
    args = p.parse_args(argv)
    datas = {}
    for d in args.data:
        key, sep, path = d.partition("=")
        if not sep or not key or not Path(path, "manifest.json").is_file():
            p.error(f"--data {d!r}: expected KEY=DIR with DIR a prepared data directory "
                    "(hrm-lsp prepare)")
        datas[key] = path
    base = ("run.threads=1", "run.compile=false", "run.eval_batches=16", "run.checkpoint_every=0")
    out = Path(args.out)
    rows = []
    for v in VARIANTS:
        if (args.only and v.name not in args.only) or v.data not in datas:
            continue
        data = Path(datas[v.data])
        steps, fpt, per_step = plan_steps(v, data, args.budget, base)
        run = out / v.name.replace(" ", "_").replace(",", "")
        t0 = time.perf_counter()
        res = train(TrainOptions(recipe=RECIPE, data=(data,), out=run, steps=steps, quiet=True,
                                 overrides=(*base, *v.sets, f"run.eval_every={max(1, steps // args.evals)}")))
        wall = time.perf_counter() - t0
        score = heldout_score(run, data, "test", "cpu", batches=args.test_batches)
        row = {"variant": v.name, "params": res.num_params, "steps": steps, "tokens": res.tokens,
               "flops_per_token": fpt, "wall_s": wall, "test_bpb": score["val_bpb"],
               "curve": curve(run)}
        if "run.random_cycles=true" in v.sets:  # the same weights at each count they trained at
            row["test_bpb_by_cycles"] = {
                f"{h}x{l_}": heldout_score(run, data, "test", "cpu", batches=args.test_batches,
                                           cycles=(h, l_))["val_bpb"] for h in (1, 2) for l_ in (1, 2)}
        rows.append(row)
        print(f"{v.name}: {res.num_params:,} params, {steps} steps, {res.tokens:,} tokens, "
              f"{wall:.0f} s, test {score['val_bpb']:.4f} bits/byte"
              + "".join(f", at {k} {b:.4f}" for k, b in row.get("test_bpb_by_cycles", {}).items()),
              flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print()
    print(f"machine: {platform.processor() or platform.machine()}; date {dt.date.today().isoformat()}; "
          f"budget {args.budget:.2g} training FLOPs per variant; "
          f"command: python benchmarks/size_sweep.py {' '.join(argv or sys.argv[1:])}")
    print("| variant | parameters | steps | training tokens | wall s | held-out `test` bits/byte |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {r['steps']} | {r['tokens']:,} | {r['wall_s']:.0f} "
              f"| {r['test_bpb']:.3f} |")


if __name__ == "__main__":
    main()
