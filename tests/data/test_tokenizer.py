"""Tokenizers on real Go source: round trips, special ids, features, files, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrm_lsp.tokenizer import Tokenizer, TokenizerError, load_tokenizer, symbols
from hrm_lsp.tokenizer.base import Special
from hrm_lsp.tokenizer.byte import ByteTokenizer, NibblePairTable, accumulate, nibbles
from hrm_lsp.tokenizer.spm import SpmTokenizer, train_spm

ODD_TEXT = ("func f() {\n\t\tx := \"<PLAN> and </DIAG> are text here\"\n}\r\n"
            "  \t \n// ▁ is SentencePiece's space marker; 😀 is astral; 日本語\n\n\n")


def real_files(stdlib_src: Path) -> list[str]:
    names = ["strings/strings.go", "unicode/utf8/utf8.go", "fmt/print.go", "strconv/quote.go",
             "unicode/utf8/utf8_test.go", "text/tabwriter/tabwriter.go"]
    return [(stdlib_src / n).read_text(encoding="utf-8") for n in names]


@pytest.fixture(scope="module")
def spm_tok(stdlib_src: Path) -> SpmTokenizer:
    texts = [(stdlib_src / "strings" / n).read_text() for n in ("strings.go", "builder.go", "reader.go")]
    return train_spm(texts, 600)


def test_byte_round_trip_on_real_go(stdlib_src: Path) -> None:
    tok = ByteTokenizer()
    for text in [*real_files(stdlib_src), ODD_TEXT]:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tok.decode(ids) == text
    assert tok.vocab_size == 256 + len(symbols.SPECIALS)
    assert tok.pad_id == 0 and tok.eot_id == 256
    assert [tok.id_of(s) for s in symbols.SPECIALS] == list(range(256, 256 + len(symbols.SPECIALS)))
    # specials in text are plain bytes; as ids they render by name
    assert 256 <= max(tok.encode_parts([Special("<PLAN>"), "x"]))
    assert all(i < 256 for i in tok.encode("<PLAN>"))
    assert tok.decode([tok.id_of("<PLAN>"), 120, tok.eot_id]) == "<PLAN>x<EOT>"


def test_spm_round_trip_and_specials(spm_tok: SpmTokenizer, stdlib_src: Path) -> None:
    tok = spm_tok
    assert tok.kind == "spm" and tok.vocab_size == 600 and tok.pad_id == 0
    assert [tok.id_of(s) for s in symbols.SPECIALS] == list(range(2, 2 + len(symbols.SPECIALS)))
    for text in [*real_files(stdlib_src), ODD_TEXT]:
        assert tok.decode(tok.encode(text)) == text
    # Merges learned across lines: a newline plus indentation is one piece somewhere.
    pieces = [tok.piece(i) for i in tok.encode((stdlib_src / "strings/strings.go").read_text())]
    assert any("\n\t" in p for p in pieces)
    # Special names written in code are not specials.
    ids = tok.encode('s := "<PLAN><EOT>"')
    assert tok.id_of("<PLAN>") not in ids and tok.eot_id not in ids
    parts = [Special("<PLAN>"), Special("<STEP>"), " add Sum", Special("</PLAN>"), "func Sum() {}\n",
             Special("<EOT>")]
    ids = tok.encode_parts(parts)
    assert ids[0] == tok.id_of("<PLAN>") and ids[-1] == tok.eot_id
    assert tok.decode(ids) == "".join(parts)


def test_tokenizer_files_round_trip(spm_tok: SpmTokenizer, tmp_path: Path) -> None:
    table = NibblePairTable.fit(np.arange(289), rare_mass=0.05, window=64)
    for tok in (spm_tok, ByteTokenizer(table)):
        data = tok.to_bytes()
        again = Tokenizer.from_bytes(data)
        assert type(again) is type(tok) and again.sha256 == tok.sha256
        assert again.encode(ODD_TEXT) == tok.encode(ODD_TEXT)
        name = "tokenizer.model" if tok.kind == "spm" else "tokenizer.json"
        (tmp_path / tok.kind).mkdir()
        (tmp_path / tok.kind / name).write_bytes(data)
        assert load_tokenizer(tmp_path / tok.kind).sha256 == tok.sha256  # a directory
        assert load_tokenizer(tmp_path / tok.kind / name).sha256 == tok.sha256
    assert load_tokenizer(ByteTokenizer(table).to_bytes()).table == table


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"\x08\x01garbage", "not a SentencePiece model"),
    (b'{"format": "something-else"}', "not a byte tokenizer"),
    (b'{"format": "hrm-lsp-byte-tokenizer", "version": 9}', "version 9"),
    (b"{not json", "not valid JSON"),
])
def test_bad_tokenizer_bytes(data: bytes, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(data)


def test_bad_tokenizer_paths(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer(tmp_path / "missing.model")
    with pytest.raises(TokenizerError, match="no tokenizer.model or tokenizer.json"):
        load_tokenizer(tmp_path)
    doc = json.loads(ByteTokenizer().to_bytes())
    doc["specials"] = doc["specials"][:-1]
    with pytest.raises(TokenizerError, match="different list of special symbols"):
        load_tokenizer(json.dumps(doc).encode())


def test_spm_vocab_too_small(stdlib_src: Path) -> None:
    with pytest.raises(TokenizerError, match="too small"):
        train_spm(["package x\n"], 100)


def _reference_acc(ids: list[int], rare: set[tuple[int, int]], window: int) -> list[int]:
    """The accumulator written the slow, obvious way (docs/tokenizers.md)."""
    nib = [i >> 4 if 0 < i < 256 else 16 for i in ids]
    flags = [int(((nib[t - 1] if t else 16), nib[t]) in rare) for t in range(len(ids))]
    return [min(255, sum(flags[max(0, t - window + 1): t + 1])) for t in range(len(ids))]


def test_nibble_and_accumulator_match_definition(stdlib_src: Path) -> None:
    text = (stdlib_src / "unicode/utf8/utf8_test.go").read_text()[:3000]
    ids = np.array([256, *text.encode("utf-8"), 0, 260, 65], dtype=np.int64)
    counts = NibblePairTable.count_pairs(ids)
    table = NibblePairTable.fit(counts, rare_mass=0.02, window=50)
    rare = {(i // 17, i % 17) for i, r in enumerate(table.rare) if r}
    assert sum(counts[a * 17 + b] for a, b in rare) <= 0.02 * counts.sum()
    assert all(table.rare[i] for i in range(289) if counts[i] == 0)  # unseen pairs are rare
    tok = ByteTokenizer(table)
    f = tok.features(ids)
    assert f["nibble"].dtype == np.uint8 and f["acc"].dtype == np.uint8
    assert f["nibble"].tolist() == [16, *(b >> 4 for b in text.encode("utf-8")), 16, 16, 4]
    assert f["acc"].tolist() == _reference_acc(ids.tolist(), rare, 50)
    assert f["acc"].max() > 0
    # Batched input gives the same rows.
    both = tok.features(np.stack([ids, ids]))
    assert (both["acc"][1] == f["acc"]).all()
    # A window of W+1 trailing ids is enough to reproduce the last value exactly (inference).
    for t in (60, 500, len(ids) - 1):
        assert accumulate(ids[t - 50: t + 1], table)[-1] == f["acc"][t]


def test_accumulator_saturates() -> None:
    table = NibblePairTable(tuple([1] * 289), window=400)
    acc = accumulate(np.full(300, 65), table)
    assert acc[254] == 255 and acc[-1] == 255 and acc[100] == 101
    assert nibbles(np.array([0, 1, 255, 256, 273])).tolist() == [16, 0, 15, 16, 16]
