"""Training recipes: TOML files in ``recipes/`` parsed once into frozen dataclasses.

A recipe says everything a run needs except where the data is and where the run goes:
model preset, tokenizer kind, batch shape, optimiser, schedule, loss weights, evaluation
and checkpoint cadence, the memory budget, and the source it reproduces with that source's
claimed figures beside ours. ``--set section.key=value`` overrides any field; unknown keys
and wrong types fail here, at the boundary, with a message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from hrm_lsp.config import ConfigError, apply_overrides, load_dataclass, read_toml, to_dict


@dataclass(frozen=True)
class SourceSection:
    """Where the recipe comes from and what that source claims (claims are not results)."""

    name: str
    description: str = ""
    source: str = ""
    claims: tuple[str, ...] = ()
    ours: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSection:
    """Model preset from ``hrm_lsp.model.preset`` plus field overrides for its config."""

    preset: str = "tiny"
    arch: Literal["hrgc", "gpt"] = "hrgc"
    # Extra ModelConfig fields (e.g. {dropout = 0.1}); checked by the model package.
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    """Data shape; ``tokenizer`` must match the prepared data's tokenizer kind."""

    tokenizer: Literal["spm", "byte"] = "byte"
    vocab_size: int = 0  # spm vocabulary when preparing from sources (0: data package default)
    seq_len: int = 512
    batch_size: int = 8
    fim_rate: float = 0.5
    history: bool = True  # mine git history when --data is a repository
    since: str = ""  # with history: only commits after this date (prepare --since); "" = all
    split_by: Literal["auto", "repo", "package"] = "auto"  # prepare --split-by for sources
    refine_examples: int = 0  # refinement documents to make when preparing sources
    # Processes that build training batches ahead of the step (0: the training process
    # itself). One process builds about 0.5M tokens of FIM rows a second: a GPU needs more
    # (docs/training.md, "A GPU run").
    workers: int = 0

    def validate(self) -> None:
        if self.seq_len < 2 or self.batch_size < 1:
            raise ConfigError("data: seq_len must be >= 2 and batch_size >= 1")
        if self.workers < 0:
            raise ConfigError(f"data.workers: {self.workers} must be >= 0")
        if self.refine_examples < 0:
            raise ConfigError("data.refine_examples must be >= 0")
        if not 0.0 <= self.fim_rate <= 1.0:
            raise ConfigError(f"data.fim_rate: {self.fim_rate} is not in [0, 1]")


@dataclass(frozen=True)
class OptimSection:
    """AdamW with per-module learning rates chosen by weight-name prefix."""

    lr: float = 3e-4  # everything not in a named module: embeddings, norms, output head
    planner_lr: float = 3.6e-4  # weights named planner.*  (seed 004)
    generator_lr: float = 2.4e-4  # weights named generator.*  (seed 004)
    refine_lr: float = 3e-4  # weights named refine.*  (seed 004's refinement head)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    grad_accum: int = 1

    def validate(self) -> None:
        if self.grad_accum < 1:
            raise ConfigError("optim.grad_accum must be >= 1")
        for name in ("lr", "planner_lr", "generator_lr", "refine_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"optim.{name} must be > 0")


@dataclass(frozen=True)
class ScheduleSection:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` of the peak over ``steps``."""

    kind: Literal["cosine", "constant"] = "cosine"
    steps: int = 1000  # optimiser steps in the whole run (--steps overrides)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    # Step budget from the data and the machine (the finetune recipe); --steps turns both off.
    # > 0: at most this many passes over the train split.
    max_epochs: float = 0.0
    # > 0: at most the steps that fit in this many minutes, timed on this machine at start.
    max_minutes: float = 0.0

    def validate(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0:
            raise ConfigError("schedule: steps must be >= 1 and warmup_steps >= 0")
        if self.max_epochs < 0 or self.max_minutes < 0:
            raise ConfigError("schedule: max_epochs and max_minutes must be >= 0 (0: no limit)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("schedule.min_lr_ratio must be in [0, 1]")


@dataclass(frozen=True)
class LossSection:
    """``multitask``: weighted plan/code/refinement terms; ``lm``: one CE over all tokens."""

    mode: Literal["multitask", "lm"] = "multitask"
    plan_weight: float = 0.4
    code_weight: float = 0.4
    refine_weight: float = 0.2


@dataclass(frozen=True)
class RunSection:
    """Cadence, precision and switches for one run."""

    seed: int = 0
    backend: Literal["torch", "mlx"] = "torch"
    device: Literal["auto", "cuda", "rocm", "mps", "cpu"] = "auto"
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 8
    checkpoint_every: int = 500  # 0: once per epoch of the training split (seed 000)
    keep_last: int = 3
    bf16: bool = True  # autocast on GPUs only; CPU runs stay fp32
    compile: bool = False  # torch.compile / mx.compile the step
    grad_checkpointing: bool = False
    qat: bool = False  # straight-through fake quantisation of linear weights
    qat_bits: int = 4
    qat_group: int = 32
    # QAT only from this fraction of the run's steps on (0: from the start): fake
    # quantisation costs time and early training gains nothing from it (docs/training.md).
    qat_start: float = 0.0
    threads: int = 0  # torch CPU threads for the run (0: torch's default)
    fused_loss: bool = True  # torch: output head + CE fused and chunked (training/loss.py)
    # HRGC, torch: each optimiser step runs a random cycle count (H uniform in 1..H_cycles, L
    # in 1..L_cycles), so the trained model works at any count up to its config's
    # (recurrent-depth training; docs/model.md). Evaluation runs the config's counts.
    random_cycles: bool = False

    def validate(self) -> None:
        for name in ("log_every", "eval_every", "eval_batches", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"run.{name} must be >= 1")
        if not 0.0 <= self.qat_start < 1.0:
            raise ConfigError(f"run.qat_start must be in [0, 1) (got {self.qat_start})")
        if self.threads < 0:
            raise ConfigError(f"run.threads must be >= 0 (got {self.threads})")
        if self.checkpoint_every < 0:
            raise ConfigError("run.checkpoint_every must be >= 0 (0: once per epoch)")
        if self.random_cycles and self.backend != "torch":
            raise ConfigError("run.random_cycles needs the torch backend")


@dataclass(frozen=True)
class BudgetSection:
    """Memory the run must fit in (0: no check), and the hardware that number is for."""

    memory_gb: float = 0.0
    hardware: str = ""


@dataclass(frozen=True)
class Recipe:
    source: SourceSection
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)
    budget: BudgetSection = field(default_factory=BudgetSection)

    @property
    def tokens_per_step(self) -> int:
        """Target tokens per optimiser step on one process (batch x seq x accumulation)."""
        return self.data.batch_size * self.data.seq_len * self.optim.grad_accum

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def recipe_names() -> list[str]:
    """Names of the recipes shipped in the package."""
    root = resources.files("hrm_lsp.training") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def recipe_mapping(name_or_path: str) -> dict[str, Any]:
    """The raw TOML mapping of a shipped recipe name or a recipe file path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return read_toml(p)
    root = resources.files("hrm_lsp.training") / "recipes"
    res = root / f"{name_or_path}.toml"
    if not res.is_file():
        raise ConfigError(
            f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(recipe_names())} "
            "(or pass a path to a .toml file)"
        )
    return read_toml(Path(str(res)))


def load_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a shipped recipe by name (or a TOML path) and apply ``--set`` overrides."""
    data = apply_overrides(recipe_mapping(name_or_path), list(overrides))
    return recipe_from_dict(data)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build a Recipe from a plain mapping (a recipe TOML, or ``config.json`` of a run)."""
    data = dict(data)
    if "source" not in data:
        raise ConfigError("recipe: missing [source] table (name, description, source, claims)")
    return load_dataclass(Recipe, data)
