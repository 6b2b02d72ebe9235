"""The ONNX Runtime backend (hrm_lsp.inference.ort): the graph computes the torch model's
forward (exactly with fp32 activations, closely with the fast int8-activation default),
through prefill, single-token steps, chunked prompts after a cache and truncation; the
engine picks it on CPU, falls back to torch when it cannot run, and completes like torch."""

from __future__ import annotations

import pytest
import torch
from _tiny_hrgc import go_texts, trained_tiny

from hrm_lsp.export.errors import ModelFileError
from hrm_lsp.export.gguf import bake_qat
from hrm_lsp.inference import CompletionRequest, Engine
from hrm_lsp.inference import ort as ortmod
from hrm_lsp.inference.ort import ORTOptions, ORTRunner
from hrm_lsp.inference.session import Session, TorchRunner
from hrm_lsp.inference.types import Plan
from hrm_lsp.model import build_model, preset
from hrm_lsp.model.config import BYTE_VOCAB

pytestmark = pytest.mark.skipif(not ortmod.available(), reason="onnxruntime/onnx not importable")

EXACT = ORTOptions(accuracy_level=0, head_bits=0)
# Chunks of new positions, as sessions run them: a prompt, single tokens (the planner window
# of 8 is crossed), a chunk after a cache, then a truncation to 15 and a longer chunk.
SCHEDULE = [(0, 10), (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 19),
            (19, 23)]


def _model(baked: bool = True, **over):
    torch.manual_seed(0)
    m = build_model(preset("tiny", **over)).eval()
    with torch.no_grad():  # non-trivial norms and refinement head, so they are checked too
        for name, p in m.named_parameters():
            if name.endswith("norm.weight") or name.startswith("refine_head"):
                p.add_(0.3 * torch.randn_like(p))
            elif name.startswith("gate_"):  # open the recurrent gates (zero cuts the recurrence)
                p.fill_({"gate_LL": 0.5, "gate_LH": -0.3, "gate_HH": 0.7}[name])
    if baked:
        bake_qat(m)
    return m


def _compare(model, opts: ORTOptions, feats_fn=None) -> tuple[float, float, int, int]:
    """Run SCHEDULE (and a truncation) through torch and ORT; return (max |Δlogit|,
    max |Δrefine|, positions with the same argmax, positions)."""
    t, o = TorchRunner(model), ORTRunner(model, opts)
    ct, co = t.new_cache(64), o.new_cache(64)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (40,), generator=g).tolist()
    worst = worst_r = 0.0
    same = n = 0

    def step(a, b):
        nonlocal worst, worst_r, same, n
        feats = feats_fn(ids, a, b) if feats_fn else {}
        lt, rt = t.forward(ids[a:b], feats, ct)
        lo, ro = o.forward(ids[a:b], feats, co)
        worst = max(worst, (lt - lo).abs().max().item())
        worst_r = max(worst_r, abs(float(rt) - float(ro)))
        same += int(lt.argmax() == lo.argmax())
        n += 1

    for a, b in SCHEDULE:
        step(a, b)
    ct.truncate(15)
    co.truncate(15)
    assert co.length == 15
    step(15, 30)
    return worst, worst_r, same, n


@pytest.mark.parametrize("over", [
    dict(qat_bits=4, H_window=8),
    dict(qat_bits=4, qat_symmetric=False),
    dict(qat_bits=4, qat_group=64, d_model=128, mlp_hidden=256),
    dict(arch="gpt", qat_bits=4),
    dict(qat_bits=4, recurrent_gates=False),
], ids=["hrgc-q4_0-window", "hrgc-q4_1", "hrgc-group64", "gpt", "hrgc-ungated"])
def test_graph_equals_the_torch_forward_with_fp32_activations(over):
    model = _model(**over)
    runner = ORTRunner(model, EXACT)
    n_linears = 4 * (model.cfg.H_layers + model.cfg.L_layers)
    assert (runner.quantized_linears, runner.dense_linears) == (n_linears, 0)
    worst, worst_r, same, n = _compare(model, EXACT)
    assert worst < 1e-4 and worst_r < 1e-4
    assert same == n


def test_weights_off_the_4bit_grid_stay_fp32_and_exact():
    model = _model(qat_bits=0)
    runner = ORTRunner(model, EXACT)
    assert runner.quantized_linears == 0 and runner.dense_linears == 8
    worst, worst_r, same, n = _compare(model, EXACT)
    assert worst < 1e-4 and worst_r < 1e-4 and same == n


def test_a_model_without_qat_loaded_from_gguf_runs_4bit_kernels():
    # Export packs every model's block linears as Q4_0; after loading they lie on that grid.
    from hrm_lsp.model.quant import quantize_model_weights

    model = _model(qat_bits=0)
    quantize_model_weights(model)
    assert ORTRunner(model, EXACT).quantized_linears == 8
    worst, _, same, n = _compare(model, EXACT)
    assert worst < 1e-4 and same == n


def test_an_unbaked_qat_model_runs_its_4bit_weights():
    # torch fake-quantizes on every forward; the graph must use the same 4-bit values.
    model = _model(baked=False, qat_bits=4)
    assert ORTRunner(model, EXACT).quantized_linears == 8
    worst, _, same, n = _compare(model, EXACT)
    assert worst < 1e-4 and same == n


def test_byte_mode_features_are_inputs():
    from hrm_lsp.tokenizer.byte import ByteTokenizer

    tok = ByteTokenizer()
    model = _model(qat_bits=4, vocab_size=BYTE_VOCAB, byte_features=True)

    def feats(ids, a, b):
        import numpy as np

        f = tok.features(np.asarray(ids[:b], dtype=np.int64))
        return {k: np.ascontiguousarray(v[a:b]) for k, v in f.items()}

    worst, _, same, n = _compare(model, EXACT, feats)
    assert worst < 1e-4 and same == n


def test_fast_default_stays_close_to_torch_on_a_trained_model(stdlib_src):
    # int8 activations in the 4-bit kernels and an 8-bit output head: small, bounded
    # differences (docs/benchmarks.md has the figures for the shipped model).
    model, tok = trained_tiny(stdlib_src)
    t, o = TorchRunner(model), ORTRunner(model, ORTOptions())
    ids = tok.encode(go_texts(stdlib_src)[0])[:200]
    ct, co = t.new_cache(256), o.new_cache(256)
    pairs = [(t.forward(ids[:150], {}, ct)[0], o.forward(ids[:150], {}, co)[0])]
    pairs += [(t.forward([i], {}, ct)[0], o.forward([i], {}, co)[0]) for i in ids[150:]]
    scale = max(a.abs().max().item() for a, _ in pairs)
    worst = max((a - b).abs().max().item() for a, b in pairs)
    same = sum(int(a.argmax() == b.argmax()) for a, b in pairs)
    assert worst < 0.05 * scale
    assert same >= 0.95 * len(pairs)


def test_bad_inputs_are_clear_errors_and_the_session_recovers():
    model = _model(qat_bits=4)
    runner = ORTRunner(model, ORTOptions())
    cache = runner.new_cache(16)
    with pytest.raises(ValueError, match="token ids"):
        runner.forward([model.cfg.vocab_size], {}, cache)
    with pytest.raises(ValueError, match="exceed"):
        runner.forward(list(range(17)), {}, cache)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        runner.new_cache(model.cfg.max_seq_len + 1)
    assert cache.length == 0

    class Tok:  # the session only needs the feature window of byte tokenizers
        pass

    s = Session(model, Tok(), 16, runner)
    with pytest.raises(ValueError):
        s.sync([1, 2, model.cfg.vocab_size + 5])
    assert s.length == 0 and s.cache.length == 0
    logits, _, reused = s.sync([1, 2, 3])
    assert logits.shape == (model.cfg.vocab_size,) and reused == 0
    with pytest.raises(ValueError):
        ORTOptions(threads=0)
    with pytest.raises(ValueError):
        ORTOptions(accuracy_level=3)


SRC = '''package demo

// Sum adds the numbers.
func Sum(xs []int) int {
	total := 0
	for _, x := range xs {
		total += x
	}
	return total
}
'''


def test_engine_uses_onnx_on_cpu_and_completes_like_torch(stdlib_src):
    model, tok = trained_tiny(stdlib_src)
    auto = Engine(model, tok)
    assert auto.backend == "onnx"
    exact = Engine(model, tok, backend="onnx", ort_options=EXACT)
    ref = Engine(model, tok, backend="torch", threads=1)
    compared = 0
    for needle in ("\ttotal := 0", "range xs", "return total"):
        off = SRC.index(needle) + len(needle) // 2
        for multiline in (False, True):
            req = CompletionRequest(text=SRC, offset=off, multiline=multiline, max_tokens=24,
                                    refine=False, stages=("syntax",), time_budget_ms=60_000)
            a, b = ref.complete(req), exact.complete(req)
            assert a.text == b.text and a.plan == b.plan
            # With a given plan too: the fixture's 60 steps often end a no-plan middle at once.
            plan = Plan("ADD", "func", ())
            c, d = ref.complete_with_plan(req, plan), exact.complete_with_plan(req, plan)
            assert c.text == d.text
            compared += bool(a.text) + bool(c.text)
            auto.complete(req)  # runs; its int8 kernels may break near-ties differently
    assert compared


def test_engine_falls_back_to_torch_and_explicit_onnx_says_why(stdlib_src, monkeypatch):
    model, tok = trained_tiny(stdlib_src)
    monkeypatch.setattr(ortmod, "available", lambda: False)
    assert Engine(model, tok).backend == "torch"
    with pytest.raises(ModelFileError, match="onnx backend cannot run"):
        Engine(model, tok, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        Engine(model, tok, backend="tensorflow")
