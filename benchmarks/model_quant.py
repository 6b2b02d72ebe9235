"""4-bit on real data: weight error and the loss gap between fp32 and 4-bit weights.

    .venv/bin/python benchmarks/model_quant.py --steps 300 --qat-steps 100

Trains a small byte-level HRGC on Go standard-library files (raw UTF-8 bytes as ids, so no
tokenizer is involved), then evaluates held-out files (other packages) with
- the fp32 weights;
- post-training 4-bit weights (every block linear packed and unpacked; group 32/64,
  symmetric Q4_0-style and asymmetric Q4_1-style);
- 4-bit weights after a short quantization-aware fine-tune (fake quantization with the
  straight-through estimator, so the evaluated model is exactly the packed one).
Reports bits per byte and the relative RMS error of the quantized weights.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hrm_lsp.model import build_model, preset  # noqa: E402
from hrm_lsp.model.quant import quant_error, quantizable, quantize_model_weights  # noqa: E402

TRAIN_PKGS = ["strings", "bytes", "strconv", "sort", "bufio", "io", "errors", "unicode/utf8",
              "path", "text/tabwriter", "container/list", "encoding/csv"]
VAL_PKGS = ["fmt", "net/url", "encoding/hex", "html"]


def _goroot() -> Path:
    import go

    return Path(go.__file__).resolve().parent


def load_bytes(pkgs: list[str]) -> np.ndarray:
    """Concatenated non-test .go files of the given stdlib packages, as uint8."""
    src = _goroot() / "src"
    parts = []
    for pkg in pkgs:
        for f in sorted((src / pkg).glob("*.go")):
            if not f.name.endswith("_test.go"):
                parts.append(f.read_bytes())
    return np.frombuffer(b"\n".join(parts), dtype=np.uint8)


def batch(data: np.ndarray, B: int, T: int, rng: np.random.Generator) -> torch.Tensor:
    starts = rng.integers(0, len(data) - T - 1, size=B)
    return torch.from_numpy(np.stack([data[s : s + T + 1] for s in starts]).astype(np.int64))


@torch.no_grad()
def evaluate(model, data: np.ndarray, T: int, n_windows: int) -> float:
    """Mean bits per byte over fixed, evenly spaced held-out windows."""
    model.eval()
    starts = np.linspace(0, len(data) - T - 2, n_windows).astype(int)
    total = 0.0
    for s in starts:
        ids = torch.from_numpy(data[s : s + T + 1].astype(np.int64))[None]
        out = model(ids[:, :-1])
        total += F.cross_entropy(out.logits[0], ids[0, 1:]).item()
    model.train()
    return total / len(starts) / math.log(2)


def train(model, data, steps, B, T, lr, seed) -> None:
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for _ in range(steps):
        ids = batch(data, B, T, rng)
        out = model(ids[:, :-1])
        loss = F.cross_entropy(out.logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fp32 vs 4-bit loss on held-out Go")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--mlp-hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--qat-steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_data, val_data = load_bytes(TRAIN_PKGS), load_bytes(VAL_PKGS)
    cfg = preset(args.preset, vocab_size=256, d_model=args.d_model, mlp_hidden=args.mlp_hidden,
                 n_heads=max(1, args.d_model // 32))
    model = build_model(cfg)
    t0 = time.time()
    train(model, train_data, args.steps, args.batch, args.seq, args.lr, seed=0)
    print(f"# {time.strftime('%Y-%m-%d')}; CPU, {torch.get_num_threads()} threads; {args.preset} preset, "
          f"d_model {cfg.d_model}, {model.num_params():,} params; train {len(train_data):,} bytes "
          f"({', '.join(TRAIN_PKGS)}), {args.steps} steps x {args.batch} x {args.seq}; held-out "
          f"{len(val_data):,} bytes ({', '.join(VAL_PKGS)}), {args.eval_windows} windows of {args.seq}; "
          f"trained in {time.time() - t0:.0f} s")
    fp_bpb = evaluate(model, val_data, args.seq, args.eval_windows)
    names = quantizable(model)
    params = dict(model.named_parameters())
    print("| weights | rel. RMS weight error | held-out bits/byte | gap vs fp32 |")
    print("|---|---:|---:|---:|")
    print(f"| fp32 | 0 | {fp_bpb:.4f} | - |")
    for group in (32, 64):
        for symmetric in (True, False):
            q = copy.deepcopy(model)
            quantize_model_weights(q, group, symmetric)
            err = float(np.mean([quant_error(params[n], group, symmetric)["rel_rms"] for n in names]))
            bpb = evaluate(q, val_data, args.seq, args.eval_windows)
            kind = f"4-bit PTQ g{group} {'sym (Q4_0)' if symmetric else 'asym (Q4_1)'}"
            print(f"| {kind} | {err:.4f} | {bpb:.4f} | {bpb - fp_bpb:+.4f} |", flush=True)
    # QAT: continue training the same weights with fake quantization (g32 symmetric), and
    # compare with the same number of extra fp32 steps so the gap is not just more training.
    fp_ref = float("nan")  # set by the fp32 pass, which runs first
    for bits in (0, 4):
        m = build_model(cfg.replace(qat_bits=bits, qat_group=32, qat_symmetric=True))
        m.load_state_dict(model.state_dict())
        train(m, train_data, args.qat_steps, args.batch, args.seq, args.lr / 4, seed=1)
        if bits:
            bpb = evaluate(m, val_data, args.seq, args.eval_windows)
            print(f"| 4-bit QAT g32 sym, +{args.qat_steps} steps | - | {bpb:.4f} | {bpb - fp_ref:+.4f} (vs fp32 +{args.qat_steps}) |")
        else:
            fp_ref = evaluate(m, val_data, args.seq, args.eval_windows)
            print(f"| fp32, +{args.qat_steps} steps | 0 | {fp_ref:.4f} | - |")


if __name__ == "__main__":
    main()
