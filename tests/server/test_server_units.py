"""Unit tests of the server's pure parts: positions, documents, settings, code-action
sites, the context window, the result cache, superseding and the builders."""

from __future__ import annotations

import random

import pytest

from hrm_lsp.inference import CancelToken, Completion, Plan
from hrm_lsp.server import actions, builders
from hrm_lsp.server.cache import ResultCache
from hrm_lsp.server.documents import DocumentStore, uri_to_path
from hrm_lsp.server.inflight import InFlight
from hrm_lsp.server.positions import UTF8, UTF16, UTF32, LineIndex, Pos, choose_encoding
from hrm_lsp.server.settings import Settings, parse_settings
from hrm_lsp.validators import validate

# -- positions ---------------------------------------------------------------------------

def test_astral_character_in_each_encoding():
    text = 'x="😋"\n'
    idx = LineIndex(text)
    # The closing quote: after 'x="' (3) and the emoji (4 bytes / 2 units / 1 code point).
    assert idx.offset(0, 7, UTF8) == 4
    assert idx.offset(0, 5, UTF16) == 4
    assert idx.offset(0, 4, UTF32) == 4
    assert idx.position(4, UTF8) == Pos(0, 7)
    assert idx.position(4, UTF16) == Pos(0, 5)
    assert idx.position(4, UTF32) == Pos(0, 4)
    # Inside the surrogate pair / the UTF-8 sequence rounds down to the emoji's start.
    assert idx.offset(0, 4, UTF16) == 3
    assert idx.offset(0, 5, UTF8) == 3


def test_line_breaks_are_lsp_ones_only():
    text = "a\r\nb\rc\nd\x0ce\u2028f"
    idx = LineIndex(text)
    assert idx.line_count == 4
    assert [idx.line_text(i) for i in range(4)] == ["a", "b", "c", "d\x0ce\u2028f"]
    assert idx.offset(1, 0) == 3 and idx.offset(2, 0) == 5
    # An offset between \r and \n belongs to the end of line 0.
    assert idx.position(2) == Pos(0, 1)


def test_clamping():
    idx = LineIndex("ab\ncd\n")
    assert idx.offset(-3, 5) == 0
    assert idx.offset(0, -1) == 0
    assert idx.offset(0, 99) == 2  # end of line 0, before its newline
    assert idx.offset(99, 0) == 6
    assert idx.position(-5) == Pos(0, 0)
    assert idx.position(1000) == Pos(2, 0)


def test_round_trip_against_reference_on_random_text():
    rng = random.Random(7)
    alphabet = ["a", "é", "中", "😀", "\n", "\r\n", "𝔘", " "]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        idx = LineIndex(text)
        for enc in (UTF8, UTF16, UTF32):
            for off in range(len(text) + 1):
                if off > 0 and text[off - 1] == "\r" and off < len(text) and text[off] == "\n":
                    continue  # not a character boundary LSP can name
                p = idx.position(off, enc)
                assert idx.offset(p.line, p.character, enc) == off
                # Reference: encode the line's prefix.
                line_start = idx.starts[p.line]
                prefix = text[line_start:off]
                ref = {UTF8: len(prefix.encode("utf-8")),
                       UTF16: len(prefix.encode("utf-16-le")) // 2, UTF32: len(prefix)}[enc]
                assert p.character == ref


def test_choose_encoding():
    assert choose_encoding(None) == UTF16
    assert choose_encoding(["utf-32", "utf-8"]) == UTF32
    assert choose_encoding(["latin-1", "utf-8"]) == UTF8
    assert choose_encoding(["latin-1"]) == UTF16


def test_validator_positions():
    idx = LineIndex("package p\nfunc f() { 😀x }\n")
    off = idx.offset_of_codepoint(2, 13)  # 1-based column 13 = 'x' after the emoji
    assert idx.text[off] == "x"
    assert idx.offset_of_codepoint(99, 99) == len(idx.text)


# -- documents ---------------------------------------------------------------------------

def test_incremental_changes_in_order_and_clamped():
    store = DocumentStore()
    store.open("file:///a.go", "hello\nworld\n", 1)
    doc = store.change("file:///a.go", 2, [((0, 0), "") and ((0, 0, 0, 5), "HELLO"),
                                            ((1, 5, 0, 5), ","),  # reversed range
                                            ((9, 0, 9, 0), "tail")], UTF16)
    assert doc.text == "HELLO,\ntail"
    assert doc.version == 2
    assert store.change("file:///nope.go", 1, [(None, "x")]) is None
    doc = store.change("file:///a.go", 3, [(None, "full")])
    assert doc.text == "full" and doc.index.line_text(0) == "full"


def test_uri_to_path():
    assert str(uri_to_path("file:///tmp/a%20b/x.go")) == "/tmp/a b/x.go"
    assert uri_to_path("untitled:Untitled-1").name == "Untitled-1"


# -- settings ----------------------------------------------------------------------------

def test_settings_camel_case_nested_and_per_key_fallback():
    s, warnings = parse_settings({"hrmLsp": {"modelPath": "/m.gguf", "maxTokens": 12,
                                              "temperature": "hot", "validators": ["syntax"],
                                              "inlineMode": "sometimes", "bogus": 1}})
    assert s.model_path == "/m.gguf" and s.max_tokens == 12 and s.validators == ("syntax",)
    assert s.temperature == Settings().temperature and s.inline_mode == "auto"
    joined = "\n".join(warnings)
    assert "temperature" in joined and "inline_mode" in joined and "bogus" in joined


def test_settings_ranges_null_and_non_objects():
    base, _ = parse_settings({"maxTokens": 10})
    s, warnings = parse_settings({"maxTokens": 0, "validators": ["syntax", "lint"]}, base)
    assert s.max_tokens == 48 and s.validators == Settings().validators and len(warnings) == 2
    s, warnings = parse_settings({"validators": []}, base)
    assert s.validators == Settings().validators and "validators" in warnings[0]
    s, warnings = parse_settings({"maxTokens": None}, base)
    assert s.max_tokens == 48 and not warnings
    s, warnings = parse_settings("nonsense", base)
    assert s == base and warnings
    assert parse_settings(None, base) == (base, [])


# -- code action sites, context window ---------------------------------------------------

SRC = """package p

// Sum adds the numbers.
func Sum(xs []int) int {
}

// TODO: write Max returning the largest element
"""


def test_comment_site_empty_body_and_todo():
    site = actions.comment_site(SRC, SRC.index("adds"))
    assert site is not None and site.has_function
    assert SRC[site.insert_offset - 1] == "{" and SRC[site.replace_end] == "}"
    todo = actions.comment_site(SRC, SRC.index("Max"))
    assert todo is not None and not todo.has_function
    assert todo.insert_offset == SRC.index("element") + len("element")
    assert actions.comment_site(SRC, SRC.index("func Sum")) is None
    written = "package p\n\n// F is done.\nfunc F() int {\n\treturn 1\n}\n"
    assert actions.comment_site(written, written.index("done")) is None


def test_enclosing_function_span_uses_tree_sitter():
    span = actions.enclosing_function_span(SRC, SRC.index("xs []int"))
    assert span is not None and SRC[span[0]:span[1]].startswith("func Sum")
    assert actions.enclosing_function_span(SRC, 0) is None


def test_gate_rejects_edits_that_break_syntax():
    good = "package p\n\nfunc F() int {\n\treturn 1\n}\n"
    assert actions.passes_gate(good, good.replace("return 1", "return 2"))
    assert not actions.passes_gate(good, good.replace("return 1", "return (1"))


def test_context_window_cuts_at_lines_around_cursor():
    text = "".join(f"line {i}\n" for i in range(10_000))
    off = text.index("line 5000")
    cut, cut_off, start = actions.context_window(text, off, 4000)
    assert len(cut) <= 4000 and cut[cut_off:].startswith("line 5000")
    assert cut.startswith("line ") and cut.endswith("\n") and text[start:start + len(cut)] == cut
    assert actions.context_window("short", 2, 4000) == ("short", 2, 0)


# -- cache, superseding ------------------------------------------------------------------

def test_result_cache_lru_and_forget():
    c = ResultCache(max_entries=2)
    c.put(("u1", 1, 0), "a")
    c.put(("u2", 1, 0), "b")
    assert c.get(("u1", 1, 0)) == "a"
    c.put(("u3", 1, 0), "c")  # evicts u2 (least recently used)
    assert c.get(("u2", 1, 0)) is None and c.get(("u3", 1, 0)) == "c"
    c.forget("u1")
    assert c.get(("u1", 1, 0)) is None and len(c) == 1


def test_newer_request_supersedes_older():
    inflight = InFlight(CancelToken)
    first = inflight.begin("doc")
    second = inflight.begin("doc")
    other = inflight.begin("other")
    assert first.cancelled and not second.cancelled and not other.cancelled
    inflight.end("doc", first)  # a finished superseded request does not drop the newer one
    assert inflight.active() == 2
    inflight.cancel_all()
    assert second.cancelled and other.cancelled and inflight.active() == 0


# -- builders ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vet_result():
    return validate("package p\n\nfunc F() int {\n\tx := 1\n\treturn 1\n}\n",
                    stages=("syntax", "gofmt", "vet"))


def test_validation_summary_and_documentation(vet_result):
    comp = Completion(text="return 1\n", plan=Plan("ADD", "func", ("parse config", "validate")),
                      validation=vet_result, iterations=2, elapsed_ms=1.0)
    # `x` is declared and not used: syntax and gofmt pass, vet (the type check) fails.
    summary = builders.validation_summary(vet_result, ("syntax", "gofmt", "vet"), 2)
    assert summary == "syntax ✓ gofmt ✓ vet ✗, refined 2×"
    doc = builders.completion_documentation(comp, ("syntax", "gofmt", "vet"))
    assert "**Plan** ADD func\n1. parse config\n2. validate" in doc
    assert "```go\nreturn 1\n```" in doc
    assert builders.plan_one_line(comp.plan) == "ADD func · parse config, validate"


def test_completion_item_edit_range_covers_typed_word():
    text = "package p\n\nfunc F() int {\n\tret\n}\n"
    idx = LineIndex(text)
    off = text.index("ret") + 3
    comp = Completion(text="urn 1", plan=Plan(), validation=None, iterations=0, elapsed_ms=0.0)
    item = builders.lsp_completion_item(comp, idx, off, UTF16, ("syntax",))
    assert item.label == "return 1"
    assert item.text_edit.new_text == "return 1"
    r = item.text_edit.range
    assert (r.start.line, r.start.character, r.end.line, r.end.character) == (3, 1, 3, 4)


# -- debounce ----------------------------------------------------------------------------

async def test_debounce_releases_older_waiter_when_newer_arrives():
    import asyncio

    from hrm_lsp.server.debounce import Debouncer

    d = Debouncer()
    older = asyncio.ensure_future(d.settle("doc", 60.0))  # would wait a minute
    await asyncio.sleep(0)  # let it start waiting
    other = asyncio.ensure_future(d.settle("other", 0.0))
    newer = await d.settle("doc", 0.0)
    assert newer is True and await other is True
    assert await asyncio.wait_for(older, 10) is False  # released at once, as superseded
    waiting = asyncio.ensure_future(d.settle("doc", 60.0))
    await asyncio.sleep(0)
    d.supersede("doc")  # e.g. an invoked request for the same document
    assert await asyncio.wait_for(waiting, 10) is False
