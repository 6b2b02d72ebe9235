"""Retraining on one repository: ``hrm-lsp train --init BASE --data REPO`` with no split flags,
the step budget from the data and a timing, Ctrl-C and ``--resume``, the exported model file,
and the server pointed at the run directory.

The base is a tiny run of a few steps (its quality does not matter here); the repository is a
real git repository of one stdlib package built in the test.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from hrm_lsp.cli import main
from hrm_lsp.training.checkpoint import latest_checkpoint
from hrm_lsp.training.metrics import progress_bar, read_metrics
from hrm_lsp.training.recipe import load_recipe
from hrm_lsp.training.run import TrainOptions, step_budget, train

from .test_training_init import git

# Small shapes for speed; the recipe is the real finetune one otherwise.
FAST = ("--device", "cpu", "--set", "data.seq_len=64", "--set", "data.batch_size=4",
        "--set", "run.eval_batches=2", "--set", "data.refine_examples=0")


@pytest.fixture(scope="module")
def base(byte_data: Path, tmp_path_factory) -> Path:
    """A tiny run to fine-tune from (4 steps)."""
    out = tmp_path_factory.mktemp("ft-base") / "base"
    train(TrainOptions(recipe="tiny", data=(byte_data,), out=out, backend="torch", device="cpu",
                       steps=4, overrides=("run.eval_every=100", "run.eval_batches=1"), quiet=True))
    return out


@pytest.fixture(scope="module")
def one_package_repo(stdlib_src: Path, tmp_path_factory) -> Path:
    """A git repository holding one package (strings), in two commits."""
    import shutil

    repo = tmp_path_factory.mktemp("ft-repo") / "strs"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    names = ("builder", "compare", "reader", "replace", "search", "strings")
    for part in (names[:3], names[3:]):
        for n in part:
            shutil.copy(stdlib_src / "strings" / f"{n}.go", repo / f"{n}.go")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"Add {', '.join(part)}")
    return repo


def test_step_budget_is_the_least_of_recipe_epochs_and_minutes():
    r = load_recipe("finetune")  # 1000 steps, 1 epoch, 10 minutes; 8 x 512 tokens a step
    assert (r.schedule.max_epochs, r.schedule.max_minutes) == (1.0, 10.0)
    per_eval = 1 + r.run.eval_batches / (3 * r.run.eval_every)
    big_slow = step_budget(r, 50_000_000, seconds_per_step=4.0)  # time decides
    assert big_slow.steps == int(600 / (4.0 * per_eval)) and big_slow.epoch_cap > big_slow.steps
    small_fast = step_budget(r, 100 * 4096, seconds_per_step=0.1)  # 1 epoch of 100 steps
    assert small_fast.steps == 100 and small_fast.epoch_steps == 100
    huge_fast = step_budget(r, 50_000_000, seconds_per_step=0.01)  # the recipe's cap
    assert huge_fast.steps == 1000
    tiny = step_budget(r, 10, seconds_per_step=100.0)  # never fewer than a few steps
    assert tiny.steps == 10
    line = small_fast.summary(r, 100 * 4096)
    assert "step budget: 100 steps" in line and "1 epoch of 409,600 train tokens = 100" in line
    assert "ETA" in line and "tokens/s" in line
    assert progress_bar(3, 10, width=10) == "[###-------]  30%" and progress_bar(9, 4).startswith("[####")


def test_one_package_repo_finetunes_without_flags_and_the_server_takes_the_run(
        base: Path, one_package_repo: Path, tmp_path: Path):
    from hrm_lsp.server.model_host import ModelHost, resolve_model_path

    ft = tmp_path / "ft"
    # No --steps and no split flag: the budget is timed here (0.1 min, at most 2 epochs).
    res = CliRunner().invoke(main, ["train", "--init", str(base), "--data", str(one_package_repo),
                                    "--out", str(ft), *FAST, "--set", "schedule.max_minutes=0.1",
                                    "--set", "schedule.max_epochs=2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = res.output
    held = next(ln for ln in out.splitlines() if ln.startswith("held out by file"))
    manifest = json.loads((ft / "data" / "manifest.json").read_text())
    assert manifest["holdout"]["by"] == "file" and manifest["holdout"]["test"][0] in held
    budget = next(ln for ln in out.splitlines() if ln.startswith("step budget: "))
    steps = int(budget.split()[2])
    config = json.loads((ft / "config.json").read_text())
    assert config["step_budget"] == budget and config["recipe"]["schedule"]["steps"] == steps
    assert latest_checkpoint(ft).step == steps
    assert "0.1 min at" in budget and "ETA" in budget
    assert any(ln.startswith("[") and f"step {steps}/{steps}" in ln and "tok/s" in ln and "loss" in ln
               for ln in out.splitlines())  # the progress bar's last line
    assert "held-out test split of your code:" in out

    # The server takes the run directory: its model.gguf, else its latest checkpoint.
    assert resolve_model_path(str(ft)) == ft / "model.gguf"
    assert resolve_model_path(str(base)) == base
    for path in (resolve_model_path(str(ft)), resolve_model_path(str(base))):
        engine, status = ModelHost().load(path, "cpu")
        assert status.state == "ready" and engine is not None, status.message
    engine, status = ModelHost().load(resolve_model_path(str(tmp_path / "nothing")), "cpu")
    assert status.state == "failed" and "training run directory" in status.message


def test_ctrl_c_stops_a_finetune_and_resume_finishes_and_exports(
        base: Path, one_package_repo: Path, tmp_path: Path, monkeypatch):
    from hrm_lsp.training.torch_backend import TorchTrainer

    real_step, calls = TorchTrainer.train_step, []

    def step_then_sigint(self, micro, lr_scale):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 3
        return real_step(self, micro, lr_scale)

    monkeypatch.setattr(TorchTrainer, "train_step", step_then_sigint)
    ft = tmp_path / "ft"
    res = CliRunner().invoke(main, ["train", "--init", str(base), "--data", str(one_package_repo),
                                    "--out", str(ft), "--steps", "8", *FAST])
    monkeypatch.setattr(TorchTrainer, "train_step", real_step)
    assert res.exit_code == 130, res.output + repr(res.exception)
    assert f"continue with: hrm-lsp train --resume --out {ft}" in res.output
    assert latest_checkpoint(ft).step == 3 and not (ft / "model.gguf").exists()
    before = next(m for m in read_metrics(ft / "metrics.jsonl") if "heldout_before_val_bpb" in m)

    # --resume alone: the run's data, model and recipe; then the export and the before/after.
    res = CliRunner().invoke(main, ["train", "--resume", "--out", str(ft), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "continuing the fine-tune" in res.output
    assert latest_checkpoint(ft).step == 8 and (ft / "model.gguf").is_file()
    line = next(ln for ln in res.output.splitlines() if ln.startswith("held-out test split"))
    assert line.split(": ")[1].startswith(f"{before['heldout_before_val_bpb']:.3f} -> ")
    from hrm_lsp.export.gguf import load_model

    _model, tok, _meta = load_model(ft / "model.gguf")
    assert tok.sha256 == json.loads((base / "config.json").read_text())["tokenizer_sha256"]


def test_train_takes_prepare_data_options(base: Path, one_package_repo: Path, tmp_path: Path):
    """--split-by, --history/--no-history and --since reach the preparation, by those names."""
    res = CliRunner().invoke(main, ["train", "--init", str(base), "--data", str(one_package_repo),
                                    "--out", str(tmp_path / "ft"), "--steps", "2", *FAST,
                                    "--split-by", "package", "--no-history", "--since", "2001-01-01"])
    # One package kept whole: nothing to hold out, and the error says where to look.
    assert res.exit_code == 1 and "empty" in res.output
    opts = json.loads((tmp_path / "ft" / "data" / "work" / "options.json").read_text())
    assert (opts["split_by"], opts["history"], opts["since"]) == ("package", False, "2001-01-01")
    res = CliRunner().invoke(main, ["train", "--init", str(base), "--data", str(one_package_repo),
                                    "--out", str(tmp_path / "ft2"), "--steps", "2", *FAST,
                                    "--set", "data.split_by=repo"])
    assert json.loads((tmp_path / "ft2" / "data" / "work" / "options.json").read_text())["split_by"] == "repo"
