"""The MLX backend (Linux CPU here) on real Go text: learning, compile, QAT, resume, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from hrm_lsp.training.checkpoint import latest_checkpoint, read_state  # noqa: E402
from hrm_lsp.training.metrics import read_metrics  # noqa: E402
from hrm_lsp.training.run import TrainOptions, train  # noqa: E402

pytestmark = pytest.mark.mlx


def opts(data: Path, out: Path, steps: int, *extra: str, **kw) -> TrainOptions:
    return TrainOptions(recipe="tiny", data=(data,), out=out, backend="mlx", steps=steps,
                        overrides=extra, quiet=True, **kw)


def _losses(run: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run / "metrics.jsonl") if "loss" in m]


@pytest.mark.slow
def test_mlx_tiny_learns_and_its_checkpoint_runs_in_torch(byte_data: Path, tmp_path: Path):
    out = tmp_path / "mlx"
    res = train(opts(byte_data, out, 24, "run.eval_every=100", "run.log_every=4"))
    evals = [m for m in read_metrics(out / "metrics.jsonl") if "val_loss" in m]
    assert [e["step"] for e in evals] == [0, 24]
    assert evals[0]["val_loss"] > 5.0
    assert evals[1]["val_loss"] < 0.8 * evals[0]["val_loss"]
    assert read_state(latest_checkpoint(out))["backend"] == "mlx"

    # Same weight names: the MLX checkpoint rebuilds as a torch model, which scores the same
    # validation batches with the same loss (fp32 on CPU; only summation order differs).
    import torch

    from hrm_lsp.data import Dataset
    from hrm_lsp.model.weights import load_model_file
    from hrm_lsp.training.data import TrainData
    from hrm_lsp.training.recipe import load_recipe
    from hrm_lsp.training.torch_backend import TorchTrainer

    model = load_model_file(latest_checkpoint(out).path / "model.safetensors")
    recipe = load_recipe("tiny", ["run.eval_every=100"])
    trainer = TorchTrainer.create(recipe, model, "cpu")
    data = TrainData(Dataset(byte_data), recipe, model.cfg.byte_features)
    nats = sum(trainer.eval_nats(t, f) for t, f, _ in data.val_batches())
    tokens = sum(t.n_tokens for t, _, _ in data.val_batches())
    assert nats / tokens == pytest.approx(res.final_eval["val_loss"], rel=1e-4)
    assert torch.is_tensor(next(iter(model.state_dict().values())))


@pytest.mark.slow
def test_mlx_compiled_step_matches_eager_and_resumes(byte_data: Path, tmp_path: Path):
    eager = tmp_path / "eager"
    train(opts(byte_data, eager, 4, "run.eval_every=100", "run.log_every=1", "run.checkpoint_every=2",
               "run.eval_batches=1"))
    compiled = tmp_path / "compiled"
    train(opts(byte_data, compiled, 4, "run.eval_every=100", "run.log_every=1", "run.compile=true",
               "run.eval_batches=1"))
    np.testing.assert_allclose(_losses(eager), _losses(compiled), rtol=2e-4)

    # Resume the eager run from step 2 of a fresh copy: same losses for steps 3..4.
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(eager, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-0000004")
    (resumed / "latest").write_text("checkpoints/step-0000002\n")
    mx.random.seed(999)  # the checkpoint's random state must win
    train(opts(byte_data, resumed, 4, resume=True))
    np.testing.assert_allclose(_losses(resumed), _losses(eager), rtol=1e-5)


def test_mlx_qat_recipe_trains_a_few_steps(byte_data: Path, tmp_path: Path):
    """4-bit QAT (seed 000's setting) on MLX: loss finite and falling over a few steps."""
    out = tmp_path / "qat"
    train(opts(byte_data, out, 8, "run.qat=true", "run.eval_every=100", "run.log_every=1",
               "optim.lr=1e-2", "optim.planner_lr=1e-2", "optim.generator_lr=1e-2",
               "schedule.warmup_steps=0"))
    losses = _losses(out)
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    cfg = read_state(latest_checkpoint(out))["model_config"]
    assert cfg["qat_bits"] == 4 and cfg["qat_group"] == 32


@pytest.mark.slow
def test_seed000_recipe_runs_on_mlx_with_byte_features(byte_data: Path, tmp_path: Path):
    """Seed 000's own recipe (byte + nibble + accumulator model, 4-bit QAT, lm loss) on MLX,
    shrunk to a few small batches."""
    out = tmp_path / "seed000"
    res = train(TrainOptions(recipe="seed000-mlx-4bit", data=(byte_data,), out=out, steps=2, quiet=True,
                             overrides=("data.seq_len=32", "data.batch_size=2", "run.eval_batches=1",
                                        "run.log_every=1")))
    losses = _losses(out)
    assert len(losses) == 2 and all(np.isfinite(losses))
    state = read_state(latest_checkpoint(out))
    assert state["backend"] == "mlx" and state["recipe"]["loss"]["mode"] == "lm"
    cfg = state["model_config"]
    assert cfg["byte_features"] and cfg["qat_bits"] == 4 and cfg["d_model"] == 256
    assert res.num_params == 6_504_961 + 3  # + the three recurrent gates (seed000 preset)
