"""The torch backend end to end on real Go text: learning, checkpoints, exact resume, crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hrm_lsp.training.checkpoint import latest_checkpoint, list_checkpoints, read_state
from hrm_lsp.training.metrics import read_metrics
from hrm_lsp.training.run import TrainOptions, train

REPO = Path(__file__).resolve().parents[2]


def opts(data: Path, out: Path, steps: int, *extra: str, **kw) -> TrainOptions:
    return TrainOptions(recipe="tiny", data=(data,), out=out, backend="torch", device="cpu",
                        steps=steps, overrides=extra, quiet=True, **kw)


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: this checkout, one thread (as the in-process runs)."""
    env = {k: v for k, v in os.environ.items() if k != "HRM_LSP_FAULT"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    return env


def test_tiny_learns_go_and_writes_a_complete_run(byte_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    res = train(opts(byte_data, out, 60, "run.eval_every=30", "run.checkpoint_every=30"))
    assert res.step == 60 and res.tokens == 60 * 8 * 64

    evals = [m for m in read_metrics(out / "metrics.jsonl") if "val_loss" in m]
    assert [e["step"] for e in evals] == [0, 30, 60]
    before, after = evals[0], evals[-1]
    # Untrained: about ln(vocab) nats per token; 60 steps of real Go must cut that clearly.
    assert before["val_loss"] > 5.0
    assert after["val_loss"] < 0.75 * before["val_loss"]
    assert after["val_bpb"] < before["val_bpb"]
    assert after["val_ppl"] == pytest.approx(2.718281828 ** after["val_loss"], rel=1e-6)
    # Byte tokens: bits per byte is loss / ln 2 scaled by tokens per byte (specials count
    # their names' bytes), so it must be close to, and not above, loss / ln 2.
    assert after["val_bpb"] <= after["val_loss"] / 0.6931 + 1e-9

    steps = [m for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in steps] == [10, 20, 30, 40, 50, 60]
    assert all({"plan", "code", "refine", "lr", "tok_s", "grad_norm", "train_lm"} <= set(m) for m in steps)
    assert all("nats" not in m for m in steps)  # turned into train_lm, never logged raw
    assert steps[-1]["lr"] < steps[0]["lr"]  # cosine decay

    # keep_last = 2 in the tiny recipe: steps 30 and 60 remain, latest names 60.
    assert [c.step for c in list_checkpoints(out)] == [30, 60]
    ck = latest_checkpoint(out)
    assert ck.step == 60 and (out / "latest").read_text().strip() == "checkpoints/step-0000060"
    state = read_state(ck)
    assert state["step"] == 60 and state["backend"] == "torch" and state["data_positions"] == [60]
    assert state["recipe"]["source"]["name"] == "tiny"

    # The model file rebuilds the model on its own (config in metadata), as export needs.
    from hrm_lsp.model.weights import load_model_file

    model = load_model_file(ck.path / "model.safetensors")
    assert model.num_params() == res.num_params
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tokenizer"] == "byte" and (out / "tokenizer.json").is_file()
    card = (out / "run_card.md").read_text()
    assert "# Run card: tiny" in card and "bits per UTF-8 byte" in card
    assert f"{after['val_bpb']:.4f}" in card and cfg["manifest_sha256"] in card


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step:07d}" / "model.safetensors"))


def test_kill_during_save_leaves_a_loadable_checkpoint_and_resume_is_exact(byte_data: Path, tmp_path: Path):
    """20 straight steps == 10 steps + SIGKILL while saving step 20 + resume from 10."""
    straight = tmp_path / "straight"
    train(opts(byte_data, straight, 20, "run.checkpoint_every=10", "run.eval_every=100"))

    crashed = tmp_path / "crashed"
    cmd = [sys.executable, "-m", "hrm_lsp.cli", "train", "--recipe", "tiny", "--data", str(byte_data),
           "--out", str(crashed), "--backend", "torch", "--device", "cpu", "--steps", "20", "--quiet",
           "--set", "run.checkpoint_every=10", "--set", "run.eval_every=100"]
    proc = subprocess.run(cmd, env=cli_env(HRM_LSP_FAULT="kill-during-save:20"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL, in the middle of the save
    leftovers = list((crashed / "checkpoints").glob(".tmp-step-0000020-*"))
    assert leftovers and (leftovers[0] / "model.safetensors").is_file()
    ck = latest_checkpoint(crashed)
    assert ck.step == 10  # the half-written step 20 is not published
    assert read_state(ck)["data_positions"] == [10]
    load_file(str(ck.path / "model.safetensors"))  # loadable

    torch.manual_seed(12345)  # the resume must restore the RNG itself, not inherit ours
    res = train(opts(byte_data, crashed, 20, resume=True))
    assert res.step == 20
    assert not list((crashed / "checkpoints").glob(".tmp-*"))  # cleaned by the next save
    a, b = _weights(straight, 20), _weights(crashed, 20)
    assert a.keys() == b.keys()
    # Same ops on the same CPU with the same threads: bit-identical, tolerance 0.
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = (read_metrics(r / "metrics.jsonl") for r in (straight, crashed))
    la = [m["loss"] for m in ma if "loss" in m]
    lb = [m["loss"] for m in mb if "loss" in m]
    assert la == lb  # metrics logged before the crash past step 10 were dropped, then redone


def test_resume_extends_a_finished_run(byte_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(opts(byte_data, out, 10, "run.eval_every=100"))
    res = train(opts(byte_data, out, 15, "run.eval_every=100", resume=True))
    assert res.step == 15 and latest_checkpoint(out).step == 15
    assert read_state(latest_checkpoint(out))["tokens"] == 15 * 8 * 64
    from hrm_lsp.training.run import RunError

    with pytest.raises(RunError, match="keeps the run's model"):
        train(opts(byte_data, out, 20, "model.overrides.dropout=0.1", resume=True))


def test_ddp_two_gloo_ranks(byte_data: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "hrm_lsp.cli",
           "train", "--recipe", "tiny", "--data", str(byte_data), "--out", str(out), "--device", "cpu",
           "--steps", "6", "--quiet", "--set", "run.log_every=2", "--set", "run.checkpoint_every=3",
           "--set", "run.eval_every=100"]
    proc = subprocess.run(cmd, env=cli_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = read_state(latest_checkpoint(out))
    assert state["world_size"] == 2 and state["step"] == 6
    assert state["data_positions"] == [6, 6] and len(state["rngs"]) == 2
    assert state["tokens"] == 6 * 8 * 64 * 2  # both ranks' batches count
    assert state["rngs"][0] != state["rngs"][1]  # dropout streams differ per rank
    # One writer: every logged step appears once in the metrics.
    steps = [m["step"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
    assert steps == [2, 4, 6]
    assert [c.step for c in list_checkpoints(out)] == [3, 6]


def _step_losses(run: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run / "metrics.jsonl") if "loss" in m]


def test_switches_checkpointing_accumulation_qat_full_gradient(byte_data: Path, tmp_path: Path):
    """Gradient checkpointing recomputes, it must not change a single number; accumulation,
    4-bit QAT and full (TRM) gradients train (validation loss falls within a few steps)."""
    common = ("run.eval_every=100", "run.log_every=1", "run.eval_batches=1")
    base = tmp_path / "base"
    train(opts(byte_data, base, 4, *common))
    ckpt = tmp_path / "ckpt"
    train(opts(byte_data, ckpt, 4, *common, "run.grad_checkpointing=true"))
    assert _step_losses(ckpt) == _step_losses(base)
    assert read_state(latest_checkpoint(ckpt))["model_config"]["grad_checkpointing"] is True

    for name, extra in (("qat", ("run.qat=true",)), ("full", ("model.overrides.grad_mode=full",)),
                        ("accum", ("data.batch_size=4", "optim.grad_accum=2"))):
        run = tmp_path / name
        train(opts(byte_data, run, 6, *common, *extra, "schedule.warmup_steps=0"))
        assert len(_step_losses(run)) == 6 and all(np.isfinite(_step_losses(run))), name
        evals = [m["val_loss"] for m in read_metrics(run / "metrics.jsonl") if "val_loss" in m]
        assert evals[-1] < evals[0] - 0.5, (name, evals)
    assert read_state(latest_checkpoint(tmp_path / "accum"))["tokens"] == 6 * 4 * 64 * 2
    assert read_state(latest_checkpoint(tmp_path / "qat"))["model_config"]["qat_bits"] == 4
    assert read_state(latest_checkpoint(tmp_path / "full"))["model_config"]["grad_mode"] == "full"


def test_source_directories_are_prepared_into_the_run(stdlib_src: Path, tmp_path: Path):
    from .conftest import copy_packages

    src = copy_packages(stdlib_src, tmp_path / "src", ("sort", "container/list", "errors", "path"))
    out = tmp_path / "run"
    res = train(opts(src, out, 3, "run.eval_every=100", "run.eval_batches=1", "data.refine_examples=0"))
    assert res.step == 3
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["tokenizer"]["kind"] == "byte"
    assert json.loads((out / "config.json").read_text())["data"] == str((out / "data").resolve())


def test_ctrl_c_saves_the_finished_step_and_resume_is_exact(byte_data: Path, tmp_path: Path, monkeypatch):
    """SIGINT during step 3 lets step 3 finish, checkpoints it and stops; resuming to 6 equals
    6 straight steps."""
    import signal

    from hrm_lsp.training.torch_backend import TorchTrainer

    common = ("run.eval_every=100", "run.eval_batches=1", "run.checkpoint_every=100")
    straight = tmp_path / "straight"
    train(opts(byte_data, straight, 6, *common))

    real_step, calls = TorchTrainer.train_step, []

    def step_then_sigint(self, micro, lr_scale):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of step 3
        return real_step(self, micro, lr_scale)

    monkeypatch.setattr(TorchTrainer, "train_step", step_then_sigint)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train(opts(byte_data, stopped, 6, *common))
    monkeypatch.setattr(TorchTrainer, "train_step", real_step)
    assert latest_checkpoint(stopped).step == 3 and len(calls) == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    train(opts(byte_data, stopped, 6, *common, resume=True))
    a, b = _weights(straight, 6), _weights(stopped, 6)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_lm_is_the_plain_lm_loss_that_val_loss_reports(byte_data: Path):
    """The logged train_lm of a step is the mean CE over that batch's non-pad targets, computed
    exactly as evaluation computes val_loss, while `loss` is the weighted multitask objective
    (plan and code tokens weighted 0.4 each, per token, + 0.2 refine) and is not on that scale."""
    from hrm_lsp.training.data import TrainData, open_dataset
    from hrm_lsp.training.distributed import Dist
    from hrm_lsp.training.recipe import recipe_from_dict, recipe_mapping
    from hrm_lsp.training.run import make_trainer, model_config_for

    recipe = recipe_from_dict(recipe_mapping("tiny"))
    assert recipe.loss.mode == "multitask"
    ds = open_dataset(byte_data, recipe)
    cfg = model_config_for(recipe, ds.tokenizer.vocab_size)
    trainer, _ = make_trainer(recipe, cfg, Dist())
    t, feats, _ = next(TrainData(ds, recipe, cfg.byte_features).train_batches())
    expected = trainer.eval_nats(t, feats) / t.n_tokens  # before the step changes the weights
    m = trainer.train_step([(t, feats)], 1.0)
    train_lm = float(m["nats"]) / t.n_tokens
    assert train_lm == pytest.approx(expected, rel=1e-5)
    parts = {k: float(m[k]) for k in ("plan", "code", "refine", "loss")}
    # Per-token weights: with equal plan and code weights every target counts the same, so
    # the LM part is 0.8 x the plain mean CE, whatever the share of plan tokens.
    assert parts["loss"] == pytest.approx(0.8 * train_lm + 0.2 * parts["refine"], rel=1e-5)
    assert abs(parts["loss"] - train_lm) > 0.05 * train_lm


def test_late_qat_trains_in_float_first(byte_data: Path, tmp_path: Path):
    """run.qat_start=0.5 runs the first half of the steps without fake quantisation (exactly the
    float run's losses) and the rest with it (the QAT run's config, different losses). (The
    fused head loss these runs use equals the plain one: test_training_units.)"""
    common = ("run.eval_every=100", "run.log_every=1", "run.eval_batches=1",
              "schedule.warmup_steps=0")
    runs = {}
    for name, extra in (("fused", ()), ("late_qat", ("run.qat=true", "run.qat_start=0.5"))):
        runs[name] = tmp_path / name
        train(opts(byte_data, runs[name], 4, *common, *extra))
    fused, late = (_step_losses(runs[n]) for n in ("fused", "late_qat"))
    assert late[:2] == pytest.approx(fused[:2], rel=1e-5)
    assert late[2:] != pytest.approx(fused[2:], rel=1e-5)
    assert read_state(latest_checkpoint(runs["late_qat"]))["model_config"]["qat_bits"] == 4


def test_random_cycles_draw_a_count_per_step_and_resume_draws_the_same(byte_data: Path, tmp_path: Path):
    """run.random_cycles: each step of a 2 x 2 run runs (H, L) drawn from 1..2 x 1..2 (logged),
    evaluation the full counts; the draws follow the optimiser's step, so a resumed run
    draws what the uninterrupted one did. Other backends refuse the switch."""
    from hrm_lsp.config import ConfigError
    from hrm_lsp.training.recipe import load_recipe

    common = ("run.eval_every=100", "run.log_every=1", "run.eval_batches=1", "run.random_cycles=true")
    model = ("model.overrides.H_cycles=2", "model.overrides.L_cycles=2")
    whole = tmp_path / "whole"
    train(opts(byte_data, whole, 8, *common, *model))
    rows = [m for m in read_metrics(whole / "metrics.jsonl") if "cycles_h" in m]
    drawn = [(int(m["cycles_h"]), int(m["cycles_l"])) for m in rows]
    assert len(drawn) == 8 and len(set(drawn)) > 1
    assert all(1 <= h <= 2 and 1 <= l_ <= 2 for h, l_ in drawn)
    part = tmp_path / "part"
    train(opts(byte_data, part, 4, *common, *model, "run.checkpoint_every=4"))
    train(opts(byte_data, part, 8, *common, resume=True))
    again = [(int(m["cycles_h"]), int(m["cycles_l"])) for m in read_metrics(part / "metrics.jsonl")
             if "cycles_h" in m]
    assert again[-4:] == drawn[-4:]
    with pytest.raises(ConfigError, match="torch backend"):
        load_recipe("tiny", ["run.random_cycles=true", "run.backend=mlx"])


def test_batches_from_worker_processes_train_the_same_steps(byte_data: Path, tmp_path: Path):
    """data.workers=2 (batches built in spawned processes, as the GPU recipe does) trains the
    very same steps as the batches built in the training process; the GPU run's report reads
    the run (benchmarks/gpu_run.py)."""
    common = ("run.eval_every=100", "run.log_every=1", "run.eval_batches=1",
              "schedule.warmup_steps=0", "data.fim_rate=0.9")
    here, there = tmp_path / "here", tmp_path / "workers"
    train(opts(byte_data, here, 3, *common))
    train(opts(byte_data, there, 3, *common, "data.workers=2"))
    assert _step_losses(there) == pytest.approx(_step_losses(here), rel=1e-6)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_run.py"), "report", str(there)],
                         capture_output=True, text=True, env=cli_env(), check=True).stdout
    assert "| steps | 3 |" in out and "validation at step 3" in out
