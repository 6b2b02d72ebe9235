"""The PyTorch backend: AdamW with per-module rates, accumulation, clipping, bf16, DDP.

One object, ``TorchTrainer``, holds the state of a run on one process (model, optimizer,
device, precision switches); ``train_step`` is the whole update for one optimiser step and
reads top to bottom. The backend-neutral loop in ``loop.py`` drives it, so the MLX backend
has the same shape.

Per-module learning rates follow seed 004 by weight-name prefix (the model's names are a
contract, docs/model.md): ``H.*`` is the planner, ``L.*`` the generator, ``refine_head.*`` the
refinement controller; embeddings, norms and the output head take ``optim.lr``. Matrices
decay, vectors (norm gains, biases) do not.
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from hrm_lsp.log import get_logger
from hrm_lsp.model.weights import state_dict_for_export
from hrm_lsp.training.checkpoint import (
    MODEL_FILE,
    OPTIM_FILE,
    Checkpoint,
    CheckpointError,
    load_tensors,
)
from hrm_lsp.training.loss import Targets, to_torch_batch, torch_loss
from hrm_lsp.training.recipe import Recipe

log = get_logger(__name__)

# weight-name prefix -> which learning rate of the recipe's [optim] table it takes
MODULE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("H.", "planner_lr"),
    ("L.", "generator_lr"),
    ("refine_head.", "refine_lr"),
)


def module_lr_key(name: str) -> str:
    """Which ``optim`` learning-rate field a weight name takes."""
    for prefix, key in MODULE_PREFIXES:
        if name.startswith(prefix):
            return key
    return "lr"


def param_groups(model: nn.Module, recipe: Recipe) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """AdamW parameter groups (module x decay) and a map id(param) -> weight name."""
    opt = recipe.optim
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    names: dict[int, str] = {}
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            continue
        key = module_lr_key(name)
        decay = p.dim() >= 2
        g = groups.setdefault(
            (key, decay),
            {
                "params": [],
                "module": key,
                "peak_lr": getattr(opt, key),
                "lr": getattr(opt, key),
                "weight_decay": opt.weight_decay if decay else 0.0,
            },
        )
        g["params"].append(p)
        names[id(p)] = name
    return list(groups.values()), names


def _rng_to_text(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _rng_from_text(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


@dataclass
class TorchTrainer:
    """Everything one process needs to train with torch."""

    recipe: Recipe
    model: nn.Module  # what runs forward: the raw model, or DDP / compiled wrappers of it
    raw: nn.Module  # the model itself (weights, names)
    optimizer: torch.optim.Optimizer
    device: torch.device
    autocast_dtype: torch.dtype | None
    names: dict[int, str] = field(default_factory=dict)
    ddp: bool = False
    byte_features: bool = False

    backend = "torch"

    @classmethod
    def create(cls, recipe: Recipe, model: nn.Module, device: str, ddp: bool = False) -> TorchTrainer:
        """Move ``model`` to ``device``, wrap it (DDP, compile) and build its optimizer."""
        dev = torch.device(device)
        if recipe.run.threads and dev.type == "cpu":
            torch.set_num_threads(recipe.run.threads)
        model = model.to(dev)
        groups, names = param_groups(model, recipe)
        o = recipe.optim
        # The fused kernel on CUDA and on CPU (one pass over each parameter instead of a
        # dozen foreach ops; docs/training.md, "Throughput").
        fused = dev.type in ("cuda", "cpu")
        optimizer = torch.optim.AdamW(groups, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused)
        runner: nn.Module = model
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            runner = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if recipe.run.compile:
            runner = torch.compile(runner)
        autocast = torch.bfloat16 if (recipe.run.bf16 and dev.type == "cuda") else None
        return cls(recipe, runner, model, optimizer, dev, autocast, names, ddp,
                   bool(getattr(model.cfg, "byte_features", False)))

    # --- the step -----------------------------------------------------------------------

    def _forward(self, b: dict[str, torch.Tensor], feats: dict[str, np.ndarray] | None, model=None):
        kw = {}
        if feats:
            kw = {k: torch.from_numpy(v.astype(np.int64)).to(self.device) for k, v in feats.items()}
        if self.recipe.run.fused_loss:
            kw["lm_head"] = False  # the loss applies the head, fused and chunked
        ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
               if self.autocast_dtype else contextlib.nullcontext())
        with ctx:
            return (model or self.model)(b["inputs"], **kw)

    def _loss(self, out, b: dict[str, torch.Tensor]):
        if self.recipe.run.fused_loss:
            return torch_loss(out.hidden, out.refine_logit, b, self.recipe.loss,
                              head_weight=self.raw.lm_head.weight)
        return torch_loss(out.logits, out.refine_logit, b, self.recipe.loss)

    def set_qat(self, on: bool) -> None:
        """Fake quantisation of the block linears on or off (``run.qat_start``); a no-op for
        models not configured for QAT."""
        from hrm_lsp.model.hrgc import Linear

        bits = self.raw.cfg.qat_bits if on else 0
        for m in self.raw.modules():
            if isinstance(m, Linear):
                m.qat_bits = bits

    def train_step(self, micro: list[tuple[Targets, dict | None]], lr_scale: float) -> dict[str, Any]:
        """One optimiser step over ``micro`` (grad_accum micro-batches).

        Returns metrics as 0-d tensors (float() them only when logging: no per-step sync).
        With ``run.random_cycles`` the step runs at ``step_cycles()`` (logged as
        ``cycles_h`` / ``cycles_l``); the model is back at its config's counts afterwards,
        also when the step raises (evaluation and export run those).
        """
        if not (self.recipe.run.random_cycles and hasattr(self.raw, "cycles")):
            return self._step(micro, lr_scale)
        self.raw.cycles = self.step_cycles()
        try:
            out = self._step(micro, lr_scale)
            out["cycles_h"], out["cycles_l"] = self.raw.cycles
            return out
        finally:
            self.raw.cycles = None

    def _step(self, micro: list[tuple[Targets, dict | None]], lr_scale: float) -> dict[str, Any]:
        self.model.train()
        for g in self.optimizer.param_groups:
            g["lr"] = g["peak_lr"] * lr_scale
        n = len(micro)
        sums: dict[str, Any] = {}
        for i, (t, feats) in enumerate(micro):
            b = to_torch_batch(t, self.device)
            # Under DDP, all-reduce gradients only once, on the last micro-batch.
            sync = self.model.no_sync() if (self.ddp and i < n - 1) else contextlib.nullcontext()
            with sync:
                out = self._forward(b, feats)
                loss, parts = self._loss(out, b)
                (loss / n).backward()
            parts["loss"] = loss.detach()
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v
        out = {k: v / n for k, v in sums.items() if k != "nats"}
        # Summed, not averaged: the loop divides by the step's non-pad targets to log the plain
        # LM loss (train_lm), the quantity the evaluation reports as val_loss.
        out["nats"] = sums["nats"]
        if self.recipe.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.recipe.optim.grad_clip)
            out["grad_norm"] = norm.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        out["lr"] = self.optimizer.param_groups[0]["lr"]
        return out

    def step_cycles(self) -> tuple[int, int]:
        """This step's random (H, L) cycles: drawn from the run's seed and the optimiser's
        step count, so a resumed run draws what the uninterrupted one would have."""
        import random

        state = next(iter(self.optimizer.state.values()), {})
        step = int(state.get("step", 0))
        rng = random.Random(self.recipe.run.seed * 1_000_003 + step)
        cfg = self.raw.cfg
        return rng.randint(1, cfg.H_cycles), rng.randint(1, cfg.L_cycles)

    # --- evaluation ---------------------------------------------------------------------

    @torch.no_grad()
    def eval_nats(self, t: Targets, feats: dict | None) -> float:
        """Summed next-token cross-entropy (nats) over the non-pad targets of one batch.

        Runs the bare model, not the DDP wrapper: evaluation happens on rank 0 alone and a
        DDP forward would wait for the other ranks.
        """
        self.raw.eval()
        b = to_torch_batch(t, self.device)
        out = self._forward(b, feats, model=self.raw)
        _, parts = self._loss(out, b)
        return float(parts["nats"])

    # --- state --------------------------------------------------------------------------

    def num_params(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.raw.parameters()}.values())

    def model_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Contract-named weights and the safetensors metadata that carries the config."""
        from hrm_lsp.model.weights import CONFIG_KEY

        meta = {CONFIG_KEY: json.dumps(self.raw.cfg.to_dict(), sort_keys=True)}
        return state_dict_for_export(self.raw), meta

    def optimizer_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """AdamW state flattened to ``<weight name>.<exp_avg|exp_avg_sq|step>`` + group meta."""
        sd = self.optimizer.state_dict()
        order = [self.names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
        tensors: dict[str, torch.Tensor] = {}
        for idx, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"{order[idx]}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        groups = [
            {k: v for k, v in g.items() if k != "params"} | {"params": [order[i] for i in g["params"]]}
            for g in sd["param_groups"]
        ]
        return tensors, {"param_groups": groups}

    def load(self, ckpt: Checkpoint, state: dict[str, Any], weights_only: bool = False) -> None:
        """Restore weights (and unless ``weights_only``, optimizer state and RNG)."""
        self.load_weights(load_tensors(ckpt.path / MODEL_FILE, "pt"))
        if weights_only:
            return
        tensors = load_tensors(ckpt.path / OPTIM_FILE, "pt")
        groups = state.get("optimizer", {}).get("param_groups")
        if groups is None:
            raise CheckpointError(f"{ckpt.path}: state.json has no optimizer param_groups")
        index = {name: i for i, name in enumerate(n for g in groups for n in g["params"])}
        by_name: dict[str, dict[str, torch.Tensor]] = {}
        for key, v in tensors.items():
            name, _, k = key.rpartition(".")
            by_name.setdefault(name, {})[k] = v
        unknown = sorted(set(by_name) - set(index))
        if unknown:
            raise CheckpointError(f"{ckpt.path}: optimizer state for unknown weights {unknown[:3]}")
        sd = {
            "state": {index[n]: st for n, st in by_name.items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in groups],
        }
        try:
            self.optimizer.load_state_dict(sd)
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{ckpt.path}: optimizer state does not fit this model ({e})") from None
        self.set_rng_state(state.get("rng", {}))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy contract-named weights into the model (CheckpointError names mismatches)."""
        from hrm_lsp.model.weights import WeightsError, load_weights

        try:
            load_weights(self.raw, weights)
        except WeightsError as e:
            raise CheckpointError(str(e)) from None

    def rng_state(self) -> dict[str, Any]:
        out = {"torch": _rng_to_text(torch.get_rng_state())}
        if self.device.type == "cuda":
            out["cuda"] = _rng_to_text(torch.cuda.get_rng_state(self.device))
        return out

    def set_rng_state(self, rng: dict[str, Any]) -> None:
        if "torch" in rng:
            torch.set_rng_state(_rng_from_text(rng["torch"]))
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(_rng_from_text(rng["cuda"]), self.device)

    def peak_memory_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and GPUs) for a reproducible initialisation and dropout stream."""
    torch.manual_seed(seed)

