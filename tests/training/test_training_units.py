"""Recipes, schedule, loss targets, checkpoints and the CLI's answers to bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hrm_lsp.cli import main
from hrm_lsp.config import ConfigError
from hrm_lsp.tokenizer import symbols
from hrm_lsp.tokenizer.byte import ByteTokenizer
from hrm_lsp.training.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from hrm_lsp.training.loss import SymbolIds, make_targets, plan_mask
from hrm_lsp.training.metrics import MetricsLog, bits_per_byte, mfu, peak_flops, read_metrics
from hrm_lsp.training.recipe import ScheduleSection, load_recipe, recipe_names
from hrm_lsp.training.schedule import lr_scale
from hrm_lsp.training.torch_backend import module_lr_key

# --- recipes ------------------------------------------------------------------------------


def test_shipped_recipes_parse_and_record_their_source():
    assert recipe_names() == ["default", "finetune", "gpu-h200", "seed000-mlx-4bit", "seed004-rocm", "small-cpu", "tiny"]
    s4 = load_recipe("seed004-rocm")
    assert (s4.optim.planner_lr, s4.optim.generator_lr, s4.optim.refine_lr) == (3.6e-4, 2.4e-4, 3e-4)
    assert (s4.loss.plan_weight, s4.loss.code_weight, s4.loss.refine_weight) == (0.4, 0.4, 0.2)
    assert (s4.data.batch_size, s4.optim.grad_accum, s4.data.seq_len) == (8, 4, 1024)
    assert s4.data.tokenizer == "spm" and s4.data.vocab_size == 50000
    assert any("3-4 GB" in c for c in s4.source.claims)
    s0 = load_recipe("seed000-mlx-4bit")
    assert s0.run.backend == "mlx" and s0.run.qat and s0.data.tokenizer == "byte"
    assert (s0.optim.lr, s0.optim.weight_decay, s0.schedule.steps) == (1e-4, 0.01, 10000)
    assert s0.loss.mode == "lm" and s0.budget.memory_gb == 12.0


def test_overrides_apply_and_unknown_keys_are_named():
    r = load_recipe("tiny", ["optim.lr=1e-3", "run.compile=true", "model.overrides.dropout=0.2"])
    assert r.optim.lr == 1e-3 and r.run.compile and r.model.overrides == {"dropout": 0.2}
    with pytest.raises(ConfigError, match=r"unknown key optim\.lrr"):
        load_recipe("tiny", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="data.tokenizer"):
        load_recipe("tiny", ["data.tokenizer=gpt2"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    assert load_recipe("tiny", ["data.workers=3"]).data.workers == 3
    with pytest.raises(ConfigError, match="data.workers"):
        load_recipe("tiny", ["data.workers=-1"])


@pytest.mark.parametrize("name", ["tiny", "default", "seed000-mlx-4bit", "seed004-rocm", "small-cpu", "gpu-h200"])
def test_dry_run_prints_the_budget_report(name: str):
    res = CliRunner().invoke(main, ["train", "--recipe", name, "--dry-run"])
    assert res.exit_code == 0, res.output
    r = load_recipe(name)
    assert f"tokens per step   {r.tokens_per_step:,}" in res.output
    assert "fits" in res.output and "FLOPs per token" in res.output
    params = int(res.output.split("parameters")[1].split()[0].replace(",", ""))
    assert params > 50_000
    flops = int(res.output.split("FLOPs per token")[1].split()[0].replace(",", ""))
    assert flops > 6 * params * 0.5  # at least the weight matmuls, forward + backward


def test_dry_run_refuses_an_over_budget_recipe():
    res = CliRunner().invoke(main, ["train", "--recipe", "seed004-rocm", "--dry-run",
                                    "--set", "data.batch_size=64"])
    assert res.exit_code == 1
    assert "DOES NOT FIT" in res.output and "memory budget" in res.output


# --- schedule, loss targets, metrics -----------------------------------------------------


def test_warmup_then_cosine_to_the_floor():
    s = ScheduleSection(kind="cosine", steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_scale(0, s) == pytest.approx(0.1) and lr_scale(9, s) == pytest.approx(1.0)
    assert lr_scale(10, s) == pytest.approx(1.0)
    assert lr_scale(60, s) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_scale(110, s) == pytest.approx(0.1) and lr_scale(500, s) == pytest.approx(0.1)
    vals = [lr_scale(i, s) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(vals[:-1], vals[1:], strict=True))


def _ids(tok, *parts):
    out = []
    for p in parts:
        out += [tok.id_of(p)] if p in symbols.SPECIALS else tok.encode(p)
    return out


def test_plan_and_refinement_targets_come_from_ids():
    tok = ByteTokenizer()
    sym = SymbolIds.from_tokenizer(tok)
    doc = _ids(tok, "<PLAN>", "<INTENT:FIX>", "<STEP>", "ab", "</PLAN>", "x=1", "<VALIDATE>",
               "<DIAG>", "e", "</DIAG>", "<REFINE>", "x:=1", "<VALIDATE>", "<SYNTAX_OK>", "<EOT>")
    ids = np.array([doc + [0, 0]])
    t = make_targets(ids, sym)
    names = [tok.decode([i]) for i in ids[0, 1:]]
    plan_targets = [n for n, m in zip(names, t.plan_mask[0], strict=True) if m]
    assert plan_targets == ["<INTENT:FIX>", "<STEP>", "a", "b", "</PLAN>"]  # <PLAN> is input 0
    assert not (t.plan_mask & t.code_mask).any()
    assert t.n_tokens == len(doc) - 1  # pads are no target
    # Refinement targets: first <VALIDATE> is followed by <DIAG> (failed), second by <SYNTAX_OK>.
    pos = np.flatnonzero(t.refine_mask[0])
    assert len(pos) == 2 and list(t.refine_target[0, pos]) == [0.0, 1.0]


def test_a_window_starting_inside_a_plan_still_marks_it():
    open_, close = 5, 6
    ids = np.array([[1, 2, close, 3, 4, open_, 7, close, 8], [1, 2, 3, 4, 5 - 5, 1, 1, 1, 1]])
    m = plan_mask(ids, open_, close)
    assert m[0].tolist() == [True, True, True, False, False, True, True, True, False]
    assert not m[1].any()


def test_bits_per_byte_and_peak_table():
    assert bits_per_byte(math.log(2) * 100, 100) == pytest.approx(1.0)
    assert peak_flops("NVIDIA H100 80GB HBM3", bf16=True) == 989e12
    assert peak_flops("AMD Radeon RX 6700 XT", bf16=True) == 26.4e12
    assert peak_flops("Some CPU", bf16=True) is None
    # MFU: 1e8 FLOPs/token at 1e4 tokens/s on a 1e12 FLOP/s device is 100%.
    assert mfu(1e8, 1e4, 1e12) == pytest.approx(1.0) and mfu(1e8, 1e4, None) is None


def test_module_learning_rates_follow_weight_names():
    assert module_lr_key("H.layers.0.attn.qkv.weight") == "planner_lr"
    assert module_lr_key("L.layers.2.mlp.down.weight") == "generator_lr"
    assert module_lr_key("refine_head.bias") == "refine_lr"
    assert module_lr_key("embed.weight") == "lr" and module_lr_key("lm_head.weight") == "lr"


def test_torch_param_groups_cover_every_weight_once():
    from hrm_lsp.model import build_model, preset
    from hrm_lsp.training.torch_backend import param_groups

    recipe = load_recipe("seed004-rocm")
    model = build_model(preset("tiny"))
    groups, names = param_groups(model, recipe)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == len({id(p) for p in model.parameters()})
    lrs = {names[id(p)].split(".")[0]: g["peak_lr"] for g in groups for p in g["params"]}
    assert lrs["H"] == 3.6e-4 and lrs["L"] == 2.4e-4 and lrs["refine_head"] == 3e-4
    assert lrs["embed"] == recipe.optim.lr
    assert all(g["weight_decay"] == 0.0 for g in groups for p in g["params"] if p.dim() < 2)


# --- checkpoints ------------------------------------------------------------------------------


def _save(run: Path, step: int, keep: int = 2):
    w = {"a": np.full((2, 2), step, np.float32)}
    return save_checkpoint(run, step, w, {"a.m": np.zeros(2, np.float32)}, {"x": step}, keep_last=keep)


def test_checkpoints_keep_last_and_latest_falls_back(tmp_path: Path):
    for s in (1, 2, 3):
        _save(tmp_path, s)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2, 3]
    assert latest_checkpoint(tmp_path).step == 3
    # A damaged pointer (or one naming a removed checkpoint) falls back to the newest complete one.
    (tmp_path / "latest").write_text("checkpoints/step-0000009\n")
    assert latest_checkpoint(tmp_path).step == 3
    # A half-written checkpoint directory (no state.json) is never chosen.
    (tmp_path / "checkpoints" / "step-0000004").mkdir()
    assert latest_checkpoint(tmp_path).step == 3


def test_metrics_log_drops_records_past_a_resumed_step(tmp_path: Path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for s in (10, 20, 30):
        log.write({"step": s, "loss": 1.0})
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write('{"step": 40, "lo')  # torn by a kill
    log.truncate_after(20)
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [10, 20]


# --- bad inputs through the CLI ---------------------------------------------------------------


def _train(*args: str):
    return CliRunner().invoke(main, ["train", "--recipe", "tiny", "--device", "cpu", "--quiet", *args])


def test_missing_data_dir_is_a_clear_error(tmp_path: Path):
    res = _train("--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert res.exit_code == 1 and "no such file or directory" in res.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_no_data_is_a_usage_error(tmp_path: Path):
    res = _train("--out", str(tmp_path / "run"))
    assert res.exit_code == 2 and "--data is required" in res.output


def test_wrong_tokenizer_for_the_recipe(byte_data: Path, tmp_path: Path):
    res = _train("--data", str(byte_data), "--out", str(tmp_path / "run"), "--set", "data.tokenizer=spm")
    assert res.exit_code == 1
    assert "prepared with the 'byte' tokenizer" in res.output and "'spm'" in res.output


def test_budget_exceeded_is_refused_before_anything_is_written(byte_data: Path, tmp_path: Path):
    res = _train("--data", str(byte_data), "--out", str(tmp_path / "run"), "--set", "budget.memory_gb=0.001")
    assert res.exit_code == 1 and "exceeds the budget of 0.0 GiB" in res.output
    assert not (tmp_path / "run").exists()


def test_unknown_set_key_is_a_usage_error(byte_data: Path, tmp_path: Path):
    res = _train("--data", str(byte_data), "--out", str(tmp_path / "run"), "--set", "run.warp=9")
    assert res.exit_code == 2 and "unknown key run.warp" in res.output


def test_resume_without_checkpoint_and_overwrite_without_resume(byte_data: Path, tmp_path: Path):
    run = tmp_path / "run"
    res = _train("--data", str(byte_data), "--out", str(run), "--resume")
    assert res.exit_code == 1 and "no complete checkpoint" in res.output
    res = _train("--data", str(byte_data), "--out", str(run), "--steps", "2", "--set", "run.eval_batches=1")
    assert res.exit_code == 0, res.output
    res = _train("--data", str(byte_data), "--out", str(run), "--steps", "2")
    assert res.exit_code == 1 and "already holds checkpoints" in res.output and "--resume" in res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"]["source"]["name"] == "tiny"


def test_checkpoint_every_zero_means_once_per_epoch(byte_data: Path):
    from hrm_lsp.data import Dataset
    from hrm_lsp.training.run import checkpoint_interval

    ds = Dataset(byte_data)
    r = load_recipe("tiny", ["run.checkpoint_every=0"])
    per_epoch = -(-ds.num_tokens("train") // (8 * 64))
    assert checkpoint_interval(r, ds, 1) == per_epoch > 100
    assert checkpoint_interval(r, ds, 2) == -(-ds.num_tokens("train") // (8 * 64 * 2))
    assert checkpoint_interval(load_recipe("tiny"), ds, 1) == 50
    assert load_recipe("seed000-mlx-4bit").run.checkpoint_every == 0
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_recipe("tiny", ["run.checkpoint_every=-1"])


def _truncate(ck: Path, *steps: int) -> None:
    for step in steps:  # cut short, as by a full disk
        w = ck / f"step-{step:07d}" / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100])


def test_resume_from_a_damaged_checkpoint_falls_back_then_names_the_file(byte_data: Path, tmp_path: Path):
    run, ck = tmp_path / "run", tmp_path / "run" / "checkpoints"
    common = ("--data", str(byte_data), "--out", str(run), "--set", "run.eval_batches=1",
              "--set", "run.checkpoint_every=1", "--set", "run.keep_last=3")
    assert _train(*common, "--steps", "2").exit_code == 0

    # The latest is damaged, the one before loads: resume from it, with a warning.
    _truncate(ck, 2)
    res = CliRunner().invoke(main, ["train", *common, "--steps", "3", "--resume", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"cannot resume from {ck / 'step-0000002'}" in res.output and "from step 1" in res.output
    assert [c.step for c in list_checkpoints(run)] == [1, 2, 3]

    # Nothing loads: the latest checkpoint's problem, by file name.
    _truncate(ck, 1, 2, 3)
    res = _train(*common, "--steps", "4", "--resume")
    assert res.exit_code == 1
    assert str(ck / "step-0000003" / "model.safetensors") in res.output and "safetensors" in res.output


def test_multitask_loss_weights_plan_tokens_per_token_not_per_group():
    """Issue 14: per-group means made each of a few plan tokens weigh as much as all code
    tokens together; per-token weights do not."""
    import torch

    from hrm_lsp.training.loss import torch_loss
    from hrm_lsp.training.recipe import LossSection

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 10, 7, generator=g)
    targets = torch.randint(0, 7, (1, 10), generator=g)
    plan = torch.zeros(1, 10, dtype=torch.bool)
    plan[0, :1] = True  # one plan target, nine code targets
    batch = {"targets": targets, "plan_mask": plan, "code_mask": ~plan,
             "refine_mask": torch.zeros(1, 10, dtype=torch.bool),
             "refine_target": torch.zeros(1, 10)}
    ce = torch.nn.functional.cross_entropy(logits[0], targets[0], reduction="none")
    loss, parts = torch_loss(logits, torch.zeros(1, 10), batch, LossSection())
    assert float(loss) == pytest.approx(0.8 * float(ce.mean()), rel=1e-6)  # no refine positions
    # Plan tokens at twice a code token's weight: exactly that, per token.
    loss2, _ = torch_loss(logits, torch.zeros(1, 10), batch,
                          LossSection(plan_weight=0.8, code_weight=0.4))
    w = torch.where(plan[0], 0.8, 0.4)
    assert float(loss2) == pytest.approx(1.2 * float((w * ce).sum() / w.sum()), rel=1e-6)
    assert float(parts["plan"]) == pytest.approx(float(ce[0]), rel=1e-6)


@pytest.mark.parametrize("tie,mode", [(True, "multitask"), (False, "lm")])
def test_fused_head_loss_equals_the_plain_loss_and_gradients(tie, mode):
    import torch

    from hrm_lsp.model import build_model, preset
    from hrm_lsp.training.loss import fused_linear_ce, torch_loss
    from hrm_lsp.training.recipe import LossSection

    torch.manual_seed(0)
    m = build_model(preset("tiny", tie_embeddings=tie)).train()
    ids = torch.randint(1, 512, (2, 33))
    plan = torch.zeros(2, 32, dtype=torch.bool)
    plan[:, :3] = True
    refine = torch.zeros(2, 32, dtype=torch.bool)
    refine[0, 5] = True
    batch = {"targets": ids[:, 1:], "plan_mask": plan, "code_mask": ~plan, "refine_mask": refine,
             "refine_target": refine.float()}
    cfg = LossSection(mode=mode)
    got = []
    for fused in (False, True):
        m.zero_grad()
        out = m(ids[:, :-1], lm_head=not fused)
        assert (out.logits is None) == fused and (out.hidden is None) != fused
        loss, parts = torch_loss(out.hidden if fused else out.logits, out.refine_logit, batch, cfg,
                                 head_weight=m.lm_head.weight if fused else None)
        loss.backward()
        got.append((float(loss), {n: p.grad.clone() for n, p in m.named_parameters()
                                  if p.grad is not None}, float(parts["nats"])))
    (l0, g0, n0), (l1, g1, n1) = got
    assert l1 == pytest.approx(l0, rel=1e-6) and n1 == pytest.approx(n0, rel=1e-6)
    assert set(g0) == set(g1)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-6, rtol=1e-5)
    # Chunking does not change the result, and without autograd it is the plain CE.
    z, w = torch.randn(50, 16), torch.randn(30, 16)
    t, wt = torch.randint(0, 30, (50,)), torch.rand(50)
    a, ce_a = fused_linear_ce(z, w, t, wt, chunk=7)
    b, ce_b = fused_linear_ce(z, w, t, wt, chunk=1024)
    torch.testing.assert_close(ce_a, ce_b)
    torch.testing.assert_close(ce_a, torch.nn.functional.cross_entropy(z @ w.T, t, reduction="none"))
