"""The MLX twin: same weight names, parity with torch, conversion both ways, cached decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrm_lsp.model import build_model, preset, save_weights
from hrm_lsp.model.weights import WeightsError, load_model_file

mx = pytest.importorskip("mlx.core")
mlx_hrgc = pytest.importorskip("hrm_lsp.model.mlx_hrgc")

pytestmark = [pytest.mark.mlx, pytest.mark.usefixtures("one_torch_thread")]
PARITY_ATOL = 1e-4  # max abs logit difference, fp32 on CPU (the bound)


def _torch_model(**overrides):
    torch.manual_seed(0)
    m = build_model(preset("tiny", **overrides))
    with torch.no_grad():  # random, non-trivial weights everywhere, heads included
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def _inputs(cfg, B=2, T=40):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    kw = {}
    if cfg.byte_features:
        kw = dict(nibble=torch.randint(0, 17, (B, T), generator=g),
                  acc=torch.randint(0, 256, (B, T), generator=g))
    return ids, kw


def _mx(kw):
    return {k: mx.array(v.numpy()) for k, v in kw.items()}


CASES = [dict(), dict(arch="gpt"), dict(byte_features=True, tie_embeddings=False, H_window=8),
         dict(qat_bits=4, qat_symmetric=False, qat_group=64, d_model=128, mlp_hidden=256)]


@pytest.mark.parametrize("overrides", CASES)
def test_torch_mlx_parity_and_same_names(overrides):
    tm = _torch_model(**overrides)
    mm = mlx_hrgc.from_torch(tm)
    mm.eval()
    from hrm_lsp.model import state_dict_for_export

    assert set(mlx_hrgc.mlx_weights(mm)) == set(state_dict_for_export(tm))
    ids, kw = _inputs(tm.cfg)
    with torch.no_grad():
        ref = tm(ids, **kw)
    out = mm(mx.array(ids.numpy()), **_mx(kw))
    assert np.abs(np.array(out.logits) - ref.logits.numpy()).max() <= PARITY_ATOL
    assert np.abs(np.array(out.refine_logit) - ref.refine_logit.numpy()).max() <= PARITY_ATOL
    assert np.abs(ref.refine_logit.numpy()).max() > 1e-2  # the head is not trivially zero


@pytest.mark.parametrize("overrides", [dict(), dict(H_window=8)])
def test_mlx_incremental_decoding_matches_torch_full(overrides):
    tm = _torch_model(**overrides)
    mm = mlx_hrgc.from_torch(tm)
    ids, _ = _inputs(tm.cfg, T=32)
    with torch.no_grad():
        ref = tm(ids).logits.numpy()
    cache = mm.new_cache(batch=2, max_len=40)
    parts = [mm(mx.array(ids[:, :12].numpy()), cache=cache).logits]
    for t in range(12, 32):
        parts.append(mm(mx.array(ids[:, t : t + 1].numpy()), cache=cache).logits)
    assert np.abs(np.array(mx.concatenate(parts, axis=1)) - ref).max() <= PARITY_ATOL
    cache.truncate(20)
    tail = mm(mx.array(ids[:, 20:].numpy()), cache=cache).logits
    assert np.abs(np.array(tail) - ref[:, 20:]).max() <= PARITY_ATOL


def test_safetensors_conversion_both_ways(tmp_path):
    tm = _torch_model(byte_features=True)
    ids, kw = _inputs(tm.cfg)
    with torch.no_grad():
        ref = tm(ids, **kw).logits.numpy()
    # torch -> file -> MLX
    p1 = tmp_path / "torch.safetensors"
    save_weights(tm, p1)
    mm = mlx_hrgc.load_model_mlx(p1)
    assert np.abs(np.array(mm(mx.array(ids.numpy()), **_mx(kw)).logits) - ref).max() <= PARITY_ATOL
    # MLX -> file -> torch, bit-exact weights
    p2 = tmp_path / "mlx.safetensors"
    mlx_hrgc.save_weights_mlx(mm, p2)
    back = load_model_file(p2)
    for (n, a), (n2, b) in zip(sorted(tm.state_dict().items()), sorted(back.state_dict().items()), strict=True):
        assert n == n2 and torch.equal(a, b), n
    with pytest.raises(WeightsError, match="no such weights file"):
        mlx_hrgc.load_model_mlx(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("mode", ["one_step", "full"])
def test_mlx_gradients_match_torch(mode):
    import mlx.nn as nn
    import torch.nn.functional as F

    tm = _torch_model(grad_mode=mode).train()
    mm = mlx_hrgc.from_torch(tm)
    ids, _ = _inputs(tm.cfg, T=24)
    tm.zero_grad()
    out = tm(ids[:, :-1])
    F.cross_entropy(out.logits.flatten(0, 1), ids[:, 1:].flatten()).backward()

    x, y = mx.array(ids[:, :-1].numpy()), mx.array(ids[:, 1:].numpy())

    def loss_fn(model):
        return nn.losses.cross_entropy(model(x).logits, y, reduction="mean")

    _, grads = nn.value_and_grad(mm, loss_fn)(mm)
    from mlx.utils import tree_flatten

    g = dict(tree_flatten(grads))
    assert tm.cfg.recurrent_gates  # the tiny preset's gates, opened by _torch_model's noise
    for name in ("L.layers.0.mlp.down.weight", "H.layers.0.attn.qkv.weight", "embed.weight",
                 "gate_LL", "gate_LH", "gate_HH"):
        ref = dict(tm.named_parameters())[name].grad.numpy()
        assert np.abs(np.array(g[name]) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), name


@pytest.mark.parametrize("group,symmetric", [(32, True), (64, False)])
def test_mlx_quantized_linear_runs_the_exported_4bit_weights(group, symmetric):
    import mlx.nn as nn

    tm = _torch_model(qat_bits=4, qat_group=group, qat_symmetric=symmetric)
    mm = mlx_hrgc.quantize_mlx_model(mlx_hrgc.from_torch(tm))
    assert isinstance(mm.L.layers[0].mlp.down, nn.QuantizedLinear)
    assert isinstance(mm.refine_head, nn.Linear)  # heads and embeddings stay fp
    ids, _ = _inputs(tm.cfg)
    with torch.no_grad():
        ref = tm(ids).logits.numpy()  # the QAT forward == the packed weights
    out = np.array(mm(mx.array(ids.numpy())).logits)
    assert np.abs(out - ref).max() <= PARITY_ATOL
