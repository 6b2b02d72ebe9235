"""HRGC vs the parameter-matched GPT at equal training tokens, against zstd/xz as a floor.

Trains the same recipe twice with ``hrm-lsp train`` (``model.arch=hrgc`` and ``gpt``: same
preset, same tokenizer, same data, same steps, so the same tokens), then scores both on the
held-out ``test`` split (packages the runs never saw) in bits per UTF-8 byte. The floor is
the split's own documents compressed one by one with ``zstd -19`` and ``xz -9`` (the
``zstandard`` and ``lzma`` modules at those levels): a language model worth shipping must beat
a general-purpose compressor that sees each file alone.

    python benchmarks/train_compare.py --data data/stdlib-byte --recipe tiny --steps 300
    python benchmarks/train_compare.py --data data/stdlib-spm --recipe default --steps 5000 \\
        --device cuda                                     # the GPU comparison

Results go to docs/benchmarks.md ("Training") with the machine, the date and the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import lzma
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm_lsp.data import Dataset  # noqa: E402
from hrm_lsp.training.data import TrainData  # noqa: E402
from hrm_lsp.training.loop import evaluate  # noqa: E402
from hrm_lsp.training.run import TrainOptions, make_trainer, model_config_for, train  # noqa: E402


def compression_floor(ds: Dataset, split: str) -> dict[str, float]:
    """Bits per byte of the split's documents, each compressed alone (zstd -19, xz -9)."""
    import zstandard

    z = zstandard.ZstdCompressor(level=19)
    raw = zs = xz = 0
    for i in range(ds.num_documents(split)):
        text = ds.tokenizer.decode(ds.document(split, i).tolist()).encode("utf-8")
        raw += len(text)
        zs += len(z.compress(text))
        xz += len(lzma.compress(text, preset=9))
    return {"bytes": raw, "zstd19_bpb": 8 * zs / raw, "xz9_bpb": 8 * xz / raw}


def heldout_score(run: Path, data: Path, split: str, device: str,
                  batches: int | None = None, cycles: tuple[int, int] | None = None) -> dict[str, float]:
    """Bits per byte of a finished run's latest checkpoint on ``split`` (every batch of it,
    or its first ``batches``); ``cycles``: run an HRGC model at these (H, L) cycles."""
    from dataclasses import replace

    from hrm_lsp.training.checkpoint import latest_checkpoint
    from hrm_lsp.training.distributed import Dist
    from hrm_lsp.training.run import recipe_for

    # resume=True: the recipe the run recorded (with its model.arch), not a fresh one.
    saved = recipe_for(TrainOptions(data=(data,), out=run, device=device, resume=True))
    # None: the whole split, once
    recipe = replace(saved, run=replace(saved.run, eval_batches=batches or 10**9))
    ds = Dataset(data)
    cfg = model_config_for(recipe, ds.tokenizer.vocab_size)
    trainer, _ = make_trainer(recipe, cfg, Dist())
    ck = latest_checkpoint(run)
    trainer.load(ck, {}, weights_only=True)
    if cycles is not None:
        trainer.raw.cycles = cycles
    return evaluate(trainer, TrainData(ds, recipe, cfg.byte_features, eval_split=split))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="prepared data directory (hrm-lsp prepare)")
    p.add_argument("--recipe", default="tiny")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--split", default="test", help="held-out split to score")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    rows = {}
    for arch in ("hrgc", "gpt"):
        run = out / arch
        t0 = time.perf_counter()
        res = train(TrainOptions(recipe=args.recipe, data=(data,), out=run, device=args.device,
                                 steps=args.steps, overrides=(*args.overrides, f"model.arch={arch}"),
                                 quiet=True))
        score = heldout_score(run, data, args.split, args.device)
        rows[arch] = {"params": res.num_params, "tokens": res.tokens, "time_s": time.perf_counter() - t0,
                      **score}
        print(f"{arch}: {res.num_params:,} params, {res.tokens:,} tokens, held-out {args.split} "
              f"{score['val_bpb']:.4f} bits/byte ({score['val_bytes']:,} bytes)", flush=True)
    floor = compression_floor(Dataset(data), args.split)
    print()
    print(f"machine: {platform.processor() or platform.machine()}; date {dt.date.today().isoformat()}; "
          f"command: python benchmarks/train_compare.py {' '.join(argv or sys.argv[1:])}")
    print(f"| model | parameters | training tokens | held-out `{args.split}` bits/byte |")
    print("|---|---:|---:|---:|")
    for arch, r in rows.items():
        print(f"| {arch.upper()} | {r['params']:,} | {r['tokens']:,} | {r['val_bpb']:.3f} |")
    print(f"| zstd -19, per document | | | {floor['zstd19_bpb']:.3f} |")
    print(f"| xz -9, per document | | | {floor['xz9_bpb']:.3f} |")


if __name__ == "__main__":
    main()
