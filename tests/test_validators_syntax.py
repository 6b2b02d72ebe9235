"""Stage 1 (tree-sitter) and the structural helpers; no Go toolchain involved."""

from __future__ import annotations

import pytest

from hrm_lsp.validators import InvalidSourceError, syntax_errors
from hrm_lsp.validators.treesitter import (
    bracket_depth,
    enclosing_function,
    first_unmatched_close,
    functions,
    is_complete_block,
)
from hrm_lsp.validators.types import SourceText, decode_source

GOOD = """package p

import "fmt"

// Hello greets
// the world.
func Hello(name string) string {
	return fmt.Sprintf("hi %s", name)
}

func (s *Server) Start() error {
	go func() {
		s.run()
	}()
	return nil
}
"""


def test_valid_code_has_no_syntax_errors():
    assert syntax_errors(GOOD) == []


def test_missing_paren_is_reported_with_position():
    diags = syntax_errors("package p\nfunc f() { g(1, }\n")
    assert diags, "a missing ) must be found"
    d = diags[0]
    assert (d.line, d.stage, d.severity) == (2, "syntax", "error")
    assert "missing ')'" in d.message
    assert d.column == 16  # just after `1,`: where the `)` is missing


def test_error_node_names_the_unexpected_token():
    diags = syntax_errors("package p\n\nfunc f() {\n\tx := := 2\n}\n")
    assert [d.line for d in diags] == [4]
    assert "unexpected" in diags[0].message


def test_columns_count_code_points_not_bytes():
    # "héllo" and an astral emoji are multi-byte in UTF-8; columns must count characters.
    text = 'package p\nvar s = "héllo 🙂" + (\n'
    diags = syntax_errors(text)
    assert diags
    line = text.split("\n")[1]
    for d in diags:
        if d.line == 2:
            assert d.column <= len(line) + 1


def test_non_ascii_identifiers_parse_cleanly():
    text = 'package p\n\nfunc Grüße(名前 string) string {\n\treturn "こんにちは " + 名前\n}\n'
    assert syntax_errors(text) == []
    fn = enclosing_function(text, text.index("こんにちは"))
    assert fn is not None and fn.name == "Grüße"
    assert text[fn.start:fn.end].startswith("func Grüße(")
    assert text[fn.end - 1] == "}"


def test_source_text_maps_byte_columns_to_code_points():
    src = SourceText('x := "é🙂"; y\n')
    # byte column of `y`: 'x := "' (6) + é (2) + 🙂 (4) + '"; ' (3) = 15 bytes before it
    assert src.char_column(1, 16) == 12
    assert src.line_end_column(1) == 13


def test_crlf_does_not_shift_positions():
    text = "package p\r\n\r\nfunc f() {\r\n\tg(1, \r\n}\r\n"
    diags = syntax_errors(text)
    assert diags and all(d.line >= 4 for d in diags)


def test_enclosing_function_ranges_doc_and_body():
    off = GOOD.index("Sprintf")
    fn = enclosing_function(GOOD, off)
    assert fn is not None
    assert (fn.name, fn.kind, fn.receiver) == ("Hello", "function", None)
    assert fn.doc == "Hello greets\nthe world."
    assert GOOD[fn.doc_start:].startswith("// Hello greets")
    assert GOOD[fn.body_start] == "{" and GOOD[fn.body_end - 1] == "}"
    assert GOOD[fn.start:fn.signature_end].strip() == "func Hello(name string) string"
    assert (fn.start_line, fn.end_line) == (7, 9)
    # the doc comment counts as part of the function
    assert enclosing_function(GOOD, GOOD.index("the world")).name == "Hello"


def test_enclosing_method_through_a_func_literal():
    fn = enclosing_function(GOOD, GOOD.index("s.run()"))
    assert fn is not None
    assert (fn.name, fn.kind, fn.receiver) == ("Start", "method", "*Server")
    assert fn.doc == "" and fn.doc_start is None


def test_outside_any_function_is_none():
    assert enclosing_function(GOOD, GOOD.index('import "fmt"')) is None
    assert [f.name for f in functions(GOOD)] == ["Hello", "Start"]


def test_enclosing_function_offsets_are_str_indices_with_multibyte_text():
    text = 'package p\n\n// 😀 doc\nfunc A() { _ = "ü" }\n\nfunc B() {}\n'
    fn = enclosing_function(text, text.index("func B") + 3)
    assert fn.name == "B" and text[fn.start:fn.end] == "func B() {}"


def test_stop_rule_helpers():
    assert first_unmatched_close('x := "}"\n\treturn x\n}\nfunc g() {}') == len('x := "}"\n\treturn x\n')
    assert first_unmatched_close("if a { b() }") is None
    assert first_unmatched_close("// }\n`}` + '}'") is None
    assert bracket_depth("func f() {\n\tif x {") == 2
    assert is_complete_block("if x > 0 {\n\treturn 1\n}\n")
    assert is_complete_block("func f() int { return 1 }\n")
    assert not is_complete_block("if x > 0 {\n\treturn 1\n")
    assert not is_complete_block("return 1\n}\n")
    assert not is_complete_block("   ")


def test_invalid_utf8_is_a_clear_error():
    with pytest.raises(InvalidSourceError, match=r"f\.go:2:10: not valid UTF-8 \(byte 0xff"):
        decode_source(b'package p\nvar s = "\xff"\n', "f.go")
    with pytest.raises(InvalidSourceError, match="surrogate"):
        syntax_errors("package p\nvar s = \"\ud800\"\n")
