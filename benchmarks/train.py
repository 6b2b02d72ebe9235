"""Training throughput: tokens/s (and MFU, peak memory on GPUs) of the real training step.

Runs ``TorchTrainer.train_step`` / ``MLXTrainer.train_step`` -- the exact code ``hrm-lsp
train`` runs -- on fixed batches for each preset and backend, after warm-up steps (which
also absorb ``torch.compile`` / ``mx.compile`` time). Batches come from a prepared data
directory (``--data``, its tokenizer must fit the preset's vocabulary) or, by default, from
uniformly random ids: the step's cost does not depend on the token values.

    python benchmarks/train.py                                  # CPU: tiny, small, default x torch, mlx
    python benchmarks/train.py --recipe small-cpu --backends torch \
        --set run.fused_loss=false                              # a recipe's own model and batch
    python benchmarks/train.py --presets default --backends torch --device cuda \\
        --batch 32 --seq 1024 --bf16 --compile                  # GPU: tokens/s, MFU, memory

Results go to docs/benchmarks.md ("Training") with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm_lsp.model import preset  # noqa: E402
from hrm_lsp.model.flops import flops_per_token  # noqa: E402
from hrm_lsp.model.memory import estimate_memory  # noqa: E402
from hrm_lsp.tokenizer.byte import ByteTokenizer  # noqa: E402
from hrm_lsp.training.loss import SymbolIds, make_targets  # noqa: E402
from hrm_lsp.training.metrics import mfu, peak_flops  # noqa: E402
from hrm_lsp.training.recipe import load_recipe  # noqa: E402

# CPU-sized batch shapes per preset (override with --batch/--seq).
CPU_SHAPES = {"tiny": (8, 256), "small": (8, 256), "default": (4, 256), "seed000": (4, 256)}


def make_batches(cfg, batch: int, seq: int, n: int, data: str | None, seed: int = 0):
    """``n`` micro-batches of (Targets, features): real shards with --data, else random ids."""
    tok = ByteTokenizer()
    sym = SymbolIds(pad=0, plan_open=-1, plan_close=-2, validate=-3, syntax_ok=-4)
    if data:
        from hrm_lsp.data import Dataset

        ds = Dataset(data)
        tok = ds.tokenizer
        if tok.vocab_size > cfg.vocab_size:
            raise SystemExit(f"--data tokenizer has {tok.vocab_size} ids; preset has {cfg.vocab_size}")
        sym = SymbolIds.from_tokenizer(tok)
        it = ds.batches("train", batch, seq, seed=seed, fim_rate=0.5)
        ids = [next(it).ids for _ in range(n)]
    else:
        rng = np.random.default_rng(seed)
        ids = [rng.integers(1, cfg.vocab_size, size=(batch, seq + 1)) for _ in range(n)]
    out = []
    for a in ids:
        t = make_targets(a, sym)
        feats = None
        if cfg.byte_features:
            rng = np.random.default_rng(seed)
            feats = {"nibble": rng.integers(0, 17, t.inputs.shape), "acc": rng.integers(0, 256, t.inputs.shape)}
            if data:
                feats = tok.features(t.inputs)
        out.append((t, feats))
    return out


def make_trainer(backend: str, name: str, cfg, device: str, bf16: bool, compile_: bool,
                 recipe_name: str = "tiny", extra: tuple[str, ...] = ()):
    overrides = [f"run.bf16={'true' if bf16 else 'false'}", f"run.compile={'true' if compile_ else 'false'}"]
    if recipe_name != "tiny":  # a named recipe keeps its own switches unless --bf16/--compile
        overrides = [o for o, flag in zip(overrides, (bf16, compile_), strict=True) if flag]
    overrides += list(extra)
    recipe = load_recipe(recipe_name, overrides)
    if backend == "torch":
        from hrm_lsp.device import resolve_device
        from hrm_lsp.model import build_model
        from hrm_lsp.training.torch_backend import TorchTrainer

        info = resolve_device(device)
        return TorchTrainer.create(recipe, build_model(cfg), info.torch_device), info.description
    from hrm_lsp.training.mlx_backend import MLXTrainer

    t = MLXTrainer.create(recipe, cfg)
    return t, t.device_description


def sync(trainer) -> None:
    if trainer.backend == "torch":
        import torch

        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
    else:
        import mlx.core as mx

        mx.eval(trainer.model.parameters())


def bench_one(backend: str, name: str, args) -> dict:
    batch, seq = CPU_SHAPES.get(name, (8, 256))
    recipe_name = "tiny"
    if not args.recipe:
        cfg = preset(name)
    else:  # the recipe's model (its overrides, QAT, vocabulary) and batch shape
        from hrm_lsp.training.run import model_config_for, recipe_vocab_size

        recipe_name = name = args.recipe
        r = load_recipe(recipe_name, list(args.set))
        cfg = model_config_for(r, recipe_vocab_size(r))
        batch, seq = r.data.batch_size, r.data.seq_len
    batch, seq = args.batch or batch, args.seq or seq
    if seq > cfg.max_seq_len:
        cfg = cfg.replace(max_seq_len=seq)
    trainer, device = make_trainer(backend, name, cfg, args.device, args.bf16, args.compile,
                                   recipe_name, tuple(args.set))
    batches = make_batches(cfg, batch, seq, 2, args.data)
    for i in range(args.warmup):
        m = trainer.train_step([batches[i % 2]], 1.0)
    float(m["loss"])
    sync(trainer)
    if backend == "torch" and trainer.device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(trainer.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.steps):
        m = trainer.train_step([batches[i % 2]], 1.0)
    loss = float(m["loss"])  # forces the last step's work
    sync(trainer)
    dt_s = (time.perf_counter() - t0) / args.steps
    # CPU seconds of this process per step: on a machine shared with other jobs, tokens per
    # CPU-second compares code changes where wall time mostly measures the neighbours.
    cpu_s = (time.process_time() - c0) / args.steps
    tok_s = batch * seq / dt_s
    fpt = flops_per_token(cfg, seq, training=True).total
    bf16 = args.bf16 and backend == "torch" and "cpu" not in device.lower()
    util = mfu(fpt, tok_s, peak_flops(device, bf16) if "cpu" not in device.lower() else None)
    est = estimate_memory(cfg, batch, seq, act_dtype="bfloat16" if bf16 else "float32")
    peak = trainer.peak_memory_bytes()
    return {
        "backend": backend, "preset": name, "params": trainer.num_params(), "device": device,
        "batch": batch, "seq": seq, "ms_step": 1000 * dt_s, "tok_s": tok_s, "loss": loss,
        "tok_cpu_s": batch * seq / max(cpu_s, 1e-9),
        "gflop_s": fpt * tok_s / 1e9, "mfu": util, "peak_gib": None if peak is None else peak / 2**30,
        "est_gib": est.total / 2**30, "bf16": bf16,
        "compile": bool(getattr(trainer, "recipe", None) and trainer.recipe.run.compile),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,small,default")
    p.add_argument("--backends", default="torch,mlx")
    p.add_argument("--device", default="cpu", help="torch device: auto|cuda|rocm|mps|cpu")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--seq", type=int, default=0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile / mx.compile the step "
                   "(with --recipe: the recipe's run.compile unless given)")
    p.add_argument("--data", default=None, help="prepared data directory for real batches")
    p.add_argument("--recipe", default="", help="time this recipe's model and batch (replaces --presets)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as `hrm-lsp train --set` (repeatable)")
    args = p.parse_args(argv)
    if args.recipe:
        args.presets = args.recipe
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    for backend in args.backends.split(","):
        for name in args.presets.split(","):
            r = bench_one(backend, name, args)
            rows.append(r)
            print(f"{backend:5s} {name:8s} {r['params'] / 1e6:6.2f}M  B{r['batch']}xT{r['seq']}  "
                  f"{r['ms_step']:9.1f} ms/step  {r['tok_s']:10,.0f} tok/s  "
                  f"{r['tok_cpu_s']:10,.0f} tok/CPU-s  {r['gflop_s']:8.1f} GFLOP/s"
                  + (f"  MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else "")
                  + (f"  peak {r['peak_gib']:.2f} GiB (est {r['est_gib']:.2f})" if r["peak_gib"] is not None else ""),
                  flush=True)
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {rows[0]['device'] if rows else ''}; "
          f"date {dt.date.today().isoformat()}; command: python benchmarks/train.py {' '.join(argv or sys.argv[1:])}")
    print("| backend | preset | params | batch x seq | ms/step | tokens/s | GFLOP/s | MFU | peak mem (est) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        util = "" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.2f} GiB "
        print(f"| {r['backend']} | {r['preset']} | {r['params'] / 1e6:.2f}M | {r['batch']} x {r['seq']} | "
              f"{r['ms_step']:.0f} | {r['tok_s']:,.0f} | {r['gflop_s']:.1f} | {util} | "
              f"{peak}({r['est_gib']:.2f} GiB) |")


if __name__ == "__main__":
    main()
