"""Dataset.batches: shapes, exact resume, ranks, FIM (task-aligned rows, and the per-document
mode in PSM and SPM), finite eval passes, errors."""

from __future__ import annotations

import json
import re
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
    # plain rows overlap by one token: row i ends where row i+1 starts
    plain = _take(ds.batches("train", **{**kw, "fim_rate": 0.0}), 1)[0]
    assert plain.ids[0, -1] == plain.ids[1, 0]
    # resuming from a saved position gives the very same batches, in a fresh Dataset too
    again = _take(Dataset(prepared_spm[0]).batches("train", start=first[4].position, **kw), 7)
    for a, b in zip(first[5:], again, strict=True):
        assert a.index == b.index and (a.ids == b.ids).all()
    other_seed = _take(ds.batches("train", **{**kw, "seed": 8}), 1)[0]
    assert not (other_seed.ids == first[0].ids).all()


def test_worker_processes_build_the_same_batches(prepared_spm) -> None:
    """batches(workers=N) builds them in spawned processes: the very same batches, in order,
    from any start and for a finite pass; closing the iterator stops the workers."""
    ds = Dataset(prepared_spm[0])
    kw = dict(batch_size=3, seq_len=48, seed=7, fim_rate=0.9)
    here = _take(ds.batches("train", **kw), 9)
    it = ds.batches("train", workers=2, **kw)
    there = _take(it, 9)
    it.close()
    assert [b.index for b in there] == list(range(9))
    for a, b in zip(here, there, strict=True):
        assert (a.ids == b.ids).all()
    later = _take(ds.batches("train", start=5, workers=1, **kw), 2)
    assert [b.index for b in later] == [5, 6] and (later[0].ids == here[5].ids).all()
    one_pass = list(ds.batches("val", batch_size=2, seq_len=32, fim_rate=0.0))
    assert [b.ids.tolist() for b in ds.batches("val", batch_size=2, seq_len=32, workers=2)] == \
        [b.ids.tolist() for b in one_pass]
    with pytest.raises(DatasetError, match="workers"):
        next(ds.batches("train", workers=-1))


def test_a_batch_no_worker_delivers_is_an_error_not_a_hang(prepared_spm, monkeypatch) -> None:
    import hrm_lsp.data.dataset as dataset

    monkeypatch.setattr(dataset, "WORKER_TIMEOUT_S", 1e-4)  # no worker is that quick
    with pytest.raises(DatasetError, match="batch 0: no worker process delivered it"):
        next(Dataset(prepared_spm[0]).batches("train", batch_size=2, seq_len=32, workers=1))


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
    key = ("train", 3, 1.0, 0.5, "document")
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
    key0 = ("train", 3, 1.0, 0.0, "document")
    ep0 = ds._epoch(sp, key0, 0)
    j = int(np.flatnonzero(ep0.fim)[0])
    assert _fim_parts(tok, ds._stream_doc(sp, key0, 0, j))[0] == "psm"


def test_eval_split_is_one_finite_pass(prepared_spm) -> None:
    ds = Dataset(prepared_spm[0])
    tok = ds.tokenizer
    batches = list(ds.batches("val", batch_size=2, seq_len=64))
    # The stream holds the documents without their document-level plans (aligned mode).
    tokens = ds.num_tokens("val") - int(ds.split("val").body_start().sum())
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
    # Split by repository: one source is one unit, so val and test stay empty (the default,
    # split_by=auto, would hold a package or file of it out instead).
    prepare([src], out, workers=1, tokenizer="byte", refine_examples=0, split_by="repo")
    ds = Dataset(out)
    assert ds.num_documents("train") > 0 and ds.num_documents("val") == 0
    with pytest.raises(DatasetError, match="empty"):
        next(ds.batches("val"))


# --- task-aligned FIM (the default mode) --------------------------------------------------


def _aligned_parts(tok, row: list[int]):
    """(order, prefix, plan, middle, suffix) ids of an aligned FIM row, or None if plain."""
    fp, fs, fm = (tok.id_of(s) for s in ("<FIM_PREFIX>", "<FIM_SUFFIX>", "<FIM_MIDDLE>"))
    if fm not in row:
        return None
    i_fp, i_fs, i_fm = row.index(fp), row.index(fs), row.index(fm)
    assert row[0] in (fp, fs)
    order = "spm" if row[0] == fs else "psm"
    prefix = row[i_fp + 1:i_fm] if order == "spm" else row[i_fp + 1:i_fs]
    suffix = row[i_fs + 1:i_fp] if order == "spm" else row[i_fs + 1:i_fm]
    rest = row[i_fm + 1:]
    plan: list[int] = []
    if rest and rest[0] == tok.id_of("<PLAN>"):
        close = rest.index(tok.id_of("</PLAN>"))
        plan, rest = rest[:close + 1], rest[close + 1:]
    middle = rest[:rest.index(tok.eot_id)]
    return order, prefix, plan, middle, suffix


def test_aligned_fim_rows_are_mostly_spm_fim_of_the_code_they_cover(prepared_byte) -> None:
    ds = Dataset(prepared_byte[0])
    tok = ds.tokenizer
    kw = dict(batch_size=4, seq_len=256, seed=3, fim_rate=0.9)
    batches = _take(ds.batches("train", **kw), 15)
    assert all(b.ids.shape == (4, 257) for b in batches)
    codes = [tok.decode(ds.document("train", d).tolist())
             for d in range(ds.num_documents("train"))]
    rows = [r for b in batches for r in b.ids.tolist()]
    parts = [_aligned_parts(tok, r) for r in rows]
    fim = [p for p in parts if p is not None]
    # Rows that start in a refinement document stay plain (the test data has a few whole-file
    # ones); of the others at least 80% are FIM examples.
    sp, key = ds.split("train"), ("train", 3, 0.9, 0.9, "aligned")
    refine = {int(d) for d in np.flatnonzero(sp.plan_end() < 0)}

    def doc_of(row: int) -> int:
        e, j, _ = ds._locate(sp, key, row * 256)
        return int(ds._epoch(sp, key, e).order[j])

    code_rows = [i for i in range(len(rows)) if doc_of(i) not in refine]
    assert len(code_rows) >= 20
    assert sum(parts[i] is not None for i in code_rows) >= 0.8 * len(code_rows)
    assert sum(p[0] == "spm" for p in fim) >= 0.7 * len(fim)
    for _order, prefix, plan, middle, suffix in fim:
        assert middle, "an empty middle"
        pre, mid, suf = (tok.decode(x) for x in (prefix, middle, suffix))
        # Byte ids round-trip exactly: the pieces join to a span of one real document.
        assert any(pre + mid + suf in c for c in codes)
        if "\n" not in mid:
            assert not plan  # never a plan before a single-line middle
    # Middles of several shapes: single-line ones and multi-line ones.
    mids = [tok.decode(p[3]) for p in fim]
    assert sum("\n" not in m for m in mids) >= 0.3 * len(mids)
    assert any(m.count("\n") >= 2 for m in mids)
    # Resuming gives the same rows; the plain stream carries no document-level plans.
    again = _take(Dataset(prepared_byte[0]).batches("train", start=7, **kw), 3)
    assert all((a.ids == b.ids).all() for a, b in zip(batches[7:10], again, strict=True))
    plain = _take(ds.batches("train", batch_size=4, seq_len=256, seed=3, fim_rate=0.0), 10)
    stream = np.concatenate([b.ids[:, :-1].reshape(-1) for b in plain])
    starts = np.flatnonzero(stream == tok.id_of("<PLAN>"))
    key0 = ("train", 3, 0.0, 0.9, "aligned")
    for pos in starts.tolist():  # only refinement documents keep their plans
        e, j, _ = ds._locate(sp, key0, pos)
        assert int(ds._epoch(sp, key0, e).order[j]) in refine
    with pytest.raises(DatasetError, match="fim_mode"):
        next(ds.batches("train", fim_mode="random"))


def test_aligned_plans_are_the_functions_doc_comment(prepared_spm) -> None:
    from hrm_lsp.tokenizer.layout import comment_plan_ids

    ds = Dataset(prepared_spm[0])
    tok = ds.tokenizer
    n_plans = n_whole = 0
    for b in _take(ds.batches("train", batch_size=8, seq_len=256, seed=0, fim_rate=1.0), 40):
        for row in b.ids.tolist():
            p = _aligned_parts(tok, row)
            if p is None or not p[2]:
                continue
            n_plans += 1
            plan_text = tok.decode(p[2])
            assert plan_text.startswith("<PLAN><INTENT:") and plan_text.endswith("</PLAN>")
            prefix = tok.decode(p[1])
            # The doc comment of the function whose body is the middle sits in the prefix
            # (or, for a commit plan, the plan names the function).
            assert "\n" in tok.decode(p[3])
            assert prefix.rstrip().endswith("{")
            if "<INTENT:FIX>" in plan_text or "<INTENT:REFACTOR>" in plan_text:
                continue  # a commit's plan for the function it names
            doc, whole = _doc_above(prefix)  # the prefix may have lost the comment's start
            assert doc, prefix[-300:]
            last = re.split(r"[.;:]\s+", doc.splitlines()[-1])[-1].strip().rstrip(".;:")
            assert last in plan_text
            if whole:  # the plan is exactly the one inference builds from that comment
                assert p[2] == comment_plan_ids(tok, doc)
                n_whole += 1
    assert n_plans >= 1 and n_whole >= 1


def _doc_above(prefix: str) -> tuple[str, bool]:
    """(the // comment block right above the last ``func`` line of ``prefix``, whether the
    whole block is in the prefix: a full line above it)."""
    lines = prefix.splitlines()
    i = max(k for k, line in enumerate(lines) if line.startswith("func "))
    doc = []
    while i > 0 and lines[i - 1].startswith("//"):
        i -= 1
        doc.insert(0, lines[i][2:].removeprefix(" "))
    return "\n".join(doc), i >= 2


def test_middle_kinds_on_real_go(stdlib_src: Path) -> None:
    from hrm_lsp.data.middles import choose_middle

    text = (stdlib_src / "strings" / "compare.go").read_text(encoding="utf-8")
    seen: dict[str, list] = {}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        for kind in ("line_rest", "statement", "block", "body", "span"):
            m = choose_middle(text, rng, 400, {kind: 1.0})
            assert m is not None and 0 < m.end - m.start <= 400
            seen.setdefault(m.kind, []).append(m)
    for m in seen["line_rest"]:
        assert "\n" not in text[m.start:m.end] and text[m.end:m.end + 1] in ("\n", "")
    for m in seen["body"]:
        before = text[:m.start].rstrip(" \t")
        assert before.endswith("{\n") and text[m.end:].lstrip(" \t\n").startswith("}")
    assert any(m.func_name == "Compare" and "Compare returns an integer" in m.func_doc
               for m in seen["body"])
    assert all(text[m.start:m.end].strip() == text[m.start:m.end] for m in seen["statement"])


def test_training_and_inference_share_the_prompt_layout(prepared_byte) -> None:
    from hrm_lsp.inference.prompt import fim_prompt
    from hrm_lsp.tokenizer.layout import fim_context, fim_example

    tok = Dataset(prepared_byte[0]).tokenizer
    prefix, suffix = "func f() {\n\treturn ", "\n}\n"
    p = fim_prompt(tok, prefix, suffix, budget=200)
    assert p.ids == fim_context(tok, tok.encode(prefix), tok.encode(suffix), "spm")
    ex = fim_example(tok, tok.encode(prefix), tok.encode("1"), tok.encode(suffix))
    # No plan: the middle's code follows <FIM_MIDDLE> at once, where inference starts decoding.
    assert ex[:len(p.ids)] == p.ids and ex[len(p.ids):] == [*tok.encode("1"), tok.eot_id]
