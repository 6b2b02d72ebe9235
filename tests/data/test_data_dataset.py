"""Dataset.batches: shapes, exact resume, ranks, FIM (PSM and SPM), finite eval passes, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hrm_lsp.data import Dataset, DatasetError


def _take(it, n):
    out = []
    for b in it:
        out.append(b)
        if len(out) == n:
            break
    return out


def test_batches_shape_and_exact_resume(prepared_spm) -> None:
    ds = Dataset(prepared_spm[0])
    kw = dict(batch_size=3, seq_len=48, seed=7, fim_rate=0.5)
    first = _take(ds.batches("train", **kw), 12)
    assert all(b.ids.shape == (3, 49) and b.ids.dtype == np.int32 for b in first)
    assert [b.position for b in first] == list(range(1, 13))
    assert int(max(b.ids.max() for b in first)) < ds.tokenizer.vocab_size
    # rows overlap by one token: row i ends where row i+1 starts
    assert first[0].ids[0, -1] == first[0].ids[1, 0]
    # resuming from a saved position gives the very same batches, in a fresh Dataset too
    again = _take(Dataset(prepared_spm[0]).batches("train", start=first[4].position, **kw), 7)
    for a, b in zip(first[5:], again, strict=True):
        assert a.index == b.index and (a.ids == b.ids).all()
    other_seed = _take(ds.batches("train", **{**kw, "seed": 8}), 1)[0]
    assert not (other_seed.ids == first[0].ids).all()


def test_ranks_split_the_global_batch(prepared_spm) -> None:
    ds = Dataset(prepared_spm[0])
    kw = dict(seq_len=32, seed=1, fim_rate=0.3)
    whole = _take(ds.batches("train", batch_size=4, **kw), 3)
    r0 = _take(ds.batches("train", batch_size=2, rank=0, world_size=2, **kw), 3)
    r1 = _take(ds.batches("train", batch_size=2, rank=1, world_size=2, **kw), 3)
    for w, a, b in zip(whole, r0, r1, strict=True):
        assert (np.concatenate([a.ids, b.ids]) == w.ids).all()
    with pytest.raises(DatasetError, match="rank"):
        next(ds.batches("train", rank=2, world_size=2))


def _fim_parts(tok, ids: np.ndarray):
    fp, fs, fm = (tok.id_of(s) for s in ("<FIM_PREFIX>", "<FIM_SUFFIX>", "<FIM_MIDDLE>"))
    ids = list(ids)
    i_fp, i_fs, i_fm = ids.index(fp), ids.index(fs), ids.index(fm)
    close = ids.index(tok.id_of("</PLAN>"))
    if i_fp < i_fs:  # PSM
        prefix, suffix = ids[i_fp + 1:i_fs], ids[i_fs + 1:i_fm]
        mode = "psm"
    else:  # SPM
        suffix, prefix = ids[i_fs + 1:i_fp], ids[i_fp + 1:i_fm]
        mode = "spm"
    plan = ids[i_fm + 1:close + 1]
    middle = ids[close + 1:-1]
    return mode, plan, prefix, middle, suffix


def test_fim_documents_reassemble_to_the_original(prepared_spm) -> None:
    ds = Dataset(prepared_spm[0])
    tok = ds.tokenizer
    sp = ds.split("train")
    modes = set()
    key = ("train", 3, 1.0, 0.5)
    ep = ds._epoch(sp, key, 0)
    checked = 0
    for j in range(len(ep.order)):
        d = int(ep.order[j])
        orig = sp.doc(d)
        got = ds._stream_doc(sp, key, 0, j)
        if not ep.fim[j]:
            assert (got == orig).all()
            # only refinement documents (or ones without code) stay whole at fim_rate=1
            assert tok.id_of("<VALIDATE>") in orig or len(orig) < 8
            continue
        mode, plan, prefix, middle, suffix = _fim_parts(tok, got)
        modes.add(mode)
        close = list(orig).index(tok.id_of("</PLAN>"))
        assert plan == list(orig[:close + 1])
        assert prefix + middle + suffix == list(orig[close + 1:-1])
        assert got[-1] == tok.eot_id and len(got) == len(orig) + 3
        checked += 1
    assert checked > 20 and modes == {"psm", "spm"}
    # fim_spm_rate=0: prefix-suffix-middle only
    key0 = ("train", 3, 1.0, 0.0)
    ep0 = ds._epoch(sp, key0, 0)
    j = int(np.flatnonzero(ep0.fim)[0])
    assert _fim_parts(tok, ds._stream_doc(sp, key0, 0, j))[0] == "psm"


def test_eval_split_is_one_finite_pass(prepared_spm) -> None:
    ds = Dataset(prepared_spm[0])
    tok = ds.tokenizer
    batches = list(ds.batches("val", batch_size=2, seq_len=64))
    tokens = ds.num_tokens("val")
    rows = -((1 - tokens) // 64)  # ceil((tokens - 1) / 64)
    assert len(batches) == -(-rows // 2)
    stream = np.concatenate([np.concatenate([b.ids[0, :-1], b.ids[1, :-1]]) for b in batches])
    assert (stream == tok.eot_id).sum() >= ds.num_documents("val")
    two = list(ds.batches("val", batch_size=2, seq_len=64, epochs=2))
    assert len(two) >= 2 * len(batches) - 1


def test_byte_features_on_batches(prepared_byte) -> None:
    ds = Dataset(prepared_byte[0])
    b = next(ds.batches("train", batch_size=2, seq_len=300, fim_rate=0.5))
    f = ds.tokenizer.features(b.ids)
    assert f["nibble"].shape == b.ids.shape and f["acc"].shape == b.ids.shape
    assert f["nibble"].max() <= 16 and f["acc"].dtype == np.uint8


def test_bad_data_directories(prepared_byte, tmp_path: Path) -> None:
    src = prepared_byte[0]
    with pytest.raises(DatasetError, match="no manifest.json"):
        Dataset(tmp_path)
    bad = tmp_path / "copy"
    shutil.copytree(src, bad, ignore=shutil.ignore_patterns("work"))
    m = json.loads((bad / "manifest.json").read_text())
    with pytest.raises(DatasetError, match="unknown split"):
        Dataset(bad).split("holdout")
    # a truncated shard
    shard = bad / m["splits"]["val"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DatasetError, match="truncated"):
        Dataset(bad).split("val")
    # a tokenizer that is not the one the shards were encoded with
    from hrm_lsp.tokenizer.byte import ByteTokenizer

    (bad / "tokenizer.json").write_bytes(ByteTokenizer().to_bytes())
    with pytest.raises(DatasetError, match="does not match the manifest"):
        Dataset(bad)
    (bad / "manifest.json").write_text("{")
    with pytest.raises(DatasetError, match="unreadable manifest"):
        Dataset(bad)
    # an unfinished preparation says how to resume
    (bad / "manifest.json").unlink()
    (bad / "work").mkdir()
    with pytest.raises(DatasetError, match="resume"):
        Dataset(bad)


def test_empty_split_is_a_clear_error(tmp_path: Path, go_subset: Path) -> None:
    from hrm_lsp.data import prepare

    src = tmp_path / "one"
    shutil.copytree(go_subset / "errors", src)
    out = tmp_path / "d"
    prepare([src], out, workers=1, tokenizer="byte", refine_examples=0)
    ds = Dataset(out)
    assert ds.num_documents("train") > 0 and ds.num_documents("val") == 0
    with pytest.raises(DatasetError, match="empty"):
        next(ds.batches("val"))
