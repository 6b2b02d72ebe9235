"""``hrm-lsp train --init MODEL_OR_RUN --data MY_REPOS...``: retrain on your own code.

Named steps:

1. load the model to start from (a run directory, checkpoint or ``.gguf`` file; or the shipped
   default model with ``--from-default``) with its config and tokenizer;
2. prepare the user's code with *that* tokenizer (git history included for repositories;
   one repository is held out by package, or by file when it has one package);
3. pick the step budget from the train split's size and a timing of this machine (the
   recipe's ``max_epochs``/``max_minutes``), score the held-out ``test`` split of the user's
   code, fine-tune, score it again (``run.train`` with ``InitFrom``); Ctrl-C stops at the end of
   a step with a checkpoint, and ``--resume`` continues;
4. export one model file (``RUN_DIR/model.gguf``) with the export package;
5. say how to point the server and the editors at it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hrm_lsp.config import apply_overrides
from hrm_lsp.paths import default_model_path
from hrm_lsp.training.checkpoint import latest_checkpoint
from hrm_lsp.training.recipe import recipe_from_dict, recipe_mapping
from hrm_lsp.training.run import CONFIG_FILE, InitFrom, RunError, TrainOptions, TrainResult, train

DEFAULT_RECIPE = "finetune"
MODEL_FILE = "model.gguf"  # what a fine-tune exports into its run directory


@dataclass(frozen=True)
class FinetuneResult:
    train: TrainResult
    model_file: Path

    def lines(self) -> list[str]:
        """What happened and what to do next, for the console."""
        t = self.train
        out = [f"fine-tuned {t.num_params:,} parameters for {t.step} steps -> {t.run_dir}"]
        if t.heldout_before and t.heldout_after:
            b, a = t.heldout_before, t.heldout_after
            out.append(f"held-out {t.heldout_split} split of your code: {b['val_bpb']:.3f} -> "
                       f"{a['val_bpb']:.3f} bits/byte (loss {b['val_loss']:.4f} -> {a['val_loss']:.4f})")
        out += [
            f"model file: {self.model_file}",
            "use it:",
            f"  hrm-lsp serve --model {self.model_file}",
            f'  VS Code: "hrmLsp.modelPath": "{self.model_file}"',
            f"  Neovim:  require('hrm_lsp').setup({{ modelPath = '{self.model_file}' }})",
        ]
        return out


def load_init(source: Path, workdir: Path) -> InitFrom:
    """Weights, config and tokenizer of a run, checkpoint or model file (RunError if unusable)."""
    from hrm_lsp.export.errors import ModelFileError
    from hrm_lsp.export.gguf import load_model
    from hrm_lsp.model.weights import state_dict_for_export
    from hrm_lsp.tokenizer import tokenizer_filename

    try:
        model, tok, _meta = load_model(source)
    except ModelFileError as e:
        raise RunError(f"--init {source}: {e}") from None
    workdir.mkdir(parents=True, exist_ok=True)
    tok_file = workdir / tokenizer_filename(tok.kind)
    tok_file.write_bytes(tok.to_bytes())
    weights = {k: np.ascontiguousarray(v.detach().float().cpu().numpy())
               for k, v in state_dict_for_export(model).items()}
    return InitFrom(source=str(source), model_config=model.cfg, weights=weights,
                    tokenizer_file=tok_file, tokenizer_kind=tok.kind, tokenizer_sha256=tok.sha256)


def is_finetune_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run started from other weights (``--init``/``--from-default``)."""
    config = Path(run_dir) / CONFIG_FILE
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("init"))
    except (OSError, ValueError):
        return False


def finetune(opts: TrainOptions, init: Path | None, echo: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune ``init`` (None: the shipped default model) on ``opts.data``; export; report.

    With ``opts.resume``, a fine-tune stopped in ``opts.out`` (Ctrl-C) continues from its last
    checkpoint; one that never reached a checkpoint starts again (its prepared data is kept).
    """
    opts = replace(opts, out=Path(opts.out))
    if opts.resume and latest_checkpoint(opts.out) is not None:
        if not is_finetune_run(opts.out):
            raise RunError(f"--resume: {opts.out} is not a fine-tuning run; resume it without "
                           "--init/--from-default")
        echo(f"continuing the fine-tune in {opts.out}")
        return _train_and_export(opts, None)
    if opts.resume and init is None and is_finetune_run(opts.out):  # stopped before a checkpoint
        init = Path(json.loads((opts.out / CONFIG_FILE).read_text(encoding="utf-8"))["init"])
    opts = replace(opts, resume=False)
    source = Path(init) if init is not None else default_model_path()
    if init is None and not source.is_file():
        raise RunError(f"--from-default: the shipped model is not in this installation ({source}); "
                       "pass --init RUN_DIR_OR_MODEL_FILE instead")
    if not Path(source).exists():
        raise RunError(f"--init {source}: no such run directory, checkpoint or model file")
    if not opts.data:
        raise RunError("--init needs --data: your source directories or git repositories")
    start = load_init(source, opts.out / "init")

    # The recipe's data must be encoded with the model's tokenizer and fit its context.
    cfg = start.model_config
    mapping = apply_overrides(recipe_mapping(opts.recipe), list(opts.overrides))
    data = mapping.setdefault("data", {})
    data["tokenizer"] = start.tokenizer_kind
    data["seq_len"] = min(int(data.get("seq_len", 512)), cfg.max_seq_len)
    recipe_file = opts.out / "init" / "recipe.toml"
    _write_toml(recipe_from_dict(mapping), recipe_file)
    echo(f"fine-tuning {source} ({cfg.arch}, d_model {cfg.d_model}) on "
         f"{', '.join(map(str, opts.data))}")
    return _train_and_export(replace(opts, recipe=str(recipe_file), overrides=()), start)


def _train_and_export(opts: TrainOptions, start: InitFrom | None) -> FinetuneResult:
    """Train (or resume) the fine-tune, then export ``RUN_DIR/model.gguf``."""
    from hrm_lsp.export.errors import ModelFileError
    from hrm_lsp.export.gguf import export_gguf

    result = train(opts, init=start)
    model_file = opts.out / MODEL_FILE
    try:
        export_gguf(opts.out, model_file)
    except ModelFileError as e:
        raise RunError(f"exporting {opts.out}: {e}") from None
    return FinetuneResult(result, model_file)


def _write_toml(recipe, path: Path) -> None:
    """The effective recipe as TOML (kept in the run for the record; re-read by ``train``)."""
    from hrm_lsp.config import to_dict

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines = []
    for section, table in to_dict(recipe).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
