"""``hrm-lsp train --init MODEL_OR_RUN --data MY_REPOS...``: retrain on your own code.

Named steps:

1. load the model to start from (a run directory, checkpoint or ``.gguf`` file; or the shipped
   default model with ``--from-default``) with its config and tokenizer;
2. prepare the user's code with *that* tokenizer (git history included for repositories);
3. score the held-out ``test`` split of the user's code, fine-tune, score it again
   (``run.train`` with ``InitFrom``);
4. export one model file (``RUN_DIR/model.gguf``) with the export package;
5. say how to point the server and the editors at it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hrm_lsp.config import apply_overrides
from hrm_lsp.paths import default_model_path
from hrm_lsp.training.recipe import recipe_from_dict, recipe_mapping
from hrm_lsp.training.run import InitFrom, RunError, TrainOptions, TrainResult, train

DEFAULT_RECIPE = "finetune"


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


def finetune(opts: TrainOptions, init: Path | None, echo: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune ``init`` (None: the shipped default model) on ``opts.data``; export; report."""
    source = Path(init) if init is not None else default_model_path()
    if init is None and not source.is_file():
        raise RunError(f"--from-default: the shipped model is not in this installation ({source}); "
                       "pass --init RUN_DIR_OR_MODEL_FILE instead")
    if not Path(source).exists():
        raise RunError(f"--init {source}: no such run directory, checkpoint or model file")
    if not opts.data:
        raise RunError("--init needs --data: your source directories or git repositories")
    if opts.resume:
        raise RunError("--init starts a new run; to continue a fine-tuning run use --resume without --init")
    opts = replace(opts, out=Path(opts.out))
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
    result = train(replace(opts, recipe=str(recipe_file), overrides=()), init=start)

    from hrm_lsp.export.errors import ModelFileError
    from hrm_lsp.export.gguf import export_gguf

    model_file = opts.out / "model.gguf"
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
