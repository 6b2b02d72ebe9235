"""Export: GGUF round trip (same logits within the 4-bit tolerance), clear errors for bad
files, the CLI, and the Core ML conversion + saved package."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_hrgc import run_dir, trained_tiny
from click.testing import CliRunner

from hrm_lsp.cli import main
from hrm_lsp.export.errors import ModelFileError
from hrm_lsp.export.gguf import load_model, model_to_gguf

CODE = "package main\n\nfunc main() {\n\tprintln(\"hello\")\n}\n"


@pytest.fixture(scope="module")
def tiny(stdlib_src):
    return trained_tiny(stdlib_src)


@pytest.fixture(scope="module")
def gguf_f16(tiny, tmp_path_factory) -> Path:
    model, tok = tiny
    out = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    model_to_gguf(model, tok, out, float_type="f16")
    return out


def _logits(model, tok, text: str = CODE) -> torch.Tensor:
    ids = np.asarray(tok.encode(text), dtype=np.int64)[None]
    feats = {k: torch.from_numpy(v.astype(np.int64)) for k, v in tok.features(ids).items()}
    with torch.no_grad():
        return model(torch.from_numpy(ids), **feats).logits[0]


def test_gguf_round_trip_f32_is_exact_for_a_qat_model(tiny, tmp_path):
    model, tok = tiny
    info = model_to_gguf(model, tok, tmp_path / "m.gguf", float_type="f32")
    loaded, tok2, meta = load_model(tmp_path / "m.gguf")
    assert info.arch == meta.arch == "hrgc" and info.n_quantized == len(meta.quant["tensors"]) > 0
    assert tok2.to_bytes() == tok.to_bytes()
    # QAT trains with the exact 4-bit arithmetic that export packs: identical logits.
    assert torch.equal(_logits(loaded, tok2), _logits(model, tok))


def test_gguf_f16_embeddings_stay_within_tolerance(tiny, gguf_f16, tmp_path):
    model, tok = tiny
    ref = _logits(model, tok)
    loaded, tok2, meta = load_model(gguf_f16)
    assert meta.float_type == "f16"
    err = (_logits(loaded, tok2) - ref).abs().max().item()
    assert err < 2e-2 * ref.abs().max().item()
    # Same next-token choices everywhere.
    assert torch.equal(_logits(loaded, tok2).argmax(-1), ref.argmax(-1))
    f32 = tmp_path / "f32.gguf"
    model_to_gguf(model, tok, f32, float_type="f32")
    assert gguf_f16.stat().st_size < f32.stat().st_size


def test_gguf_of_a_float_model_matches_its_4bit_weights(tiny, tmp_path):
    from hrm_lsp.model import build_model
    from hrm_lsp.model.hrgc import Linear
    from hrm_lsp.model.quant import quantize_dequantize

    _, tok = tiny
    model = build_model(tiny[0].cfg.replace(qat_bits=0)).eval()
    model_to_gguf(model, tok, tmp_path / "f.gguf", float_type="f32")
    loaded, _, meta = load_model(tmp_path / "f.gguf")
    assert meta.quant["group"] == 32 and meta.quant["symmetric"] is True
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Linear):
                m.weight.copy_(quantize_dequantize(m.weight, 32, True))
    assert torch.allclose(_logits(loaded, tok), _logits(model, tok), atol=1e-5)


def test_gguf_uses_standard_q4_0_blocks_and_metadata(gguf_f16):
    from gguf import GGUFReader

    r = GGUFReader(gguf_f16)
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["L.layers.0.attn.qkv.weight"] == "Q4_0"
    assert types["embed.weight"] == "F16"
    assert types["refine_head.weight"] == "F32"
    keys = set(r.fields)
    for k in ("general.architecture", "hrm_lsp.model.config", "hrm_lsp.tokenizer.data",
              "hrm_lsp.checksum.sha256", "hrm_lsp.format_version", "hrm_lsp.quant"):
        assert k in keys


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    msg = str(e.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_truncated_files_are_rejected(gguf_f16, tmp_path):
    data = gguf_f16.read_bytes()
    bad = tmp_path / "bad.gguf"
    for n, what in ((0, "empty file"), (10, "truncated"), (200, "truncated"),
                    (len(data) // 2, "truncated"), (len(data) - 1, "truncated")):
        bad.write_bytes(data[:n])
        _expect_error(bad, what)


def test_corrupt_tensor_data_fails_the_checksum(gguf_f16, tmp_path):
    data = bytearray(gguf_f16.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "flip.gguf"
    bad.write_bytes(bytes(data))
    _expect_error(bad, "checksum mismatch")


def test_foreign_files_are_rejected(tmp_path, gguf_f16):
    go_file = tmp_path / "main.gguf"
    go_file.write_text(CODE)
    _expect_error(go_file, "not a GGUF model file")
    _expect_error(tmp_path / "missing.gguf", "no such")
    # A real GGUF of another architecture.
    from gguf import GGUFWriter

    other = tmp_path / "llama.gguf"
    w = GGUFWriter(str(other), "llama")
    w.add_block_count(1)
    w.add_tensor("tok_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _expect_error(other, "architecture 'llama'")
    # A future GGUF version.
    data = bytearray(gguf_f16.read_bytes())
    data[4:8] = struct.pack("<I", 9)
    future = tmp_path / "future.gguf"
    future.write_bytes(bytes(data))
    _expect_error(future, "version 9")


def test_export_cli_from_a_run_directory(tiny, tmp_path):
    model, tok = tiny
    run = run_dir(model, tok, tmp_path / "run")
    out = tmp_path / "cli.gguf"
    res = CliRunner().invoke(main, ["export", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and out.is_file()
    loaded, _, meta = load_model(out)
    assert meta.source.find("step-0000010") > 0
    assert torch.allclose(_logits(loaded, tok), _logits(model, tok), atol=2e-2)
    # Run directories load directly too (no export needed for experiments).
    direct, _, meta2 = load_model(run)
    assert meta2.format == "safetensors"
    assert torch.allclose(_logits(direct, tok), _logits(model, tok), atol=1e-5)


def test_export_cli_errors_are_one_line(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    res = CliRunner().invoke(main, ["export", str(empty), "--out", str(tmp_path / "x.gguf")])
    assert res.exit_code == 1
    assert "not a run directory" in res.output and "Traceback" not in res.output


@pytest.mark.coreml
def test_coreml_conversion_and_saved_package(tiny, tmp_path):
    ct = pytest.importorskip("coremltools")
    from hrm_lsp.export.coreml import export_coreml

    model, tok = tiny
    gguf = tmp_path / "m.gguf"
    model_to_gguf(model, tok, gguf, float_type="f16")
    info = export_coreml(gguf, tmp_path / "m.mlpackage", seq_len=32)
    assert info.path.is_dir() and (info.path / "Manifest.json").is_file()
    spec = ct.models.MLModel(str(info.path), skip_model_load=True).get_spec()
    inputs = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
    assert inputs == {"ids": [1, 32]}  # byte ids without nibble/accumulator features (tiny)
    assert {o.name for o in spec.description.output} == {"logits", "refine_logit"}
    meta = dict(spec.description.metadata.userDefined)
    assert json.loads(meta["hrm_lsp.model.config"])["d_model"] == model.cfg.d_model
    # 4-bit weights: the program holds int4 block-quantized constants.
    text = str(spec.mlProgram)
    assert "constexpr_blockwise_shift_scale" in text and "INT4" in text


def test_q8_0_embeddings_round_trip(tiny, tmp_path):
    from gguf import GGUFReader

    model, tok = tiny
    out = tmp_path / "q8.gguf"
    model_to_gguf(model, tok, out, float_type="q8_0")
    assert {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}["embed.weight"] == "Q8_0"
    loaded, tok2, meta = load_model(out)
    ref = _logits(model, tok)
    assert meta.float_type == "q8_0"
    assert (_logits(loaded, tok2) - ref).abs().max().item() < 5e-2 * ref.abs().max().item()


def test_gguf_carries_the_recurrent_gates(tmp_path):
    from hrm_lsp.model import build_model, preset
    from hrm_lsp.tokenizer.byte import ByteTokenizer

    tok = ByteTokenizer()
    torch.manual_seed(0)
    model = build_model(preset("tiny", vocab_size=tok.vocab_size, qat_bits=4)).eval()
    with torch.no_grad():
        for name, v in (("gate_LL", 0.6), ("gate_LH", -0.4), ("gate_HH", 0.8)):
            getattr(model, name).fill_(v)
    model_to_gguf(model, tok, tmp_path / "g.gguf", float_type="f32")
    loaded, _, _ = load_model(tmp_path / "g.gguf")
    assert loaded.cfg.recurrent_gates
    assert [round(getattr(loaded, n).item(), 6) for n in ("gate_LL", "gate_LH", "gate_HH")] == [
        0.6, -0.4, 0.8]
    assert torch.equal(_logits(loaded, tok), _logits(model, tok))


def test_the_shipped_ungated_model_file_still_loads_ungated():
    from hrm_lsp.model.weights import state_dict_for_export
    from hrm_lsp.paths import default_model_path

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model file in this checkout")
    model, tok, _ = load_model(path)
    if model.cfg.recurrent_gates:
        pytest.skip("the shipped model is a gated one")  # then the test above covers it
    assert not any(k.startswith("gate_") for k in state_dict_for_export(model))
    # Ungated is gates of exactly 1: the same file rebuilt with gates = 1 gives the same logits.
    from hrm_lsp.model import build_model, load_weights

    twin = build_model(model.cfg.replace(recurrent_gates=True), init=False).eval()
    load_weights(twin, state_dict_for_export(model)
                 | {g: torch.ones(1) for g in ("gate_LL", "gate_LH", "gate_HH")})
    assert torch.equal(_logits(twin, tok), _logits(model, tok))
