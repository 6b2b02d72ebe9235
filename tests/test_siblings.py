"""Sibling bodies: parsing functions, renaming parameters, ranking the package's functions,
and the engine offering the first one go vet accepts (real Go, a tiny trained model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny_hrgc import trained_tiny

from hrm_lsp.index import RepoIndex
from hrm_lsp.index.siblings import (
    FEATURES,
    FunctionCache,
    candidates_of,
    default_weights,
    empty_function,
    file_functions,
    pair_features,
    rank,
    rename,
)
from hrm_lsp.inference import CompletionRequest, Engine
from hrm_lsp.validators import find_go

COUNTER = '''package demo

// Counter counts.
type Counter struct{ n int }

// Add adds d.
func (c *Counter) Add(d int) int {
	c.n += d
	return c.n
}

// Reset sets the count to zero.
func (c *Counter) Reset() {
	c.n = 0
}

func Twice(s string) string { return s + s }
'''

EMPTY_SUB = '''package demo

// Sub subtracts e.
func (x *Counter) Sub(e int) int {
}
'''


def test_file_functions_reads_names_parameters_and_bodies():
    fns = {f.name: f for f in file_functions(COUNTER)}
    assert list(fns) == ["Add", "Reset", "Twice"]
    add = fns["Add"]
    assert add.params == (("c", "*Counter"), ("d", "int"))
    assert add.body == "\tc.n += d\n\treturn c.n\n"
    assert COUNTER[add.start:add.end] == add.body
    assert add.signature == "func (c *Counter) Add(d int) int "
    assert fns["Twice"].body == ""  # one-line body: not laid out as lines
    assert fns["Reset"].params == (("c", "*Counter"),)


def test_rename_maps_by_position_and_type_then_by_the_one_name_of_a_type():
    body = "\tc.n += d\n\treturn c.n + dd + o.d\n"
    src = (("c", "*Counter"), ("d", "int"))
    assert rename(body, src, (("x", "*Counter"), ("e", "int"))) == \
        ("\tx.n += e\n\treturn x.n + dd + o.d\n", set())  # o.d is a field: kept
    # d's position holds a string now; the one int parameter is elsewhere.
    assert rename(body, src, (("x", "*Counter"), ("s", "string"), ("k", "int"))) == \
        ("\tx.n += k\n\treturn x.n + dd + o.d\n", set())
    # Two ints: which one d becomes is unknown, so d stays, and the copy names a d that
    # does not exist here.
    assert rename(body, src, (("x", "*Counter"), ("s", "string"), ("a", "int"), ("b", "int"))) == \
        ("\tx.n += d\n\treturn x.n + dd + o.d\n", {"d"})
    assert rename(body, src, ()) == (body, {"c", "d"})
    assert rename("\treturn 1\n", src, ()) == ("\treturn 1\n", set())  # unused: fine


def test_empty_function_is_found_only_in_an_empty_body():
    at = EMPTY_SUB.index("{\n}") + 2
    fn = empty_function(EMPTY_SUB, at)
    assert fn is not None and fn.name == "Sub"
    assert empty_function(EMPTY_SUB, 3) is None
    full = COUNTER.index("c.n = 0")
    assert empty_function(COUNTER, full) is None


SIGNATURE_ONLY = (1.0,) + (0.0,) * (len(FEATURES) - 1)


def test_rank_filters_candidates_and_orders_by_the_weights():
    target = empty_function(EMPTY_SUB, EMPTY_SUB.index("{\n}") + 2)
    fns = file_functions(COUNTER)
    got = rank(target, [("a.go", f) for f in fns] + [("b.go", fns[0])], 5)
    # Reset returns nothing, Twice has no body lines, b.go's Add is a copy.
    assert [s.name for s in got] == ["Add"]
    assert got[0].text == "\tx.n += e\n\treturn x.n\n" and got[0].path == "a.go"
    get = COUNTER + "\nfunc (c *Counter) Get() int {\n\treturn c.n\n}\n"
    cands = [("a.go", f) for f in file_functions(get)]
    # By signature words alone, Get (no parameter) shares more with Sub than Add does ...
    two = rank(target, cands, 5, weights=SIGNATURE_ONLY)
    assert [s.name for s in two] == ["Get", "Add"] and two[0].similarity > two[1].similarity > 0
    assert rank(target, cands, 1, weights=SIGNATURE_ONLY) == two[:1]
    # ... but the fitted weights also count that Add takes one int parameter, as Sub does.
    assert [s.name for s in rank(target, cands, 5)] == ["Add", "Get"]


def test_pair_features_see_the_file_the_doc_and_the_parameters():
    text = """package demo

// Encode writes v as JSON to w.
func Encode(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// Decode reads v as JSON from r.
func Decode(r io.Reader, v any) error {
	return json.NewDecoder(r).Decode(v)
}

// EncodeIndent writes v as indented JSON to w.
func EncodeIndent(w io.Writer, v any) error {
}
"""
    fns = file_functions(text)
    target = empty_function(text, text.index("{\n}") + 2, fns)
    f = dict(zip(FEATURES, pair_features(target, fns[0], True, 2), strict=True))
    assert f["same_file"] == 1 and f["adjacent"] == pytest.approx(1 / 3)
    assert f["same_arity"] == 1 and f["param_types"] == 1 and f["same_kind"] == 1
    assert f["first_word"] == 1 and f["last_word"] == 0 and f["same_receiver"] == 0
    assert 0 < f["doc"] < 1 and f["lines"] > 0
    g = dict(zip(FEATURES, pair_features(target, fns[1], False, 1), strict=True))
    assert g["same_file"] == 0 and g["adjacent"] == 0
    assert g["param_types"] == pytest.approx(1 / 3)  # {io.Reader, any} against {io.Writer, any}
    # Decode's body reads r, an io.Reader this function has no counterpart of: not offered.
    got = rank(target, [(None, fn) for fn in fns], 3)
    assert [s.name for s in got] == ["Encode"]
    assert got[0].text == "\treturn json.NewEncoder(w).Encode(v)\n"
    assert len(default_weights()) == len(FEATURES)


@pytest.fixture(scope="module")
def tiny(stdlib_src):
    return trained_tiny(stdlib_src)


def test_repo_index_siblings_read_the_package_and_live_text(tiny, tmp_path):
    (tmp_path / "counter.go").write_text(COUNTER)
    (tmp_path / "counter_test.go").write_text(
        "package demo\n\nfunc (c *Counter) SubTest(e int) int {\n\treturn -1\n}\n")
    doc = tmp_path / "sub.go"
    doc.write_text(COUNTER)  # the disk version of the open document is never a sibling
    at = EMPTY_SUB.index("{\n}") + 2
    index = RepoIndex(tiny[1], background=False, stdlib=False, modcache=False)
    try:
        got = index.siblings(EMPTY_SUB, at, str(doc), 3)
        assert [(s.name, Path(s.path).name) for s in got] == [("Add", "counter.go")]
        assert index.siblings(EMPTY_SUB, 3, str(doc)) == []
        # An open document's live text replaces its disk text.
        index.set_live(str(tmp_path / "counter.go"), COUNTER.replace("c.n += d", "c.n += 2 * d"))
        assert index.siblings(EMPTY_SUB, at, str(doc), 1)[0].text == "\tx.n += 2 * e\n\treturn x.n\n"
        # A test file's siblings include the package's tests.
        test_doc = str(tmp_path / "sub_test.go")
        assert "SubTest" in [s.name for s in index.siblings(EMPTY_SUB, at, test_doc, 5)]
        # Functions of the document itself count too.
        own = EMPTY_SUB + "\nfunc (y *Counter) Dec(e int) int {\n\ty.n -= e\n\treturn y.n\n}\n"
        first = index.siblings(own, at, None, 1)[0]
        assert first.path is None and first.text == "\tx.n -= e\n\treturn x.n\n"
    finally:
        index.close()


def _body_request(text: str, path: Path, **kw) -> CompletionRequest:
    kw.setdefault("stages", ("syntax", "gofmt", "vet"))
    kw.setdefault("sources", "both")
    return CompletionRequest(text=text, offset=text.index("{\n}") + 2, path=str(path),
                             multiline=True, refine=True, plan=True, max_tokens=16,
                             time_budget_ms=60_000, max_refinement_iterations=1, **kw)


def _package(tiny, root: Path, go_mod: str, counter: str = COUNTER):
    """(engine, the empty document's path, its index): a module with counter.go and sub.go."""
    find_go()  # the toolchain is a dependency: a missing one fails here
    model, tok = tiny
    (root / "go.mod").write_text(go_mod)
    (root / "counter.go").write_text(counter)
    doc = root / "sub.go"
    doc.write_text(EMPTY_SUB)
    index = RepoIndex(tok, background=False, stdlib=False, modcache=False)
    index.start([root])
    return Engine(model, tok, threads=1), doc, index


def test_the_engine_offers_the_first_sibling_go_vet_accepts(tiny, tmp_path, monkeypatch):
    import hrm_lsp.inference.engine as engine_mod

    engine, doc, index = _package(tiny, tmp_path, "module example.com/demo\n\ngo 1.21\n")
    try:
        comp = engine.complete(_body_request(EMPTY_SUB, doc), index=index)
        assert comp.stop_reason == "sibling" and comp.text == "\tx.n += e\n\treturn x.n\n"
        assert comp.validation.ok and comp.validation.stage == "vet" and not comp.withheld
        assert any("the body of Add (counter.go)" in n for n in comp.notes)
        # Sub's doc comment is not reported as the plan of a copied body.
        assert comp.plan.steps == ()
        # The index alone offers it too (no model run).
        alone = engine.complete(_body_request(EMPTY_SUB, doc, sources="index"), index=index)
        assert alone.stop_reason == "sibling" and alone.text == comp.text and alone.sources == "index"
        # A sibling that does not type-check here is passed over: Digits uses strconv,
        # which width.go does not import; Add's body is next. (sub.go's empty body would
        # fail the package's vet: it goes.)
        doc.unlink()
        (tmp_path / "conv.go").write_text('package demo\n\nimport "strconv"\n\n'
                                          "func (c *Counter) Digits(d int) int {\n"
                                          "\treturn len(strconv.Itoa(d)) + c.n\n}\n")
        width = "package demo\n\nfunc (x *Counter) Width(e int) int {\n}\n"
        (tmp_path / "width.go").write_text(width)
        assert [s.name for s in index.siblings(width, width.index("{\n}") + 2,
                                               str(tmp_path / "width.go"))] == ["Digits", "Add"]
        comp = engine.complete(_body_request(width, tmp_path / "width.go"), index=index)
        assert comp.stop_reason == "sibling" and comp.iterations == 2
        assert comp.text == "\tx.n += e\n\treturn x.n\n"
        monkeypatch.setattr(engine_mod, "SIBLING_CANDIDATES", 1)  # Digits alone: decoded
        assert engine.complete(_body_request(width, tmp_path / "width.go"),
                               index=index).stop_reason != "sibling"
        monkeypatch.setattr(engine_mod, "SIBLING_CANDIDATES", 3)
        # Off, without vet among the stages, or for the model alone: decoded as before.
        for kw in ({"stages": ("syntax", "gofmt")}, {"sources": "model"}):
            r = _body_request(EMPTY_SUB, doc, **kw)
            assert engine.complete(r, index=index).stop_reason != "sibling"
        monkeypatch.setattr(engine_mod, "SIBLING_CANDIDATES", 0)
        assert engine.complete(_body_request(EMPTY_SUB, doc), index=index).stop_reason != "sibling"
    finally:
        index.close()


def test_rank_leaves_out_other_result_types():
    other = "package demo\n\nfunc (x *Counter) Name(e int) string {\n}\n"
    target = empty_function(other, other.index("{\n}") + 2)
    assert target.results == ("string",)
    assert rank(target, [("a.go", f) for f in file_functions(COUNTER)], 3) == []
    named = file_functions("package p\n\nfunc f() (a, b int, err error) {\n\treturn\n}\n")[0]
    assert named.results == ("int", "int", "error")


def test_where_vet_cannot_run_the_first_sibling_gofmt_accepts_is_offered(tiny, tmp_path, monkeypatch):
    import hrm_lsp.inference.engine as engine_mod

    # A required module that is not in the module cache: vet cannot run offline.
    engine, doc, index = _package(
        tiny, tmp_path, "module example.com/demo\n\ngo 1.21\n\nrequire example.com/missing v1.0.0\n",
        COUNTER.replace("package demo\n", 'package demo\n\nimport _ "example.com/missing"\n'))
    try:
        comp = engine.complete(_body_request(EMPTY_SUB, doc), index=index)
        assert comp.validation.unavailable is not None
        assert comp.stop_reason == "sibling" and comp.text == "\tx.n += e\n\treturn x.n\n"
        assert "go vet could not judge it here" in comp.notes
        monkeypatch.setattr(engine_mod, "SIBLING_UNJUDGED", 0)
        assert engine.complete(_body_request(EMPTY_SUB, doc), index=index).stop_reason != "sibling"
    finally:
        index.close()


def test_signature_words_include_the_camel_case_parts_of_names():
    (fn,) = file_functions("package p\n\nfunc IBytesN(s uint64, n int) string {\n\treturn \"\"\n}\n")
    assert {"IBytesN", "i", "bytes", "n", "uint64", "uint", "64"} <= fn.words
    (other,) = file_functions("package p\n\nfunc BytesN(s uint64, n int) string {\n\treturn \"\"\n}\n")
    assert "bytes" in fn.words & other.words and "IBytesN" not in other.words


def test_package_files_past_the_parse_budget_are_parsed_later(tiny, tmp_path, monkeypatch):
    import hrm_lsp.index.tiers as tiers

    (tmp_path / "counter.go").write_text(COUNTER)
    doc = str(tmp_path / "sub.go")
    at = EMPTY_SUB.index("{\n}") + 2
    monkeypatch.setattr(tiers, "SIBLING_PARSE_S", -1.0)  # no parsing on the request
    index = RepoIndex(tiny[1], background=False, stdlib=False, modcache=False)
    try:
        assert index.siblings(EMPTY_SUB, at, doc) == []  # counter.go is not parsed yet...
        assert [s.name for s in index.siblings(EMPTY_SUB, at, doc)] == ["Add"]  # ...then it is
        (tmp_path / "counter.go").write_text(COUNTER.replace("c.n += d", "c.n -= 2 * d"))
        assert index.siblings(EMPTY_SUB, at, doc) == []  # a new version is parsed again
    finally:
        index.close()
    fresh = RepoIndex(tiny[1], background=False, stdlib=False, modcache=False)
    try:
        fresh.prepare(doc)  # didOpen parses the package ahead of the first request
        assert fresh.siblings(EMPTY_SUB, at, doc)[0].text == "\tx.n -= 2 * e\n\treturn x.n\n"
    finally:
        fresh.close()


def test_unreadable_package_files_and_missing_directories_are_skipped(tiny, tmp_path):
    (tmp_path / "counter.go").write_text(COUNTER)
    (tmp_path / "binary.go").write_bytes(b"package demo\n\xff\xfe\x00 not utf-8\n")
    (tmp_path / "empty.go").write_text("")
    at = EMPTY_SUB.index("{\n}") + 2
    index = RepoIndex(tiny[1], background=False, stdlib=False, modcache=False)
    try:
        got = index.siblings(EMPTY_SUB, at, str(tmp_path / "sub.go"))
        assert [(s.name, Path(s.path).name) for s in got] == [("Add", "counter.go")]
        # A document in a directory that does not exist: its own functions only, no error.
        own = EMPTY_SUB + "\nfunc (y *Counter) Dec(e int) int {\n\ty.n -= e\n\treturn y.n\n}\n"
        got = index.siblings(own, at, str(tmp_path / "gone" / "sub.go"))
        assert [(s.name, s.path) for s in got] == [("Dec", None)]
        # Text that does not parse as Go: no empty function, no candidates.
        assert index.siblings("func (", 3, str(tmp_path / "sub.go")) == []
    finally:
        index.close()


def test_a_weights_file_for_other_features_is_a_clear_error(tmp_path, monkeypatch):
    import hrm_lsp.index.siblings as sib

    bad = tmp_path / "sibling_weights.json"
    bad.write_text('{"features": ["signature"], "weights": [1.0]}')
    monkeypatch.setattr(sib, "WEIGHTS_FILE", bad)
    sib.default_weights.cache_clear()
    try:
        with pytest.raises(ValueError, match="features \\['signature'\\] are not"):
            sib.default_weights()
    finally:
        monkeypatch.undo()
        sib.default_weights.cache_clear()
    assert len(sib.default_weights()) == len(FEATURES)  # the shipped file still loads


def test_other_packages_of_the_workspace_offer_bodies_too(tiny, tmp_path, monkeypatch):
    """A function of another package is a candidate (``same_package`` 0 in its features),
    its tests are not, and the byte budget bounds what is parsed; a changed file is parsed
    again in the background after the workspace tier's rebuild."""
    import hrm_lsp.index.tiers as tiers

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "counter.go").write_text(COUNTER)
    (tmp_path / "a" / "counter_test.go").write_text(
        "package demo\n\nfunc (t *Counter) Sub(e int) int {\n\tpanic(e)\n}\n")
    doc = str(tmp_path / "b" / "sub.go")
    at = EMPTY_SUB.index("{\n}") + 2
    index = RepoIndex(tiny[1], background=False, stdlib=False, modcache=False)
    try:
        index.start([tmp_path])  # builds the workspace tier, then parses its functions
        got = index.siblings(EMPTY_SUB, at, doc)
        assert [(s.name, Path(s.path).name) for s in got] == [("Add", "counter.go")]
        assert got[0].text == "\tx.n += e\n\treturn x.n\n"
        target = empty_function(EMPTY_SUB, at)
        cands = [(str(tmp_path / "a" / "counter.go"), f) for f in file_functions(COUNTER)]
        (feat,) = [f for *_, f in candidates_of(target, cands, str(tmp_path / "b"))]
        assert dict(zip(FEATURES, feat, strict=True))["same_package"] == 0.0
        monkeypatch.setattr(tiers, "SIBLING_WORKSPACE_BYTES", 10)
        assert index.siblings(EMPTY_SUB, at, doc) == []  # over the budget: not offered
        monkeypatch.undo()
        (tmp_path / "a" / "counter.go").write_text(COUNTER.replace("c.n += d", "c.n -= 3 * d"))
        index.file_changed(str(tmp_path / "a" / "counter.go"))  # rebuilt (synchronously here)
        assert index.siblings(EMPTY_SUB, at, doc)[0].text == "\tx.n -= 3 * e\n\treturn x.n\n"
        index._functions = FunctionCache()  # forget every parse (a cache the size of the budget)
        assert index.siblings(EMPTY_SUB, at, doc) == []  # not parsed: this answer goes without...
        assert [s.name for s in index.siblings(EMPTY_SUB, at, doc)] == ["Add"]  # ...the next has it
    finally:
        index.close()
