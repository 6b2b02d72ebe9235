"""Held-out code of one repository (fine-tuning on your own code), and the tokenizer it reuses.

Real stdlib packages in real git repositories built here: one package (held out by file),
several packages (held out by package, never the one that is most of the code), one file
(held out by document). Then ``--tokenizer-from`` with a ``.gguf`` model file, a run
directory and a checkpoint, and the vocabulary-size hints of SentencePiece training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from data_helpers import git

from hrm_lsp.cli import main
from hrm_lsp.data import PrepareError, prepare
from hrm_lsp.data.pipeline import (
    MAX_HELDOUT_SHARE,
    choose_holdout,
    describe_holdout,
    reuse_tokenizer,
)
from hrm_lsp.paths import default_model_path
from hrm_lsp.tokenizer import TokenizerError


def repo_of(stdlib_src: Path, root: Path, files: dict[str, str]) -> Path:
    """A git repository: ``files`` maps repository paths to stdlib paths; two commits."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    items = sorted(files.items())
    for part in (items[: len(items) // 2 or 1], items[len(items) // 2 or 1:]):
        if not part:
            continue
        for dest, src in part:
            (root / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(stdlib_src / src, root / dest)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"Add {', '.join(d for d, _ in part)}")
    return root


def one_package(stdlib_src: Path) -> dict[str, str]:
    return {f"{n}.go": f"strings/{n}.go" for n in ("builder", "compare", "reader", "replace", "search", "strings")}


def prepared(src: Path, out: Path, **kw) -> tuple[dict, list[str]]:
    said: list[str] = []
    m = prepare([src], out, workers=1, tokenizer="byte", refine_examples=0, history=True, echo=said.append, **kw)
    return m, said


def units_by_split(out: Path) -> dict[str, set[str]]:
    return {s: {json.loads(line)["unit"] for line in (out / "work" / f"{s}.jsonl").read_text().splitlines()}
            for s in ("train", "val", "test")}


def test_one_package_is_held_out_by_file_deterministically_and_says_so(tmp_path: Path, stdlib_src: Path):
    src = repo_of(stdlib_src, tmp_path / "strs", one_package(stdlib_src))
    m, said = prepared(src, tmp_path / "a")
    h = m["holdout"]
    assert h["by"] == "file" and "1 package" in h["reason"]
    assert all(m["splits"][s]["documents"] > 0 for s in ("train", "val", "test"))
    units = units_by_split(tmp_path / "a")
    assert units["val"] == set(h["val"]) and units["test"] == set(h["test"])
    held = set(h["val"]) | set(h["test"])
    assert held and not held & units["train"]  # a held-out file never trains, in no version
    assert all(u.endswith(".go") and u.startswith("strs/") for u in held)
    assert h["share"] <= MAX_HELDOUT_SHARE
    line = next(s for s in said if s.startswith("held out by file"))
    assert h["test"][0] in line and h["val"][0] in line and "not trained on" in line
    # Same repository, same held-out files (names decide, not the order of anything).
    m2, _ = prepared(src, tmp_path / "b")
    assert (m2["holdout"]["val"], m2["holdout"]["test"]) == (h["val"], h["test"])
    # The split is remembered: a rerun of an interrupted preparation says it again.
    (tmp_path / "a" / "manifest.json").unlink()
    said2: list[str] = []
    prepare([src], tmp_path / "a", workers=1, tokenizer="byte", refine_examples=0, history=True,
            echo=said2.append)
    assert line in said2


def test_many_packages_are_held_out_by_package_never_the_big_one(tmp_path: Path, stdlib_src: Path):
    files = {f"core/{n}.go": f"strings/{n}.go" for n in ("builder", "compare", "reader", "replace", "search", "strings")}
    for pkg, names in {"list": ("container/list/list.go",), "ring": ("container/ring/ring.go",),
                       "hex": ("encoding/hex/hex.go",), "adler": ("hash/adler32/adler32.go",),
                       "utf16": ("unicode/utf16/utf16.go",), "path": ("path/path.go", "path/match.go")}.items():
        files.update({f"{pkg}/{Path(n).name}": n for n in names})
    src = repo_of(stdlib_src, tmp_path / "multi", files)
    m, said = prepared(src, tmp_path / "out")
    h = m["holdout"]
    assert h["by"] == "package" and h["units"] == 7
    held = set(h["val"]) | set(h["test"])
    assert h["val"] and h["test"] and "multi/core" not in held  # core is most of the code
    assert held <= {f"multi/{p}" for p in ("list", "ring", "hex", "adler", "utf16", "path")}
    units = units_by_split(tmp_path / "out")
    assert units["val"] == set(h["val"]) and units["test"] == set(h["test"])
    assert "multi/core" in units["train"]
    assert any(s.startswith("held out by package (7 packages)") for s in said)


def test_one_file_is_held_out_by_document(tmp_path: Path, stdlib_src: Path):
    src = repo_of(stdlib_src, tmp_path / "one", {"strings.go": "strings/strings.go"})
    m, said = prepared(src, tmp_path / "out", chunk_bytes=2000)
    h = m["holdout"]
    assert h["by"] == "document" and "1 file" in h["reason"]
    assert all(m["splits"][s]["documents"] > 0 for s in ("train", "val", "test"))
    assert all(u.startswith("one/strings.go#") for u in h["val"] + h["test"])
    assert any(s.startswith("held out by document") for s in said)


def test_explicit_split_by_is_kept_and_too_little_code_is_said():
    # Pure function: a package that is all the code cannot be held out whole; one document cannot
    # be held out at all, and the line says so instead of naming nothing silently.
    h = choose_holdout([("r", "a.go", 100)], 0.05, 0.05)
    assert h["val"] == h["test"] == [] and "too little code" in describe_holdout(h)
    docs = [("r", f"p{i}/x.go", 1000) for i in range(40)]
    h = choose_holdout(docs, 0.05, 0.05)
    assert h["by"] == "package" and h["val"] and h["test"] and h["share"] <= MAX_HELDOUT_SHARE


def test_split_by_package_from_train_is_the_same_option(tmp_path: Path, stdlib_src: Path):
    # `prepare --split-by package` keeps whole packages: one package -> one unit -> no val.
    src = repo_of(stdlib_src, tmp_path / "strs", one_package(stdlib_src))
    m, _ = prepared(src, tmp_path / "out", split_by="package")
    assert m["holdout"] is None
    assert sum(m["splits"][s]["units"] for s in ("train", "val", "test")) == 1


# --- tokenizer reuse -------------------------------------------------------------------------


def test_tokenizer_from_a_gguf_model_file_a_run_dir_and_a_checkpoint(tmp_path: Path, stdlib_src: Path):
    from hrm_lsp.export.gguf import read_tokenizer

    shipped = default_model_path()
    assert shipped.is_file(), "the shipped model is part of the repository"
    want = read_tokenizer(shipped).sha256
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(stdlib_src / "strings" / "compare.go", src / "compare.go")
    r = CliRunner().invoke(main, ["prepare", str(src), "--out", str(tmp_path / "p"), "--workers", "1",
                                  "--refine-examples", "0", "--tokenizer-from", str(shipped)])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["tokenizer"]["sha256"] == want and m["tokenizer"]["vocab_size"] == 4096

    # A run directory holds its tokenizer; a checkpoint's is its run's; a fine-tune's model.gguf.
    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)
    (run / "tokenizer.model").write_bytes(read_tokenizer(shipped).to_bytes())
    assert reuse_tokenizer(run).sha256 == want
    assert reuse_tokenizer(run / "checkpoints" / "step-00000010").sha256 == want
    only_gguf = tmp_path / "ft"
    only_gguf.mkdir()
    shutil.copy(shipped, only_gguf / "model.gguf")
    assert reuse_tokenizer(only_gguf).sha256 == want


@pytest.mark.parametrize("content", [b"not a tokenizer at all", b"GGUF\x03\x00\x00\x00garbage"])
def test_tokenizer_from_something_else_is_a_clear_error(tmp_path: Path, content: bytes):
    bad = tmp_path / "thing.bin"
    bad.write_bytes(content)
    with pytest.raises(PrepareError) as e:
        reuse_tokenizer(bad)
    msg = str(e.value)
    assert msg.startswith("--tokenizer-from") and str(bad) in msg
    assert "expected a .gguf model file" in msg or "GGUF" in msg
    with pytest.raises(PrepareError, match="no such file or directory"):
        reuse_tokenizer(tmp_path / "absent.gguf")
    with pytest.raises(PrepareError, match="no tokenizer.model or tokenizer.json"):
        reuse_tokenizer(tmp_path)


# --- the vocabulary-size hints ---------------------------------------------------------------


def test_vocab_hints_point_the_right_way():
    from hrm_lsp.tokenizer.spm import train_spm

    # Many distinct characters (CJK in comments): the vocabulary must grow to hold them all.
    cjk = "".join(chr(0x4E00 + i) for i in range(120))
    texts = [f"// {cjk}\npackage a\n\nfunc F() int {{ return 1 }}\n"] * 20
    with pytest.raises(TokenizerError) as e:
        train_spm(texts, 300)
    need = int(str(e.value).split("at least ")[1].rstrip(")"))
    assert "use a larger --vocab" in str(e.value) and "smaller" not in str(e.value).split("(the")[1]
    assert train_spm(texts, need).vocab_size == need  # the number it names is enough
    # Too little text for the vocabulary: the fix is a smaller one.
    with pytest.raises(TokenizerError, match=r"use a smaller --vocab, at most \d+"):
        train_spm(["package a\n\nfunc F() {}\n"] * 5, 5000)


def test_code_moved_in_the_history_does_not_train_as_its_old_copy(tmp_path: Path, stdlib_src: Path):
    """Packages that lived elsewhere first (old/NAME.go, then NAME/NAME.go): the history's old
    copy of a held-out package is left out of train, else the held-out score would be memory."""
    repo = tmp_path / "moved"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    small = {"list": "container/list/list.go", "ring": "container/ring/ring.go",
             "hex": "encoding/hex/hex.go", "adler": "hash/adler32/adler32.go",
             "utf16": "unicode/utf16/utf16.go", "bits": "math/bits/bits.go"}
    for n in ("builder", "compare", "reader", "replace", "search", "strings"):
        (repo / "core").mkdir(exist_ok=True)
        shutil.copy(stdlib_src / "strings" / f"{n}.go", repo / "core" / f"{n}.go")
    (repo / "old").mkdir()
    for name, src in small.items():
        shutil.copy(stdlib_src / src, repo / "old" / f"{name}.go")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add everything")
    for name in small:
        (repo / name).mkdir()
        git(repo, "mv", f"old/{name}.go", f"{name}/{name}.go")
    git(repo, "commit", "-q", "-m", "Move each helper into its own package")
    m, said = prepared(repo, tmp_path / "out")
    h = m["holdout"]
    assert h["dropped"] >= 1 and all(m["splits"][x]["documents"] for x in ("train", "val", "test"))
    assert m["counts"]["duplicates_removed"]["copy of held-out code (moved in history)"] == h["dropped"]
    assert any("older copies of it (moved in the history) left out of train" in s for s in said)

    def lines(code: str) -> set[str]:
        return {x.strip() for x in code.splitlines() if len(x.strip()) >= 10}

    work = tmp_path / "out" / "work"
    docs = {s: [json.loads(x)["code"] for x in (work / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    held = set().union(*(lines(c) for c in docs["val"] + docs["test"]))
    for code in docs["train"]:
        own = lines(code)
        assert len(own) < 3 or len(own & held) < 0.5 * len(own), "held-out code trains as an old copy"
