"""Model speed and memory: training tokens/s, prefill and cached decode tokens/s, peak memory.

    .venv/bin/python benchmarks/model.py --device cpu --presets tiny small default
    .venv/bin/python benchmarks/model.py --device cuda --batch 8 --seq 1024 --dtype bfloat16

For each preset, HRGC and its parameter-matched GPT:
- train: forward + backward + AdamW step on random ids ``[batch, seq]`` (the model's speed,
  not the data pipeline's), tokens/s and model FLOP/s (hrm_lsp.model.flops);
- prefill: one forward of ``--prompt`` tokens into a fresh preallocated cache;
- decode: ``--decode`` greedy tokens at batch 1, one position per call, ``last_only`` logits;
- memory: on CUDA the allocator's peak; on CPU the estimator's figure and (``--measure-rss``)
  the measured peak RSS of a training step in a fresh process.

Prints a markdown table (for docs/benchmarks.md) and, with ``--json``, one JSON object per row.
Results depend on the machine: record it, the date and the command with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hrm_lsp.device import resolve_device  # noqa: E402
from hrm_lsp.model import build_model, preset  # noqa: E402
from hrm_lsp.model.flops import flops_per_token  # noqa: E402
from hrm_lsp.model.memory import estimate_memory, measure_training_peak  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _inputs(cfg, B, T, device):
    ids = torch.randint(1, cfg.vocab_size, (B, T), device=device)
    kw = {}
    if cfg.byte_features:
        kw = dict(nibble=torch.randint(0, 17, (B, T), device=device),
                  acc=torch.randint(0, 256, (B, T), device=device))
    return ids, kw


def bench_train(model, B, T, steps, device, dtype) -> float:
    """Median seconds per training step (after one warm-up step)."""
    cfg = model.cfg
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, kw = _inputs(cfg, B, T + 1, device)
    kw = {k: v[:, :-1] for k, v in kw.items()}
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    times = []
    for i in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            out = model(ids[:, :-1], **kw)
        loss = F.cross_entropy(out.logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def bench_decode(model, prompt, n_new, device, dtype):
    """(prefill seconds, decode tokens/s) at batch 1 with a preallocated cache."""
    cfg = model.cfg
    ids, kw = _inputs(cfg, 1, prompt + n_new, device)
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    best_prefill, best_rate = float("inf"), 0.0
    for _ in range(2):  # the first round warms up kernels and allocators
        cache = model.new_cache(batch=1, max_len=prompt + n_new)
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            out = model(ids[:, :prompt], cache=cache, last_only=True,
                        **{k: v[:, :prompt] for k, v in kw.items()})
        _sync(device)
        t1 = time.perf_counter()
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for t in range(prompt, prompt + n_new):
            feats = {k: v[:, t : t + 1] for k, v in kw.items()}
            with autocast:
                out = model(nxt, cache=cache, last_only=True, **feats)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        t2 = time.perf_counter()
        best_prefill = min(best_prefill, t1 - t0)
        best_rate = max(best_rate, n_new / (t2 - t1))
    return best_prefill, best_rate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="HRGC / GPT speed and memory")
    ap.add_argument("--device", default="cpu", help="auto|cuda|rocm|mps|cpu")
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "default"])
    ap.add_argument("--archs", nargs="+", default=["hrgc", "gpt"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    ap.add_argument("--measure-rss", action="store_true", help="CPU: also measure the training peak RSS")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    dev = resolve_device(args.device)
    device = dev.torch_device
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    print(f"# {dev.description}; torch {torch.__version__}; {platform.processor() or platform.machine()}; "
          f"threads {torch.get_num_threads()}; batch {args.batch} x seq {args.seq}; prompt {args.prompt}, "
          f"decode {args.decode}; {args.dtype}; {time.strftime('%Y-%m-%d')}")
    print("| preset | arch | params | train tok/s | train GFLOP/s | prefill ms | decode tok/s | peak MiB (est) | peak MiB (measured) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.presets:
        for arch in args.archs:
            cfg = preset(name, arch=arch, dropout=0.0)
            seq = min(args.seq, cfg.max_seq_len)
            prompt = min(args.prompt, cfg.max_seq_len - args.decode)
            model = build_model(cfg).to(device)
            train_model = torch.compile(model) if args.compile else model
            model.train()
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            step_s = bench_train(train_model, args.batch, seq, args.steps, device, dtype)
            measured = None
            if device.startswith("cuda"):
                measured = torch.cuda.max_memory_allocated()
            elif args.measure_rss:
                measured = measure_training_peak(cfg, args.batch, seq)
            model.eval()
            prefill_s, decode_rate = bench_decode(model, prompt, args.decode, device, dtype)
            tok_s = args.batch * seq / step_s
            f = flops_per_token(cfg, seq).total
            est = estimate_memory(cfg, args.batch, seq,
                                  act_dtype=args.dtype if dtype != torch.float32 else None).total
            row = dict(preset=name, arch=arch, params=model.num_params(), train_tok_s=tok_s,
                       train_gflop_s=tok_s * f / 1e9, prefill_ms=prefill_s * 1e3, prompt=prompt,
                       decode_tok_s=decode_rate, peak_est_mib=est / 2**20,
                       peak_measured_mib=None if measured is None else measured / 2**20,
                       device=dev.description, batch=args.batch, seq=seq, dtype=args.dtype)
            meas = "-" if measured is None else f"{measured / 2**20:.0f}"
            print(f"| {name} | {arch} | {row['params'] / 1e6:.2f}M | {tok_s:,.0f} | {row['train_gflop_s']:.1f} "
                  f"| {row['prefill_ms']:.0f} | {decode_rate:.0f} | {est / 2**20:.0f} | {meas} |", flush=True)
            if args.json:
                print(json.dumps(row), flush=True)
            del model, train_model


if __name__ == "__main__":
    main()
