"""``hrm-lsp train --init``: fine-tune a tiny run on a small git repository made here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hrm_lsp.cli import main
from hrm_lsp.training.run import TrainOptions, train

from .conftest import copy_packages

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV})


def make_repo(stdlib_src: Path, repo: Path) -> Path:
    """A git repository with three commits of real Go packages (none in the base run's data)."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    copy_packages(stdlib_src, repo, ("container/ring", "unicode/utf16"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add ring buffer and UTF-16 helpers")
    copy_packages(stdlib_src, repo, ("encoding/hex", "hash/adler32"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add hex encoding and the Adler-32 checksum")
    copy_packages(stdlib_src, repo, ("encoding/base32", "math/bits"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add base32 encoding and bit helpers")
    return repo


@pytest.mark.slow
def test_init_fine_tunes_on_a_git_repo_exports_and_says_how_to_use_it(
        byte_data: Path, stdlib_src: Path, tmp_path: Path):
    if shutil.which("git") is None:
        pytest.fail("git is needed to build the test repository")
    base = tmp_path / "base"
    train(TrainOptions(recipe="tiny", data=(byte_data,), out=base, backend="torch", device="cpu",
                       steps=30, overrides=("run.eval_every=100",), quiet=True))
    repo = make_repo(stdlib_src, tmp_path / "repo")

    ft = tmp_path / "ft"
    res = CliRunner().invoke(main, [
        "train", "--init", str(base), "--data", str(repo), "--out", str(ft), "--device", "cpu",
        "--steps", "60", "--quiet", "--set", "data.seq_len=64", "--set", "run.eval_batches=4",
        "--set", "schedule.warmup_steps=5", "--set", "data.refine_examples=10",
        *(x for k in ("lr", "planner_lr", "generator_lr", "refine_lr") for x in ("--set", f"optim.{k}=3e-3")),
    ])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = res.output

    # Prepared with the base model's tokenizer, and with the repository's history.
    import json

    manifest = json.loads((ft / "data" / "manifest.json").read_text())
    base_tok = json.loads((base / "config.json").read_text())["tokenizer_sha256"]
    assert manifest["tokenizer"]["sha256"] == base_tok
    assert any(s.get("kind") == "git" and s.get("commits", 0) >= 3 for s in manifest["sources"])

    # Before/after on the held-out slice: printed, and better after.
    line = next(ln for ln in out.splitlines() if ln.startswith("held-out"))
    before, after = (float(x) for x in line.split(": ")[1].split(" bits/byte")[0].split(" -> "))
    assert after < before - 0.2  # a still-young base model learns this code quickly
    card = (ft / "run_card.md").read_text()
    assert "## Fine-tuning: held-out `test` split" in card
    row = next(ln for ln in card.splitlines() if ln.startswith("| bits per UTF-8 byte |") and ln.count("|") == 4)
    card_before, card_after = (float(x) for x in row.strip("| ").split(" | ")[1:])
    assert card_before == pytest.approx(before, abs=6e-4) and card_after == pytest.approx(after, abs=6e-4)

    # One model file, loadable by the inference side, and instructions that name it.
    model_file = ft / "model.gguf"
    assert model_file.is_file()
    assert f"hrm-lsp serve --model {model_file}" in out and '"hrmLsp.modelPath"' in out
    from hrm_lsp.export.gguf import load_model

    model, tok, meta = load_model(model_file)
    assert tok.sha256 == base_tok and meta.format == "gguf"
    # The file records the sequence length it was trained on, and the engine keeps every
    # request inside it (the model's own window is longer).
    from hrm_lsp.inference import Engine

    assert meta.train_context == 64 < model.cfg.max_seq_len
    assert Engine(model, tok, meta, backend="torch").capacity == 64
    assert Engine(model, tok, meta, backend="torch", context=48).capacity == 48
    assert load_model(ft)[2].train_context == 64  # the run directory says the same

    # A fine-tuning run resumes like any run: its model is the --init one, not the recipe's.
    res = CliRunner().invoke(main, ["train", "--resume", "--data", str(repo), "--out", str(ft),
                                    "--device", "cpu", "--steps", "64", "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    from hrm_lsp.training.checkpoint import latest_checkpoint

    assert latest_checkpoint(ft).step == 64


def test_from_default_without_a_shipped_model_is_a_clear_error(tmp_path: Path, monkeypatch):
    import hrm_lsp.training.finetune as ft

    monkeypatch.setattr(ft, "default_model_path", lambda: tmp_path / "absent.gguf")
    res = CliRunner().invoke(main, ["train", "--from-default", "--data", str(tmp_path),
                                    "--out", str(tmp_path / "ft")])
    assert res.exit_code == 1 and "shipped model is not in this installation" in res.output


def test_init_from_something_that_is_not_a_model(tmp_path: Path):
    (tmp_path / "junk").mkdir()
    res = CliRunner().invoke(main, ["train", "--init", str(tmp_path / "junk"), "--data", str(tmp_path),
                                    "--out", str(tmp_path / "ft")])
    assert res.exit_code == 1 and "--init" in res.output and "junk" in res.output
