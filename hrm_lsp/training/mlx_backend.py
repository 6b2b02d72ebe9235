"""The MLX backend: the same recipe semantics as the torch backend, on MLX.

- AdamW (``mlx.optimizers.AdamW``) per weight group, combined with ``MultiOptimizer``: the
  planner/generator/refinement-head learning rates by weight-name prefix (shared with torch,
  ``torch_backend.module_lr_key``), decay for matrices only;
- gradients with ``mlx.nn.value_and_grad`` of the same multi-task loss; accumulation over
  micro-batches; clipping with ``mlx.optimizers.clip_grad_norm``;
- the gradient and update functions go through ``mx.compile`` when ``run.compile`` is on;
  model, optimizer and random state are declared as the compiled functions' state, so the
  learning rate set each step (warm-up + cosine from ``schedule.lr_scale``) is seen;
- 4-bit QAT is the model's own fake quantisation (``ModelConfig.qat_bits``);
- checkpoints use the contract weight names, so a run trained here exports like a torch run.

MLX runs on Apple GPUs and, with the ``mlx[cpu]`` wheel, on Linux CPUs (what the tests use).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from hrm_lsp.training.checkpoint import (
    MODEL_FILE,
    OPTIM_FILE,
    Checkpoint,
    CheckpointError,
    load_tensors,
)
from hrm_lsp.training.loss import Targets
from hrm_lsp.training.recipe import LossSection, Recipe
from hrm_lsp.training.torch_backend import module_lr_key

LR_KEYS = ("planner_lr", "generator_lr", "refine_lr", "lr")


def mlx_loss(model, batch: dict[str, mx.array], cfg: LossSection):
    """(loss, parts) for one micro-batch; parts as in ``loss.torch_loss``."""
    out = model(batch["inputs"], nibble=batch.get("nibble"), acc=batch.get("acc"))
    ce = nn.losses.cross_entropy(out.logits.astype(mx.float32), batch["targets"], reduction="none")
    plan_m, code_m = batch["plan_mask"], batch["code_mask"]
    all_m = plan_m + code_m  # disjoint 0/1 masks
    nats = (ce * all_m).sum()
    if cfg.mode == "lm":
        loss = nats / mx.maximum(all_m.sum(), 1.0)
        return loss, {"lm": loss, "nats": nats}
    plan_sum, code_sum = (ce * plan_m).sum(), (ce * code_m).sum()
    plan = plan_sum / mx.maximum(plan_m.sum(), 1.0)
    code = code_sum / mx.maximum(code_m.sum(), 1.0)
    # Per-token weights, as loss.torch_loss: a plan token weighs plan_weight, a code token
    # code_weight; the sum is normalised by the total weight.
    pw, cw = cfg.plan_weight, cfg.code_weight
    tokens = (pw * plan_sum + cw * code_sum) / mx.maximum(pw * plan_m.sum() + cw * code_m.sum(), 1e-9)
    ref_m = batch["refine_mask"]
    bce = nn.losses.binary_cross_entropy(out.refine_logit.astype(mx.float32), batch["refine_target"],
                                         with_logits=True, reduction="none")
    refine = (bce * ref_m).sum() / mx.maximum(ref_m.sum(), 1.0)
    loss = (pw + cw) * tokens + cfg.refine_weight * refine
    return loss, {"plan": plan, "code": code, "refine": refine, "nats": nats}


def to_mlx_batch(t: Targets, feats: dict[str, np.ndarray] | None) -> dict[str, mx.array]:
    """Targets (+ byte features) -> MLX arrays; masks as float32 0/1 for the sums."""
    b = {
        "inputs": mx.array(t.inputs.astype(np.int32)),
        "targets": mx.array(t.targets.astype(np.int32)),
        "plan_mask": mx.array(t.plan_mask.astype(np.float32)),
        "code_mask": mx.array(t.code_mask.astype(np.float32)),
        "refine_mask": mx.array(t.refine_mask.astype(np.float32)),
        "refine_target": mx.array(t.refine_target.astype(np.float32)),
    }
    if feats:
        b.update({k: mx.array(v.astype(np.int32)) for k, v in feats.items()})
    return b


def _group_filter(key: str, decay: bool):
    return lambda path, w: module_lr_key(path) == key and (w.ndim >= 2) == decay


class MLXTrainer:
    """Model, optimizer and compiled step functions for one MLX run."""

    backend = "mlx"

    def __init__(self, recipe: Recipe, model, optimizer, peaks: list[float]):
        self.recipe = recipe
        self.model = model
        self.optimizer = optimizer
        self.peaks = peaks  # peak learning rate of each sub-optimizer, in order
        self.steps_done = 0
        self.device_description = f"MLX {mx.default_device()}"
        self.byte_features = bool(model.cfg.byte_features)
        self._qat_on = True
        self._build_step()

    def _build_step(self) -> None:
        """The (compiled when ``run.compile``) gradient and update functions."""
        model, optimizer, recipe = self.model, self.optimizer, self.recipe
        state = [model.state, optimizer.state, mx.random.state]
        loss_cfg, clip = recipe.loss, recipe.optim.grad_clip

        def grads_fn(batch):
            return nn.value_and_grad(model, lambda m, b: mlx_loss(m, b, loss_cfg))(model, batch)

        def update_fn(grads, n):
            grads = tree_map(lambda g: g / n, grads)
            norm = mx.array(0.0)
            if clip > 0:
                grads, norm = optim.clip_grad_norm(grads, clip)
            optimizer.update(model, grads)
            return norm

        if recipe.run.compile:
            grads_fn = partial(mx.compile, inputs=state, outputs=state)(grads_fn)
            update_fn = partial(mx.compile, inputs=state, outputs=state)(update_fn)
        self._grads, self._update = grads_fn, update_fn

    def set_qat(self, on: bool) -> None:
        """Fake quantisation of the block linears on or off (``run.qat_start``); a compiled
        step is traced again after a change (the switch is a constant of the trace)."""
        from hrm_lsp.model.mlx_hrgc import Linear

        if on == self._qat_on:
            return
        self._qat_on = on
        for _, m in self.model.named_modules():
            if isinstance(m, Linear):
                _, group, symmetric = m._qat
                m._qat = (self.model.cfg.qat_bits if on else 0, group, symmetric)
        self._build_step()

    @classmethod
    def create(cls, recipe: Recipe, cfg) -> MLXTrainer:
        """Fresh model (seeded from the recipe) and its per-group AdamW optimizers."""
        from hrm_lsp.model.mlx_hrgc import build_model_mlx

        mx.random.seed(recipe.run.seed)
        model = build_model_mlx(cfg)
        o = recipe.optim
        groups = [(k, d) for k in LR_KEYS for d in (True, False)]
        opts, peaks = [], []
        for key, decay in groups:
            peak = getattr(o, key)
            opts.append(optim.AdamW(learning_rate=peak, betas=[o.beta1, o.beta2], eps=o.eps,
                                    weight_decay=o.weight_decay if decay else 0.0))
            peaks.append(peak)
        # The last optimizer is MultiOptimizer's fallback: exactly the (lr, no decay) group.
        optimizer = optim.MultiOptimizer(opts, [_group_filter(k, d) for k, d in groups[:-1]])
        optimizer.init(model.trainable_parameters())
        return cls(recipe, model, optimizer, peaks)

    # --- the step -----------------------------------------------------------------------

    def train_step(self, micro: list[tuple[Targets, dict | None]], lr_scale: float) -> dict[str, Any]:
        """One optimiser step over ``micro``; returns lazy MLX scalars (evaluated when logged)."""
        self.model.train()
        # MLX's global key cannot be set back to a saved value, so each step draws its dropout
        # stream from a key derived from (run seed, step): a resumed run continues exactly.
        mx.random.seed(self.recipe.run.seed * 1_000_003 + self.steps_done)
        self.steps_done += 1
        for o, peak in zip(self.optimizer.optimizers, self.peaks, strict=True):
            o.learning_rate = peak * lr_scale
        total, sums = None, {}
        for t, feats in micro:
            (loss, parts), grads = self._grads(to_mlx_batch(t, feats))
            total = grads if total is None else tree_map(mx.add, total, grads)
            parts = {**parts, "loss": loss}
            sums = {k: sums[k] + v if k in sums else v for k, v in parts.items()}
            mx.eval(total)  # keep one micro-batch's graph alive at a time
        n = len(micro)
        norm = self._update(total, mx.array(float(n)))
        mx.eval(self.model.parameters(), self.optimizer.state)
        out = {k: v / n for k, v in sums.items() if k != "nats"}
        out["nats"] = sums["nats"]  # summed: the loop turns it into train_lm (see torch_backend)
        if self.recipe.optim.grad_clip > 0:
            out["grad_norm"] = norm
        out["lr"] = self.peaks[0] * lr_scale
        return out

    def eval_nats(self, t: Targets, feats: dict | None) -> float:
        """Summed next-token cross-entropy (nats) over the non-pad targets of one batch."""
        self.model.eval()
        _, parts = mlx_loss(self.model, to_mlx_batch(t, feats), self.recipe.loss)
        return float(parts["nats"])

    # --- state --------------------------------------------------------------------------

    def num_params(self) -> int:
        return sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))

    def model_tensors(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        from hrm_lsp.model.mlx_hrgc import mlx_weights
        from hrm_lsp.model.weights import CONFIG_KEY

        arrays = {k: np.array(v.astype(mx.float32)) for k, v in mlx_weights(self.model).items()}
        return arrays, {CONFIG_KEY: json.dumps(self.model.cfg.to_dict(), sort_keys=True)}

    def optimizer_tensors(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        flat = tree_flatten(self.optimizer.state)
        return {k: np.array(v) for k, v in flat}, {"format": "mlx.utils.tree_flatten"}

    def load(self, ckpt: Checkpoint, state: dict[str, Any], weights_only: bool = False) -> None:
        """Restore weights (and unless ``weights_only``, optimizer and random state)."""
        self.load_weights(load_tensors(ckpt.path / MODEL_FILE, "np"))
        if weights_only:
            return
        flat = load_tensors(ckpt.path / OPTIM_FILE, "np")
        own = dict(tree_flatten(self.optimizer.state))
        if set(flat) != set(own):
            raise CheckpointError(f"{ckpt.path}: optimizer state does not fit this model "
                                  f"(e.g. {sorted(set(flat) ^ set(own))[:3]})")
        self.optimizer.state = tree_unflatten([(k, mx.array(v)) for k, v in flat.items()])
        self.set_rng_state(state.get("rng", {}))
        mx.eval(self.optimizer.state)

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        from hrm_lsp.model.mlx_hrgc import load_arrays_mlx
        from hrm_lsp.model.weights import WeightsError

        try:
            load_arrays_mlx(self.model, {k: mx.array(v) for k, v in weights.items()})
        except WeightsError as e:
            raise CheckpointError(str(e)) from None

    def rng_state(self) -> dict[str, Any]:
        return {"mlx_steps": self.steps_done}

    def set_rng_state(self, rng: dict[str, Any]) -> None:
        self.steps_done = int(rng.get("mlx_steps", 0))

    def peak_memory_bytes(self) -> int | None:
        if mx.default_device() == mx.gpu:
            return int(mx.get_peak_memory())
        return None
