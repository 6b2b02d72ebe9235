"""Held-out bits per byte of model files (GGUF, run directory or checkpoint) on a prepared split.

Scores each model with the training run's own evaluation (``TrainData.val_batches`` +
``loop.evaluate``: the split in its seed-0 order, no FIM, batches of ``--batch`` x ``--seq``,
nats over the non-pad targets / UTF-8 bytes of the decoded targets / ln 2), on the first
``--batches`` batches of the split, so two models given together are scored on exactly the same
tokens. A unigram model of the train split (token frequencies, add-0.5) is scored on the same
batches as a reference: a model that does not beat it has learnt nothing from context.

    OMP_NUM_THREADS=1 python benchmarks/heldout.py --data .carry/shipdata4k --split test \\
        --batches 64 old.gguf hrm_lsp/assets/hrgc-default.gguf

Prints one JSON object per model (and one for the unigram reference).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm_lsp.config import apply_overrides  # noqa: E402
from hrm_lsp.training.data import TrainData, open_dataset  # noqa: E402
from hrm_lsp.training.distributed import Dist  # noqa: E402
from hrm_lsp.training.errors import USER_ERRORS  # noqa: E402
from hrm_lsp.training.finetune import load_init  # noqa: E402
from hrm_lsp.training.loop import evaluate  # noqa: E402
from hrm_lsp.training.recipe import recipe_from_dict, recipe_mapping  # noqa: E402
from hrm_lsp.training.run import RunError, _load_init_weights, make_trainer  # noqa: E402


def eval_recipe(batches: int, batch: int, seq: int):
    """The small-cpu recipe on the CPU with the evaluation shape asked for (no QAT change)."""
    return recipe_from_dict(apply_overrides(recipe_mapping("small-cpu"), [
        f"run.eval_batches={batches}", f"data.batch_size={batch}", f"data.seq_len={seq}",
        "run.device=cpu", "run.backend=torch"]))


def score_model(source: Path, data: Path, split: str, recipe) -> dict:
    """Loss, bits per byte and perplexity of one model on the split's first batches."""
    with tempfile.TemporaryDirectory() as tmp:
        init = load_init(source, Path(tmp))
    ds = open_dataset(data, recipe)
    if ds.tokenizer.sha256 != init.tokenizer_sha256:
        raise RunError(f"{data} was prepared with another tokenizer than {source}'s")
    if recipe.data.seq_len > init.model_config.max_seq_len:
        raise RunError(f"--seq {recipe.data.seq_len} exceeds {source}'s context "
                       f"{init.model_config.max_seq_len}")
    trainer, _ = make_trainer(recipe, init.model_config, Dist())
    _load_init_weights(trainer, init)
    t0 = time.perf_counter()
    ev = evaluate(trainer, TrainData(ds, recipe, init.model_config.byte_features, eval_split=split))
    return {"model": str(source), **ev, "seconds": round(time.perf_counter() - t0, 1)}


def score_unigram(data: Path, split: str, recipe) -> dict:
    """The same batches scored by the train split's token frequencies (add-0.5 smoothing)."""
    ds = open_dataset(data, recipe)
    counts = np.zeros(ds.tokenizer.vocab_size, dtype=np.float64)
    for i in range(ds.num_documents("train")):
        counts += np.bincount(ds.document("train", i), minlength=len(counts))[:len(counts)]
    logp = np.log((counts + 0.5) / (counts + 0.5).sum())
    nats, tokens, n_bytes = 0.0, 0, 0
    for t, _, n_b in TrainData(ds, recipe, False, eval_split=split).val_batches():
        real = t.plan_mask | t.code_mask
        nats -= float(logp[t.targets[real]].sum())
        tokens += int(real.sum())
        n_bytes += n_b
    return {"model": "unigram(train)", "val_loss": nats / tokens,
            "val_bpb": nats / n_bytes / math.log(2), "val_tokens": tokens, "val_bytes": n_bytes}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="GGUF files, run directories or checkpoints")
    p.add_argument("--data", required=True, type=Path, help="prepared data directory (hrm-lsp prepare)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--batches", type=int, default=64, help="first N batches of the split")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--no-unigram", action="store_true", help="skip the unigram reference")
    args = p.parse_args(argv)
    if min(args.batches, args.batch, args.seq) < 1:
        p.error("--batches, --batch and --seq must be >= 1")
    for m in args.models:
        if not m.exists():
            p.error(f"{m}: no such model file or run directory")
    try:
        recipe = eval_recipe(args.batches, args.batch, args.seq)
        for m in args.models:
            print(json.dumps({"split": args.split, **score_model(m, args.data, args.split, recipe)}),
                  flush=True)
        if not args.no_unigram:
            print(json.dumps({"split": args.split, **score_unigram(args.data, args.split, recipe)}),
                  flush=True)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
