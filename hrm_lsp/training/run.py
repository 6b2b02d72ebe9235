"""``hrm-lsp train``: from a recipe and data to a run directory, in named steps.

1. recipe (shipped name or TOML, ``--set`` overrides; on ``--resume`` the run's own recipe);
2. data: prepared directory, or sources prepared into ``RUN_DIR/data``; tokenizer kind checked;
3. model config from the preset and the tokenizer; memory estimate checked against the budget
   (refused before anything is written); with ``schedule.max_epochs``/``max_minutes`` the step
   count is chosen from the train split's size and a timing of real steps on this machine;
4. run directory: ``config.json``, tokenizer copy; refuse to overwrite a run without --resume;
5. backend (torch or MLX) and its state (fresh, resumed, or initialised from other weights);
6. the loop (``loop.fit``), then the run card.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm_lsp.config import ConfigError, apply_overrides, to_dict
from hrm_lsp.log import get_logger
from hrm_lsp.training import budget
from hrm_lsp.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    read_state,
)
from hrm_lsp.training.data import DataError, TrainData, is_prepared, open_dataset, resolve_data
from hrm_lsp.training.distributed import Dist, from_env
from hrm_lsp.training.loop import RunContext, RunState, evaluate, fit
from hrm_lsp.training.metrics import MetricsLog, Progress, peak_flops
from hrm_lsp.training.recipe import Recipe, recipe_from_dict, recipe_mapping
from hrm_lsp.training.runcard import hardware_summary, write_run_card

log = get_logger(__name__)

CONFIG_FILE = "config.json"


class RunError(ValueError):
    """The run cannot start as asked (run directory state, options); says what to do."""


@dataclass(frozen=True)
class TrainOptions:
    """What ``hrm-lsp train`` was asked to do."""

    recipe: str = "tiny"
    data: tuple[Path, ...] = ()
    out: Path = Path("runs/tiny")
    backend: str | None = None  # None: the recipe's
    device: str | None = None  # None: the recipe's
    steps: int | None = None  # total optimiser steps of the run (None: the recipe's)
    overrides: tuple[str, ...] = ()
    resume: bool = False
    quiet: bool = False
    # Data options for sources prepared by the run (prepare's --split-by, --history, --since);
    # None: the recipe's.
    split_by: str | None = None
    history: bool | None = None
    since: str | None = None
    command: str = field(default_factory=lambda: shlex.join(["hrm-lsp", *sys.argv[1:]]))


@dataclass(frozen=True)
class InitFrom:
    """Weights a run starts from instead of a fresh model (``train --init``)."""

    source: str  # what the user named (run, checkpoint or model file)
    model_config: Any  # ModelConfig of those weights; the recipe's [model] is not used
    weights: dict[str, Any]  # contract name -> float32 numpy array
    tokenizer_file: Path  # the model's tokenizer: the user's code is encoded with it
    tokenizer_kind: str
    tokenizer_sha256: str
    heldout_split: str = "test"  # scored before and after fine-tuning


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    tokens: int
    elapsed_s: float
    final_eval: dict[str, float]
    checkpoint: Path | None
    num_params: int
    heldout_before: dict[str, float] = field(default_factory=dict)
    heldout_after: dict[str, float] = field(default_factory=dict)
    heldout_split: str = ""


# --- step 1: recipe -------------------------------------------------------------------------


def recipe_for(opts: TrainOptions) -> Recipe:
    """The recipe with overrides, --backend/--device/--steps applied (a resume: the run's)."""
    if opts.resume and (opts.out / CONFIG_FILE).is_file():
        saved = json.loads((opts.out / CONFIG_FILE).read_text(encoding="utf-8"))["recipe"]
        data = apply_overrides(saved, list(opts.overrides))
    else:
        data = apply_overrides(recipe_mapping(opts.recipe), list(opts.overrides))
    if opts.backend:
        data.setdefault("run", {})["backend"] = opts.backend
    if opts.device:
        data.setdefault("run", {})["device"] = opts.device
    if opts.steps is not None:  # the user's count: no budget from data size and timing
        data.setdefault("schedule", {}).update(steps=opts.steps, max_epochs=0.0, max_minutes=0.0)
    for key in ("split_by", "history", "since"):
        if getattr(opts, key) is not None:
            data.setdefault("data", {})[key] = getattr(opts, key)
    return recipe_from_dict(data)


# --- step 3: model config ---------------------------------------------------------------------


def model_config_for(recipe: Recipe, vocab_size: int):
    """ModelConfig from the recipe's preset, the tokenizer's vocabulary and the run switches."""
    from hrm_lsp.model import preset

    over: dict[str, Any] = dict(recipe.model.overrides)
    over["arch"] = recipe.model.arch
    if recipe.run.qat:
        over["qat_bits"] = recipe.run.qat_bits
        over["qat_group"] = recipe.run.qat_group
    if recipe.run.grad_checkpointing:
        over["grad_checkpointing"] = True
    cfg = preset(recipe.model.preset, vocab_size=vocab_size, **over)
    if recipe.data.seq_len > cfg.max_seq_len:
        raise ConfigError(
            f"data.seq_len {recipe.data.seq_len} exceeds the model's context {cfg.max_seq_len}; "
            f"lower it or --set model.overrides.max_seq_len={recipe.data.seq_len}"
        )
    if cfg.byte_features and recipe.data.tokenizer != "byte":
        raise ConfigError(f"model preset {recipe.model.preset!r} needs the byte tokenizer's features")
    return cfg


def recipe_vocab_size(recipe: Recipe) -> int:
    """Vocabulary the recipe's tokenizer will have (for --dry-run, without data)."""
    if recipe.data.tokenizer == "byte":
        from hrm_lsp.tokenizer.byte import ByteTokenizer

        return ByteTokenizer().vocab_size
    if recipe.data.vocab_size:
        return recipe.data.vocab_size
    from hrm_lsp.model import preset

    return preset(recipe.model.preset).vocab_size


@dataclass(frozen=True)
class StepBudget:
    """How many steps a run gets from its recipe's caps, its data and this machine's speed."""

    steps: int
    recipe_steps: int
    epoch_steps: int  # steps in one pass over the train split
    epoch_cap: int | None  # schedule.max_epochs as steps
    time_cap: int | None  # schedule.max_minutes as steps at the timed speed
    seconds_per_step: float
    eta_s: float  # training + evaluations

    def summary(self, recipe: Recipe, train_tokens: int) -> str:
        """One line: the chosen steps, every cap, the measured speed and the ETA."""
        from hrm_lsp.training.metrics import format_duration

        sc = recipe.schedule
        caps = [f"recipe {self.recipe_steps}"]
        if self.epoch_cap is not None:
            caps.append(f"{sc.max_epochs:g} epoch{'' if sc.max_epochs == 1 else 's'} of "
                        f"{train_tokens:,} train tokens = {self.epoch_cap}")
        if self.time_cap is not None:
            caps.append(f"{sc.max_minutes:g} min at {self.seconds_per_step:.2f} s/step = {self.time_cap}")
        return (f"step budget: {self.steps} steps of {recipe.tokens_per_step:,} tokens "
                f"(the least of: {'; '.join(caps)}), timed on this machine at "
                f"{recipe.tokens_per_step / self.seconds_per_step:,.0f} tokens/s; "
                f"ETA {format_duration(self.eta_s)}")


MIN_BUDGET_STEPS = 10


def time_steps(recipe: Recipe, cfg, ds, dist: Dist, init: InitFrom | None, n: int = 3) -> float:
    """Seconds per optimiser step of this recipe and model here: one warm-up step, then the
    median of ``n`` timed ones (one stall of a busy machine does not decide), on real batches,
    with a trainer that is thrown away after."""
    import time

    trainer, _ = make_trainer(recipe, cfg, dist)
    if init is not None:
        _load_init_weights(trainer, init)
    batches = TrainData(ds, recipe, cfg.byte_features).train_batches()
    times = []
    for _ in range(n + 1):
        micro = [next(batches)[:2] for _ in range(recipe.optim.grad_accum)]
        t0 = time.perf_counter()
        m = trainer.train_step(micro, 0.0)  # lr 0: nothing is learnt from these steps
        float(m["loss"])
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[n // 2]


def step_budget(recipe: Recipe, train_tokens: int, seconds_per_step: float) -> StepBudget:
    """Steps = min(schedule.steps, max_epochs passes over the data, what max_minutes allows at
    the timed speed, evaluations included), at least MIN_BUDGET_STEPS."""
    sc, run = recipe.schedule, recipe.run
    epoch = max(1, -(-train_tokens // recipe.tokens_per_step))
    epoch_cap = max(1, int(sc.max_epochs * epoch)) if sc.max_epochs > 0 else None
    # An evaluation runs eval_batches forward passes: about a third of a step each.
    per_step = seconds_per_step * (1 + run.eval_batches / (3 * run.eval_every))
    time_cap = int(sc.max_minutes * 60 / per_step) if sc.max_minutes > 0 else None
    steps = max(MIN_BUDGET_STEPS, min(x for x in (sc.steps, epoch_cap, time_cap) if x is not None))
    return StepBudget(steps, sc.steps, epoch, epoch_cap, time_cap, seconds_per_step, steps * per_step)


def with_steps(recipe: Recipe, steps: int) -> Recipe:
    """The recipe with ``steps`` (warm-up kept under a tenth of them) and no budget caps left,
    so that a resumed run keeps exactly this schedule."""
    data = to_dict(recipe)
    sc = data["schedule"]
    sc.update(steps=steps, warmup_steps=min(sc["warmup_steps"], steps // 10), max_epochs=0.0,
              max_minutes=0.0)
    return recipe_from_dict(data)


# --- step 4: run directory --------------------------------------------------------------------


def _sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


def prepare_run_dir(opts: TrainOptions, recipe: Recipe, cfg_dict: dict, ds, data_dir: Path,
                    dist: Dist, init_source: str | None = None, step_budget: str = "") -> Checkpoint | None:
    """Create or check the run directory; return the checkpoint to resume from, if any."""
    out = opts.out
    existing = list_checkpoints(out)
    if opts.resume:
        ck = latest_checkpoint(out)
        if ck is None:
            raise RunError(f"--resume: {out} has no complete checkpoint to resume from")
        saved = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
        if saved.get("model_config") != cfg_dict:
            raise RunError(f"--resume: the model config of {out} differs from this one; "
                           "resume with the run's own recipe (drop --recipe/--set changes to [model])")
        if saved.get("tokenizer_sha256") != ds.tokenizer.sha256:
            raise RunError(f"--resume: {data_dir} has a different tokenizer from the one {out} "
                           "was trained with")
        return ck
    if existing:
        raise RunError(f"{out} already holds checkpoints (last: step {existing[-1].step}); "
                       "pass --resume to continue it or choose another --out")
    if dist.is_main:
        from hrm_lsp.tokenizer import tokenizer_filename

        out.mkdir(parents=True, exist_ok=True)
        (out / tokenizer_filename(ds.tokenizer.kind)).write_bytes(ds.tokenizer.to_bytes())
        config = {
            "recipe": to_dict(recipe),
            "model_config": cfg_dict,
            "tokenizer": ds.tokenizer.kind,
            "tokenizer_sha256": ds.tokenizer.sha256,
            "data": str(Path(data_dir).resolve()),
            "manifest_sha256": _sha256_file(Path(data_dir) / "manifest.json"),
            "init": init_source,
            "command": opts.command,
            "step_budget": step_budget,
        }
        tmp = out / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(config, indent=1), encoding="utf-8")
        tmp.replace(out / CONFIG_FILE)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    return None


def dry_run(opts: TrainOptions):
    """The budget report for ``opts``' recipe without data (vocabulary from the recipe)."""
    recipe = recipe_for(opts)
    cfg = model_config_for(recipe, recipe_vocab_size(recipe))
    return budget.estimate(recipe, cfg)


# --- step 5: backend ---------------------------------------------------------------------------


def make_trainer(recipe: Recipe, cfg, dist: Dist):
    """(trainer, device description) for the recipe's backend and device."""
    if recipe.run.backend == "mlx":
        from hrm_lsp.training.mlx_backend import MLXTrainer

        if dist.active:
            raise RunError("the MLX backend runs on one process; use torchrun only with --backend torch")
        trainer = MLXTrainer.create(recipe, cfg)
        return trainer, trainer.device_description
    import torch

    from hrm_lsp.device import resolve_device
    from hrm_lsp.model import build_model
    from hrm_lsp.training.torch_backend import TorchTrainer, seed_everything

    info = resolve_device(recipe.run.device)
    device = info.torch_device
    if dist.active and device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"
    # Same initial weights on every rank (DDP also broadcasts them); dropout differs per rank.
    seed_everything(recipe.run.seed)
    model = build_model(cfg)
    torch.manual_seed(recipe.run.seed + dist.rank)
    trainer = TorchTrainer.create(recipe, model, device, ddp=dist.active)
    return trainer, info.description


def restore(trainer, ck: Checkpoint, dist: Dist, metrics: MetricsLog) -> RunState:
    """Load a checkpoint into the trainer; return the counters to continue from."""
    state = read_state(ck)
    if state.get("backend") != trainer.backend:
        raise RunError(f"{ck.path} was written by the {state.get('backend')} backend; "
                       f"resume it with --backend {state.get('backend')}")
    world = int(state.get("world_size", 1))
    if world != dist.world_size:
        raise RunError(f"{ck.path} was trained with {world} process(es); resume with the same "
                       f"number (this job has {dist.world_size}) so every data shard continues exactly")
    trainer.load(ck, {**state, "rng": state.get("rngs", [state.get("rng", {})])[dist.rank]})
    metrics.truncate_after(ck.step)
    return RunState(step=ck.step, tokens=int(state.get("tokens", 0)),
                    data_position=int(state["data_positions"][dist.rank]),
                    elapsed_s=float(state.get("elapsed_s", 0.0)),
                    last_eval=dict(state.get("last_eval", {})))


def restore_newest_loadable(trainer, run_dir: Path, first: Checkpoint, dist: Dist,
                            metrics: MetricsLog, progress: Progress) -> RunState:
    """Restore ``first`` (the latest); if it is damaged, the newest older one that loads.

    A damaged checkpoint (disk full, a copy cut short) costs the steps since the one before
    it, not the run. With none loadable, the latest checkpoint's error is raised.
    """
    older = [c for c in reversed(list_checkpoints(run_dir)) if c.step < first.step]
    error: CheckpointError | None = None
    for ck in [first, *older]:
        try:
            return restore(trainer, ck, dist, metrics)
        except CheckpointError as e:
            error = error or e
            progress.message(f"warning: cannot resume from {ck.path}: {e}")
    assert error is not None
    raise error


# --- the whole run -----------------------------------------------------------------------------


def _load_init_weights(trainer, init: InitFrom) -> None:
    if trainer.backend == "torch":
        import torch

        trainer.load_weights({k: torch.from_numpy(v) for k, v in init.weights.items()})
    else:
        trainer.load_weights(init.weights)


def checkpoint_interval(recipe: Recipe, ds, world_size: int) -> int:
    """Steps between checkpoints; ``run.checkpoint_every = 0`` means one epoch of the train split."""
    if recipe.run.checkpoint_every:
        return recipe.run.checkpoint_every
    per_step = recipe.tokens_per_step * world_size
    return max(1, -(-ds.num_tokens("train") // per_step))


def _saved_model_config(opts: TrainOptions):
    from hrm_lsp.model import ModelConfig

    touched = [o for o in opts.overrides if o.split("=", 1)[0].strip().startswith("model.")
               or o.split("=", 1)[0].strip() in ("run.qat", "run.qat_bits", "run.qat_group")]
    if touched:
        raise RunError(f"--resume keeps the run's model; {', '.join(touched)} would change it "
                       "(start a new run, or fine-tune from this one with --init)")
    saved = json.loads((opts.out / CONFIG_FILE).read_text(encoding="utf-8"))
    return ModelConfig.from_dict(saved["model_config"])


def _saved_config(run_dir: Path) -> dict:
    """A run's config.json ({} when there is none)."""
    path = Path(run_dir) / CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _saved_heldout_before(run_dir: Path) -> tuple[dict[str, float], str]:
    """The held-out score a fine-tune recorded before its first step ({} if it has none)."""
    from hrm_lsp.training.metrics import read_metrics

    for rec in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if "heldout_before_val_bpb" in rec:
            pre = "heldout_before_"
            return {k[len(pre):]: v for k, v in rec.items() if k.startswith(pre)}, rec["heldout_split"]
    return {}, ""


def _heldout(trainer, ds, recipe: Recipe, cfg, split: str) -> tuple[dict[str, float], str]:
    """Score on the held-out split (falls back to val when the user's code left it empty)."""
    for name in (split, "val"):
        if ds.num_tokens(name) > 0:
            return evaluate(trainer, TrainData(ds, recipe, cfg.byte_features, eval_split=name)), name
    return {}, ""


def train(opts: TrainOptions, dist: Dist | None = None, init: InitFrom | None = None) -> TrainResult:
    """Run ``hrm-lsp train`` as the options say; raise the family's errors for bad inputs.

    With ``init``, the run starts from those weights and that model config (fine-tuning) and
    also scores a held-out split before and after training.
    """
    dist = dist or from_env()
    opts = TrainOptions(**{**opts.__dict__, "out": Path(opts.out)})
    saved = _saved_config(opts.out) if opts.resume else {}
    if opts.resume and not opts.data and saved.get("data"):
        opts = TrainOptions(**{**opts.__dict__, "data": (Path(saved["data"]),)})  # the run's own
    recipe = recipe_for(opts)
    progress = Progress(recipe.schedule.steps, enabled=dist.is_main and not opts.quiet)

    # 2. data (rank 0 prepares sources; the others wait and then open the same directory)
    data_dir = Path(opts.data[0]) if len(opts.data) == 1 and is_prepared(Path(opts.data[0])) else opts.out / "data"
    if dist.is_main:
        data_dir = resolve_data(list(opts.data), recipe, opts.out / "data",
                                tokenizer_from=init.tokenizer_file if init else None,
                                echo=progress.message)
    dist.barrier()
    ds = open_dataset(data_dir, recipe)
    if init is not None and ds.tokenizer.sha256 != init.tokenizer_sha256:
        raise DataError(f"--data {data_dir} was prepared with another tokenizer than the model's "
                        f"({init.source}); pass the source directories instead so they are "
                        "prepared with the model's tokenizer")

    # 3. model config and budget (a resumed run keeps the config it was started with, which
    # for a fine-tuning run came from --init, not from the recipe's preset)
    if init is not None:
        cfg = init.model_config
    elif opts.resume and (opts.out / CONFIG_FILE).is_file():
        cfg = _saved_model_config(opts)
    else:
        cfg = model_config_for(recipe, ds.tokenizer.vocab_size)
    # The model learns the layout of the batches it is trained on (Dataset.batches).
    from hrm_lsp.tokenizer.layout import FIM_LAYOUT

    cfg = cfg.replace(fim_layout=FIM_LAYOUT)
    report = budget.check(recipe, cfg)
    progress.message(report.summary())
    steps_note = ""
    # (Under torchrun the ranks would time different speeds: there the recipe's steps hold.)
    if (recipe.schedule.max_epochs or recipe.schedule.max_minutes) and not opts.resume \
            and not dist.active and not list_checkpoints(opts.out):
        sb = step_budget(recipe, ds.num_tokens("train"), time_steps(recipe, cfg, ds, dist, init))
        steps_note = sb.summary(recipe, ds.num_tokens("train"))
        progress.message(steps_note)
        recipe = with_steps(recipe, sb.steps)
        progress.total = sb.steps

    # 4. run directory
    ck = prepare_run_dir(opts, recipe, cfg.to_dict(), ds, data_dir, dist,
                         init.source if init else None, steps_note)
    dist.barrier()
    tuning = init is not None or bool(saved.get("init"))

    # 5. backend and state
    trainer, device_desc = make_trainer(recipe, cfg, dist)
    metrics = MetricsLog(opts.out / "metrics.jsonl", enabled=dist.is_main)
    st = RunState()
    if ck is not None:
        st = restore_newest_loadable(trainer, opts.out, ck, dist, metrics, progress)
        progress.message(f"resuming {opts.out} from step {st.step}")
    elif init is not None:
        _load_init_weights(trainer, init)
    data = TrainData(ds, recipe, cfg.byte_features, dist.rank, dist.world_size)
    before, heldout = {}, ""
    if tuning and dist.is_main:
        if st.step == 0:
            before, heldout = _heldout(trainer, ds, recipe, cfg, init.heldout_split if init else "test")
            if before:
                metrics.write({"step": 0, "heldout_split": heldout,
                               **{f"heldout_before_{k}": v for k, v in before.items()}})
        else:  # a resumed fine-tune: the score before it began is in its metrics
            before, heldout = _saved_heldout_before(opts.out)

    # 6. the loop
    peak = peak_flops(device_desc, bf16=recipe.run.bf16) if "cpu" not in device_desc.lower() else None
    ctx = RunContext(
        run_dir=opts.out, recipe=recipe, model_config=cfg.to_dict(), total_steps=recipe.schedule.steps,
        dist=dist, metrics=metrics, progress=progress, flops_per_token=report.flops_per_token,
        peak_flops=peak, checkpoint_every=checkpoint_interval(recipe, ds, dist.world_size),
    )
    progress.message(f"training {report.num_params:,} parameters on {device_desc} "
                     f"({dist.world_size} process{'es' if dist.world_size > 1 else ''}) -> {opts.out}")
    if st.step >= ctx.total_steps:
        progress.message(f"{opts.out} is already at step {st.step} of {ctx.total_steps}; nothing to do "
                         "(pass a larger --steps to train further)")
    else:
        st = fit(trainer, data, ctx, st)
    after = {}
    if dist.is_main:
        if not st.last_eval:
            st.last_eval = evaluate(trainer, data)
        if before:
            after = evaluate(trainer, TrainData(ds, recipe, cfg.byte_features, eval_split=heldout))
            metrics.write({"step": st.step, "heldout_split": heldout,
                           **{f"heldout_after_{k}": v for k, v in after.items()}})
        config = json.loads((opts.out / CONFIG_FILE).read_text(encoding="utf-8"))
        write_run_card(
            opts.out, recipe, model_config=cfg.to_dict(), num_params=report.num_params,
            data_path=str(data_dir), manifest_sha256=config.get("manifest_sha256", ""),
            tokenizer=f"{ds.tokenizer.kind}, {ds.tokenizer.vocab_size} ids, sha256 {ds.tokenizer.sha256[:16]}",
            steps=st.step, tokens=st.tokens, elapsed_s=st.elapsed_s,
            hardware=hardware_summary(trainer.backend, device_desc), world_size=dist.world_size,
            final_eval=st.last_eval, command=opts.command,
            init_from=config.get("init"), before_eval=before or None, after_eval=after or None,
            heldout_split=heldout,
        )
    dist.barrier()
    last = latest_checkpoint(opts.out)
    return TrainResult(opts.out, st.step, st.tokens, st.elapsed_s, st.last_eval,
                       last.path if last else None, report.num_params, before, after, heldout)

