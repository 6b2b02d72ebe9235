"""Memory estimator against measured peaks (CPU RSS), and FLOPs against torch's counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hrm_lsp.model import build_model, preset
from hrm_lsp.model.flops import flops_per_token
from hrm_lsp.model.memory import (
    GiB,
    MemoryBudgetError,
    count_params,
    estimate_memory,
    measure_training_peaks,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name,overrides", [("tiny", {}), ("small", {}), ("default", {}),
                                            ("seed000", {}), ("tiny", {"arch": "gpt"}),
                                            ("small", {"tie_embeddings": False, "arch": "gpt"})])
def test_count_params_matches_built_model(name, overrides):
    cfg = preset(name, **overrides)
    with torch.device("meta"):  # shapes only: no time spent initialising 23M weights
        model = build_model(cfg)
    assert count_params(cfg) == model.num_params()


# Each case is dominated by a different term: activations + logits of the recurrence,
# checkpointed full back-propagation, and weights + AdamW state. One process measures all.
MEASURED = [
    (preset("tiny"), 16, 256),
    (preset("small", vocab_size=256, grad_mode="full", grad_checkpointing=True), 8, 192),
    (preset("small", vocab_size=16384, tie_embeddings=False), 1, 32),
]


@pytest.mark.slow
def test_estimate_within_25_percent_of_measured_peak():
    measured = measure_training_peaks(MEASURED)
    for (cfg, batch, seq), peak in zip(MEASURED, measured, strict=True):
        est = estimate_memory(cfg, batch, seq).total
        assert 0.75 <= est / peak <= 1.25, (cfg, est / 2**20, peak / 2**20)


def test_estimator_terms_and_budget_refusal():
    cfg = preset("default")
    one = estimate_memory(cfg, 8, 1024, grad_mode="one_step")
    full = estimate_memory(cfg, 8, 1024, grad_mode="full")
    ckpt = estimate_memory(cfg, 8, 1024, grad_mode="full", checkpointing=True)
    assert ckpt.activations < one.activations < full.activations
    P = count_params(cfg)
    assert (one.params, one.grads, one.optimizer) == (4 * P, 4 * P, 8 * P)
    bf16 = estimate_memory(cfg, 8, 1024, param_dtype="bfloat16")
    assert bf16.params == 2 * P and bf16.activations < one.activations
    one.require_fits(one.total)
    with pytest.raises(MemoryBudgetError, match=r"over the budget of 4.00 GiB.*grad_checkpointing"):
        one.require_fits(4 * GiB, "seed004 batch 8 x 1024")
    inference = estimate_memory(cfg, 1, 1024, training=False)
    assert inference.grads == 0 and inference.total < one.total
    with pytest.raises(ValueError, match="unknown dtype"):
        estimate_memory(cfg, 1, 8, param_dtype="int3")


@pytest.mark.parametrize("overrides", [{}, {"grad_mode": "full"}, {"arch": "gpt"},
                                       {"grad_checkpointing": True}])
def test_flops_match_torch_flop_counter(overrides):
    # torch's counter does not see the CPU attention kernel, so compare the matmul part.
    cfg = preset("tiny", **overrides)
    model = build_model(cfg).train()
    B, T = 2, 64
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    with FlopCounterMode(display=False) as fwd_counter, torch.no_grad():
        model(ids)
    with FlopCounterMode(display=False) as train_counter:
        out = model(ids)
        (out.logits.sum() + out.refine_logit.sum()).backward()
    f = flops_per_token(cfg, T, attention=False)
    assert fwd_counter.get_total_flops() == B * T * f.forward
    assert train_counter.get_total_flops() == B * T * f.total
    if cfg.arch == "hrgc":
        # Every recurrence step is counted: 2 H cycles x (2 L steps + 1 H step) = 6 blocks.
        gpt = flops_per_token(cfg.replace(arch="gpt"), T, attention=False)
        head = 2 * cfg.d_model * cfg.vocab_size + 2 * cfg.d_model
        assert f.forward - head == pytest.approx(3 * (gpt.forward - head))


def test_attention_flops_follow_causal_mean_and_window():
    cfg = preset("default")
    base = flops_per_token(cfg, 1024, attention=False, training=False).forward
    causal = flops_per_token(cfg, 1024, training=False).forward - base
    full = flops_per_token(cfg, 1024, training=False, causal=False).forward - base
    assert causal < full
    no_window = flops_per_token(cfg.replace(H_window=0), 1024, training=False).forward - base
    assert causal < no_window
