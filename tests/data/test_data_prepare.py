"""`prepare` end to end: real stdlib files + a real git history + the PR example."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hrm_lsp.cli import main
from hrm_lsp.data import Dataset, PrepareError, PrepareOptions, prepare
from hrm_lsp.data.documents import Document
from hrm_lsp.data.pipeline import Preparer, assign_splits
from hrm_lsp.data.shards import ShardState, ShardWriter
from hrm_lsp.tokenizer import load_tokenizer


def _work_docs(out: Path, split: str) -> list[dict]:
    docs = []
    for name in (f"{split}.jsonl", f"{split}.refine.jsonl"):
        p = out / "work" / name
        if p.exists():
            docs += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
    return docs


def test_manifest_and_counts(prepared_spm) -> None:
    out, m = prepared_spm
    assert m["format"] == "hrm-lsp-data" and m["tokenizer"]["kind"] == "spm"
    assert m["tokenizer"]["vocab_size"] == 700
    assert m["tokenizer"]["sha256"] == load_tokenizer(out / "tokenizer.model").sha256
    kinds = [s["kind"] for s in m["sources"]]
    assert kinds == ["git", "git", "pr", "dir", "dir"]  # history and PRs before snapshots
    assert "not a git repository" in m["sources"][0]["error"]  # the stdlib copy has no history
    git_src = m["sources"][1]
    assert git_src["commits"] == 6 and git_src["documents"] >= 6
    assert m["counts"]["skipped"]["generated"] >= 1 and m["counts"]["skipped"]["binary"] >= 1
    # Plans of every intent come from the history and the PR example.
    assert all(m["counts"]["plans"].get(i, 0) > 0 for i in ("FIX", "ADD", "REFACTOR"))
    assert m["counts"]["kinds"]["refine"] == 12
    assert m["counts"]["kinds"]["git"] >= 5 and m["counts"]["kinds"]["pr"] == 4
    for info in m["splits"].values():
        n = sum(sh["tokens"] for sh in info["shards"])
        assert n == info["tokens"]
        for sh in info["shards"]:
            assert (out / sh["file"]).stat().st_size == 2 * sh["tokens"]  # uint16
    assert m["splits"]["train"]["tokens"] > m["splits"]["val"]["tokens"] > 0
    assert m["splits"]["test"]["tokens"] > 0
    assert m["dtype"] == "uint16"


def test_splits_never_share_a_unit_or_code(prepared_spm) -> None:
    out, m = prepared_spm
    units = {s: {d["unit"] for d in _work_docs(out, s)} for s in ("train", "val", "test")}
    assert all(units.values())
    assert not units["train"] & units["val"] and not units["train"] & units["test"]
    assert not units["val"] & units["test"]
    # Splits are by package directory here (few sources), and by repository for the PR repos.
    assert any(u.endswith("/strings") for s in units.values() for u in s)
    normalized = {}
    for s in ("train", "val", "test"):
        for d in _work_docs(out, s):
            if d["k"] != "refine":
                key = " ".join(d["code"].split())
                assert key not in normalized, f"duplicate across {normalized.get(key)} and {s}"
                normalized[key] = s


def test_assign_splits_is_deterministic_and_fills_held_out_splits() -> None:
    units = [f"repo/pkg{i}" for i in range(40)]
    a = assign_splits(units, 0.1, 0.1)
    assert a == assign_splits(list(reversed(units)), 0.1, 0.1)
    assert set(a.values()) == {"train", "val", "test"}
    three = assign_splits(["a", "b", "c"], 0.05, 0.05)
    assert sorted(three.values()) == ["test", "train", "val"]
    assert set(assign_splits(["only"], 0.05, 0.05).values()) == {"train"}


def test_shards_decode_to_the_documents(prepared_spm) -> None:
    out, m = prepared_spm
    ds = Dataset(out)
    tok = ds.tokenizer
    docs = _work_docs(out, "val")
    assert ds.num_documents("val") == len(docs)
    for i, d in enumerate(docs):
        doc = Document.from_json(d)
        ids = ds.document("val", i)
        assert tok.decode(ids) == doc.text()
        assert ids[0] == tok.id_of("<PLAN>") and ids[-1] == tok.eot_id
    refine = [Document.from_json(d) for s in ("train", "val", "test") for d in _work_docs(out, s)
              if d["k"] == "refine"]
    assert len(refine) == 12
    for r in refine:
        assert r.code != r.fixed and r.diagnostics
        first = r.diagnostics.splitlines()[0]
        line, col, msg = first.split(":", 2)
        assert int(line) >= 1 and int(col) >= 1 and msg.strip()
        text = r.text()
        assert "<VALIDATE><DIAG>" in text and text.endswith(r.fixed + "<VALIDATE><SYNTAX_OK><EOT>")


def test_byte_mode_with_worker_processes(prepared_byte, go_subset: Path) -> None:
    out, m = prepared_byte
    tok = load_tokenizer(out / "tokenizer.json")
    assert tok.kind == "byte" and m["tokenizer"]["sha256"] == tok.sha256
    assert sum(tok.table.rare) > 0  # the table was fitted on the train split
    assert m["options"]["refine_examples"] == 6 and m["counts"]["kinds"]["refine"] == 6
    ds = Dataset(out)
    # Bytes are bytes: the code of a snapshot document is in the shard verbatim.
    doc = Document.from_json(_work_docs(out, "train")[0])
    ids = ds.document("train", 0)
    assert bytes(ids[ids < 256].astype(np.uint8)).decode() == "".join(
        p for p in doc.parts() if not hasattr(p, "name"))


def test_resume_after_an_interrupted_encode(tmp_path: Path, go_subset: Path, prepared_byte) -> None:
    ref_out, ref = prepared_byte
    opts = PrepareOptions(sources=(str(go_subset),), tokenizer="byte", refine_examples=6)
    out = tmp_path / "resumed"
    p = Preparer(opts, out, workers=1)
    n = len(p.plan_sources())
    p.collect()
    split = p.split(n)
    p.refine(split)
    tok = p.train_tokenizer(split)
    # Encode part of train, checkpoint, then write more that never gets checkpointed (a crash).
    w = ShardWriter(out, "train", np.uint16)
    docs = list(p._split_docs("train"))
    for line in docs[:5]:
        w.add(np.asarray(tok.encode_parts(Document.from_json(json.loads(line)).parts())))
    (out / "work" / "encode-train.json").write_text(json.dumps(w.checkpoint().to_json()))
    w.add(np.arange(1000) % 200 + 1)
    w._fh.flush()
    messages = []
    m = Preparer(opts, out, workers=1, echo=messages.append).run()
    assert any("resuming" in s for s in messages)
    for split in ("train", "val", "test"):
        a = [(out / sh["file"]).read_bytes() for sh in m["splits"][split]["shards"]]
        b = [(ref_out / sh["file"]).read_bytes() for sh in ref["splits"][split]["shards"]]
        assert a == b
    assert m["tokenizer"]["sha256"] == ref["tokenizer"]["sha256"]
    state = ShardState.from_json(json.loads((out / "work" / "encode-train.json").read_text()))
    assert state.docs_done == 5


def test_output_directory_rules(tmp_path: Path, go_subset: Path) -> None:
    small = tmp_path / "src"
    shutil.copytree(go_subset / "container", small)
    out = tmp_path / "out"
    opts = dict(tokenizer="byte", refine_examples=0)
    prepare([small], out, workers=1, **opts)
    with pytest.raises(PrepareError, match="already holds prepared data"):
        prepare([small], out, workers=1, **opts)
    again = prepare([small], out, workers=1, force=True, **opts)
    assert again["splits"]["train"]["documents"] > 0
    # an unfinished preparation with other options is not silently mixed
    (out / "manifest.json").unlink()
    with pytest.raises(PrepareError, match="different options"):
        prepare([small], out, workers=1, tokenizer="byte", refine_examples=0, chunk_bytes=3000)
    other = tmp_path / "notempty"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(PrepareError, match="not empty"):
        prepare([small], other, workers=1, **opts)
    assert (other / "precious.txt").read_text() == "keep me"


def test_bad_sources_are_reported_and_skipped(tmp_path: Path, go_subset: Path) -> None:
    not_repo = tmp_path / "plain"
    shutil.copytree(go_subset / "errors", not_repo)
    empty_repo = tmp_path / "emptyrepo"
    empty_repo.mkdir()
    from data_helpers import git

    git(empty_repo, "init", "-q")
    messages: list[str] = []
    m = prepare([not_repo, empty_repo, tmp_path / "missing"], tmp_path / "out", workers=1,
                history=True, tokenizer="byte", refine_examples=0, echo=messages.append)
    failed = [(s["kind"], Path(s["path"]).name) for s in m["sources"] if s["error"]]
    assert failed == [("git", "plain"), ("git", "emptyrepo"), ("git", "missing"), ("dir", "missing")]
    errors = {Path(s["path"]).name: s["error"] for s in m["sources"] if s["error"]}
    assert "not a git repository" in errors["plain"]
    assert "no commits" in errors["emptyrepo"]
    assert "no such file" in errors["missing"]
    assert m["splits"]["train"]["documents"] > 0  # the snapshot of plain/ still counts
    assert sum("skipped source" in s for s in messages) == len(failed)
    with pytest.raises(PrepareError, match="no source could be read"):
        prepare([tmp_path / "missing"], tmp_path / "out2", workers=1, tokenizer="byte")
    with pytest.raises(ValueError, match="nothing to prepare"):
        prepare([], tmp_path / "out3", workers=1)


def test_cli_prepare(tmp_path: Path, go_subset: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(main, ["prepare", str(go_subset / "sort"), str(go_subset / "path"), "--out", str(out),
                             "--tokenizer", "byte", "--refine-examples", "0", "--workers", "1",
                             "--set", "chunk_bytes=3000"])
    assert r.exit_code == 0, r.output
    assert "split train" in r.output and "skipped: generated" in r.output  # sort/zsort*.go
    m = json.loads((out / "manifest.json").read_text())
    assert m["options"]["chunk_bytes"] == 3000
    r = runner.invoke(main, ["prepare", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "nothing to prepare" in r.output
    r = runner.invoke(main, ["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "y"),
                             "--tokenizer", "byte"])
    assert r.exit_code == 1 and "no such file or directory" in r.output
    r = runner.invoke(main, ["prepare", str(go_subset), "--out", str(out), "--set", "bogus=1"])
    assert r.exit_code == 2 and "unknown key bogus" in r.output


def test_tokenizer_from_reuses_a_model_tokenizer(tmp_path: Path, go_subset: Path, prepared_spm) -> None:
    """Fine-tuning data must be encoded with the model's tokenizer, not a new one."""
    src = tmp_path / "mine"
    shutil.copytree(go_subset / "path", src)
    m = prepare([src], tmp_path / "ft", workers=1, tokenizer="byte", refine_examples=0,
                tokenizer_from=str(prepared_spm[0]))
    assert m["tokenizer"]["kind"] == "spm"
    assert m["tokenizer"]["sha256"] == prepared_spm[1]["tokenizer"]["sha256"]
    assert Dataset(tmp_path / "ft").tokenizer.sha256 == prepared_spm[1]["tokenizer"]["sha256"]
    with pytest.raises(PrepareError, match="--tokenizer-from"):
        prepare([src], tmp_path / "ft2", workers=1, tokenizer_from=str(tmp_path))
