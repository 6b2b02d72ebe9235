"""4-bit: packing round trip, GGML byte compatibility, QAT forward == dequantized forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrm_lsp.model import build_model, preset
from hrm_lsp.model.quant import (
    QuantError,
    block_bytes,
    fake_quant,
    pack_4bit,
    quantizable,
    quantize_dequantize,
    quantize_model_weights,
    rows,
    unpack_4bit,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _weight(out_f=48, in_f=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.05
    w[0, :64] = 0.0  # an all-zero block (scale 0) must survive
    w[1, 3] = 0.9  # an outlier
    return w


@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_pack_unpack_round_trip_is_exact(group, symmetric):
    w = _weight()
    p = pack_4bit(w, group, symmetric)
    assert p.blocks.dtype == np.uint8
    assert p.blocks.shape == (48, 128 // group, block_bytes(group, symmetric))
    assert p.nbytes == 48 * 128 // 2 + 48 * (128 // group) * (2 if symmetric else 4)
    deq = unpack_4bit(p)
    # Unpacking gives exactly the values fake quantization uses in training.
    assert np.array_equal(deq, quantize_dequantize(w, group, symmetric).numpy())
    # Quantizing the dequantized weights again is a fixed point.
    assert np.array_equal(unpack_4bit(pack_4bit(torch.from_numpy(deq), group, symmetric)), deq)
    assert np.all(deq[0, :64] == 0.0)
    assert 16 >= len(np.unique(deq[5, :group]))


@pytest.mark.parametrize("symmetric,qtype", [(True, "Q4_0"), (False, "Q4_1")])
def test_group32_blocks_are_ggml_bytes(symmetric, qtype):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    w = _weight()
    t = getattr(GGMLQuantizationType, qtype)
    ref = quantize(w.numpy(), t)
    assert np.array_equal(rows(pack_4bit(w, 32, symmetric)), ref)
    assert np.array_equal(dequantize(ref, t), unpack_4bit(pack_4bit(w, 32, symmetric)))


def test_quant_errors():
    with pytest.raises(QuantError, match="not a multiple of group 32"):
        pack_4bit(torch.zeros(4, 40))
    with pytest.raises(QuantError, match="group must be 32 or 64"):
        pack_4bit(torch.zeros(4, 64), group=16)
    with pytest.raises(QuantError, match="NaN or infinite"):
        pack_4bit(torch.full((2, 32), float("nan")))
    p = pack_4bit(torch.ones(2, 32))
    bad = type(p)(p.blocks[:, :, :-1], p.shape, p.group, p.symmetric)
    with pytest.raises(QuantError, match="expected"):
        unpack_4bit(bad)


def test_fake_quant_has_straight_through_gradient():
    w = _weight().requires_grad_()
    y = fake_quant(w, 32, False)
    assert torch.equal(y.detach(), quantize_dequantize(w.detach(), 32, False))
    (y * 3).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 3.0))


@pytest.mark.parametrize("symmetric", [True, False])
def test_qat_forward_equals_dequantized_forward(symmetric):
    torch.manual_seed(0)
    qat = build_model(preset("tiny", qat_bits=4, qat_symmetric=symmetric)).eval()
    plain = build_model(preset("tiny")).eval()
    plain.load_state_dict(qat.state_dict())
    # Export path: pack every block linear, unpack, load into a model without QAT.
    names = quantizable(qat)
    assert len(names) == 8 and all("layers" in n for n in names)
    params = dict(plain.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(torch.from_numpy(unpack_4bit(pack_4bit(params[n], 32, symmetric))))
    ids = torch.randint(0, 512, (2, 30))
    with torch.no_grad():
        a, b = qat(ids), plain(ids)
        fp = build_model(preset("tiny")).eval()
        fp.load_state_dict(qat.state_dict())
        c = fp(ids)
    assert torch.equal(a.logits, b.logits)
    assert (a.logits - c.logits).abs().max() > 1e-4  # quantization does change the output
    quantize_model_weights(fp, 32, symmetric)
    with torch.no_grad():
        assert torch.equal(fp(ids).logits, a.logits)
