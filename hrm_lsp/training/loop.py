"""The training loop, shared by the torch and MLX backends.

``fit`` runs optimiser steps until ``total_steps``: fetch ``grad_accum`` micro-batches, let
the backend take one step at the scheduled learning rate, and on their cadences log,
evaluate and checkpoint. Everything a resume needs (weights, optimizer state, step, tokens,
each rank's data position and RNG) is in the checkpoint, so a resumed run continues exactly.

A backend offers: ``train_step(micro, lr_scale)``, ``eval_nats(targets, feats)``,
``set_qat(on)`` (used with ``run.qat_start``),
``model_tensors()``, ``optimizer_tensors()``, ``rng_state()``, ``num_params()`` and
``peak_memory_bytes()``.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm_lsp.config import to_dict
from hrm_lsp.training.checkpoint import save_checkpoint
from hrm_lsp.training.distributed import Dist
from hrm_lsp.training.metrics import MetricsLog, Progress, bits_per_byte, mfu
from hrm_lsp.training.recipe import Recipe
from hrm_lsp.training.schedule import lr_scale


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, data ran dry); the message says what happened."""


@dataclass
class RunState:
    """Counters that a checkpoint saves and a resume restores."""

    step: int = 0
    tokens: int = 0  # tokens processed, all ranks (batch x seq x accumulation x world)
    data_position: int = 0  # this rank's position in its shard of the training data
    elapsed_s: float = 0.0  # training wall time over all sessions of this run
    last_eval: dict[str, float] = field(default_factory=dict)


@dataclass
class RunContext:
    """Where a run writes and how it reports."""

    run_dir: Path
    recipe: Recipe
    model_config: dict[str, Any]
    total_steps: int
    dist: Dist
    metrics: MetricsLog
    progress: Progress
    flops_per_token: float = 0.0
    peak_flops: float | None = None
    checkpoint_every: int = 0  # steps between checkpoints (the recipe's, or one epoch's worth)
    extra_state: dict[str, Any] = field(default_factory=dict)  # recorded in every state.json


def evaluate(trainer, data) -> dict[str, float]:
    """Validation loss (nats/token), bits per UTF-8 byte and perplexity on the val batches."""
    nats, tokens, n_bytes = 0.0, 0, 0
    for t, feats, n_b in data.val_batches():
        nats += trainer.eval_nats(t, feats)
        tokens += t.n_tokens
        n_bytes += n_b
    if tokens == 0:
        raise TrainingError("the validation split has no tokens; prepare more data")
    loss = nats / tokens
    return {
        "val_loss": loss,
        "val_bpb": bits_per_byte(nats, n_bytes),
        "val_ppl": math.exp(min(loss, 50.0)),
        "val_tokens": tokens,
        "val_bytes": n_bytes,
    }


def save(trainer, ctx: RunContext, st: RunState) -> None:
    """Checkpoint the run (all ranks gather their RNG and data position; rank 0 writes)."""
    per_rank = ctx.dist.gather({"rng": trainer.rng_state(), "data_position": st.data_position})
    if not ctx.dist.is_main:
        return
    optim_tensors, optim_meta = trainer.optimizer_tensors()
    state = {
        "backend": trainer.backend,
        "tokens": st.tokens,
        "elapsed_s": st.elapsed_s,
        "world_size": ctx.dist.world_size,
        "data_positions": [r["data_position"] for r in per_rank],
        "rngs": [r["rng"] for r in per_rank],
        "rng": per_rank[0]["rng"],
        "total_steps": ctx.total_steps,
        "last_eval": st.last_eval,
        "optimizer": optim_meta,
        "recipe": to_dict(ctx.recipe),
        "model_config": ctx.model_config,
        **ctx.extra_state,
    }
    model_tensors, model_meta = trainer.model_tensors()
    save_checkpoint(ctx.run_dir, st.step, model_tensors, optim_tensors, state,
                    keep_last=ctx.recipe.run.keep_last, model_metadata=model_meta)


class _StopAtStepEnd:
    """Ctrl-C (SIGINT) finishes the current step, checkpoints it, then raises KeyboardInterrupt.

    Stopping inside a step could leave the optimizer half-applied, which no checkpoint may
    record; a second Ctrl-C interrupts at once. Single-process runs only: under torchrun the
    ranks must agree on the step to stop at, so DDP keeps the default behaviour.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def __enter__(self):
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C: immediate

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
        return False


def fit(trainer, data, ctx: RunContext, st: RunState) -> RunState:
    """Train from ``st`` to ``ctx.total_steps``; returns the final state."""
    with _StopAtStepEnd(enabled=not ctx.dist.active) as stop:
        return _fit(trainer, data, ctx, st, stop)


def _fit(trainer, data, ctx: RunContext, st: RunState, stop: _StopAtStepEnd) -> RunState:
    r = ctx.recipe
    accum = r.optim.grad_accum
    tokens_per_step = r.data.batch_size * r.data.seq_len * accum * ctx.dist.world_size
    qat_from = int(r.run.qat_start * ctx.total_steps) if r.run.qat else 0
    if qat_from:  # QAT for the final part of the run only (run.qat_start)
        trainer.set_qat(st.step >= qat_from)
    if st.step == 0 and ctx.dist.is_main:
        # The untrained model's score: the baseline every later evaluation is read against.
        first = evaluate(trainer, data)
        ctx.metrics.write({"step": 0, "tokens": 0, **first})
        ctx.progress.message(f"eval step 0: val loss {first['val_loss']:.4f} | "
                             f"{first['val_bpb']:.3f} bits/byte")
    batches = data.train_batches(start=st.data_position)
    session_start, session_step0 = time.perf_counter(), st.step
    window_t, window_steps = time.perf_counter(), 0
    while st.step < ctx.total_steps:
        t0 = time.perf_counter()
        if qat_from:
            trainer.set_qat(st.step >= qat_from)
        micro = [next(batches) for _ in range(accum)]
        m = trainer.train_step([(t, f) for t, f, _ in micro], lr_scale(st.step, r.schedule))
        st.step += 1
        st.tokens += tokens_per_step
        st.data_position = micro[-1][2]
        st.elapsed_s += time.perf_counter() - t0
        window_steps += 1
        last = st.step == ctx.total_steps

        if st.step % r.run.log_every == 0 or last:
            vals = {k: float(v) for k, v in m.items()}  # the only host sync of the step
            # The weighted multitask `loss` (0.4 plan + 0.4 code + 0.2 refine) is not on the
            # val_loss scale; train_lm is: mean CE over this step's non-pad targets (with FIM).
            nats = vals.pop("nats", None)
            if nats is not None:
                vals["train_lm"] = nats / max(1, sum(t.n_tokens for t, _, _ in micro))
            if not math.isfinite(vals["loss"]):
                raise TrainingError(
                    f"loss is {vals['loss']} at step {st.step}; lower the learning rate "
                    "(--set optim.lr=...) or resume from the last checkpoint"
                )
            now = time.perf_counter()
            tok_s = window_steps * tokens_per_step / max(now - window_t, 1e-9)
            window_t, window_steps = now, 0
            per_step = (now - session_start) / max(1, st.step - session_step0)
            eta = per_step * (ctx.total_steps - st.step)
            util = mfu(ctx.flops_per_token, tok_s, ctx.peak_flops)
            rec = {"step": st.step, "tokens": st.tokens, "tok_s": tok_s, **vals}
            if util is not None:
                rec["mfu"] = util
            peak = trainer.peak_memory_bytes()
            if peak is not None:
                rec["peak_mem_gb"] = peak / 2**30
            ctx.metrics.write(rec)
            ctx.progress.step(st.step, vals["loss"], vals["lr"], tok_s, eta, util,
                              f"train LM {vals['train_lm']:.4f}" if "train_lm" in vals else "")

        if (st.step % r.run.eval_every == 0 or last) and ctx.dist.is_main:
            st.last_eval = evaluate(trainer, data)
            ctx.metrics.write({"step": st.step, "tokens": st.tokens, **st.last_eval})
            ev = st.last_eval
            ctx.progress.message(
                f"eval step {st.step}: val loss {ev['val_loss']:.4f} | "
                f"{ev['val_bpb']:.3f} bits/byte | ppl {ev['val_ppl']:.2f}"
            )

        if st.step % ctx.checkpoint_every == 0 or last or stop.requested:
            save(trainer, ctx, st)
        if stop.requested and not last:
            ctx.progress.message(f"interrupted: saved step {st.step}; continue with --resume")
            raise KeyboardInterrupt
    return st
