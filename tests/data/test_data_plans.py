"""Plan extraction and Go parsing on real-looking messages, real diffs and real stdlib files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrm_lsp.data import goparse
from hrm_lsp.data.documents import change_documents, snapshot_documents
from hrm_lsp.data.plans import (
    classify_message,
    plan_for_change,
    plan_for_snapshot,
    steps_from_message,
)
from hrm_lsp.data.sources import ChangeRecord, FileRecord


@pytest.mark.parametrize("message, intent", [
    ("net/http: fix race in Transport.RoundTrip", "FIX"),
    ("runtime: avoid deadlock when the sweeper blocks", "FIX"),
    ("Revert \"cmd/go: use the new module cache\"", "FIX"),
    ("fix(parser): handle empty input", "FIX"),
    ("feat: add --json output", "ADD"),
    ("Add support for TLS 1.3 session tickets", "ADD"),
    ("encoding/json: implement Marshaler for big.Int", "ADD"),
    ("refactor: split server.go into handlers", "REFACTOR"),
    ("Rename Mean to Average", "REFACTOR"),
    ("strings: simplify Builder.grow", "REFACTOR"),
    ("修复内存泄漏", "FIX"),
    ("添加 JSON 导出", "ADD"),
    ("Исправить падение при пустом вводе", "FIX"),
    ("Corrige el cálculo del total", "FIX"),
    ("Ajoute la prise en charge de IPv6", "ADD"),
    ("Update README", None),
    ("", None),
    ("   \n\n", None),
])
def test_classify_message(message: str, intent: str | None) -> None:
    assert classify_message(message) == intent


def test_steps_from_message() -> None:
    msg = ("runtime: fix deadlock in GC\n\nThe sweeper could block forever. This change adds a "
           "check before parking.\n\n    goroutine 1 [running]:\n\nFixes #1234\n"
           "Change-Id: I0123456789\nReviewed-on: https://go-review.googlesource.com/c/go/+/1\n"
           "Signed-off-by: A <a@example.com>\n")
    assert steps_from_message(msg) == ["fix deadlock in GC", "The sweeper could block forever.",
                                       "This change adds a check before parking."]
    bullets = "Add exporter\n\n* parse config\n- validate input\n1. write output\n2) flush\n"
    assert steps_from_message(bullets) == ["Add exporter", "parse config", "validate input", "write output"]
    assert steps_from_message("") == []
    long = "x" * 500
    assert len(steps_from_message(long)[0]) <= 162


BEFORE = """package calc

// Sum adds xs.
func Sum(xs []int) int {
	t := 0
	for i := 1; i < len(xs); i++ {
		t += xs[i]
	}
	return t
}

func old() {}

type Box struct{ V int }
"""


def _plan(before: str, after: str, message: str = ""):
    rec = ChangeRecord("r", "c1", "calc/sum.go", before, after, message, "git")
    docs, why = change_documents(rec, 3, "repo")
    return docs, why


def test_plans_from_diff_shape_when_message_says_nothing() -> None:
    fix = BEFORE.replace("i := 1", "i := 0")
    docs, _ = _plan(BEFORE, fix)
    assert (docs[0].plan.intent, docs[0].plan.target) == ("FIX", "func")
    assert docs[0].plan.steps == ("change func Sum",)
    assert "i := 0" in docs[0].code

    added = BEFORE + "\n// Max returns the largest element.\nfunc Max(xs []int) int { return 0 }\n"
    docs, _ = _plan(BEFORE, added)
    assert docs[0].plan.intent == "ADD" and docs[0].plan.steps == ("add func Max",)

    renamed = BEFORE.replace("func old()", "func legacy()")
    docs, _ = _plan(BEFORE, renamed)
    assert docs[0].plan.intent == "REFACTOR" and docs[0].plan.steps == ("rename func old to legacy",)

    typ = BEFORE.replace("V int", "V, W int")
    docs, _ = _plan(BEFORE, typ, "make Box two-dimensional")
    assert docs[0].plan.target == "type" and docs[0].plan.steps == ("make Box two-dimensional",)

    docs, why = _plan(BEFORE, BEFORE.replace("package calc\n", "package calc\n\nimport \"fmt\"\n"))
    assert docs == [] and "no declaration changed" in why


def test_message_wins_over_shape_and_methods_are_named() -> None:
    before = "package p\n\ntype T struct{}\n\nfunc (t *T) Close() error { return nil }\n"
    after = before.replace("return nil", "return errClosed")
    docs, _ = _plan(before, after, "Add a sentinel error for Close")
    assert docs[0].plan.intent == "ADD"
    change = goparse.diff_declarations(before, after)
    assert [a.name for _, a in change.modified] == ["(*T).Close"]


def test_huge_diff_is_bounded() -> None:
    before = "package big\n" + "".join(f"\nfunc F{i}() int {{ return {i} }}\n" for i in range(300))
    after = before.replace("return", "return 1 +")
    rec = ChangeRecord("r", "c", "big/big.go", before, after, "", "git")
    docs, _ = change_documents(rec, 600, "repo", chunk_bytes=2000)
    assert len(docs) > 5
    assert all(len(d.code) < 2600 for d in docs)
    assert all(len(d.plan.steps) <= 4 and d.plan.intent == "REFACTOR" for d in docs)
    assert "".join(d.code for d in docs) == after


def test_snapshot_plans_from_doc_comments(stdlib_src: Path) -> None:
    text = (stdlib_src / "strings/reader.go").read_text()
    docs = snapshot_documents(FileRecord("go", "strings/reader.go", text), "package", chunk_bytes=3000)
    assert "".join(d.code for d in docs) == text
    assert docs[0].unit == "go/strings"
    steps = [s for d in docs for s in d.plan.steps]
    # Go doc links ("[io.Reader]") read as plain names; long sentences are cut at a word.
    assert steps[0].startswith("A Reader implements the io.Reader, io.ReaderAt, io.ByteReader,")
    assert steps[0].endswith(" …") and len(steps[0]) <= 162
    assert "Len returns the number of bytes of the unread portion of the string." in steps
    assert all(d.plan.intent == "ADD" for d in docs)
    # Without doc comments, the names of the declarations.
    p = plan_for_snapshot(goparse.declarations("package x\n\nfunc a() {}\n\ntype B int\n"))
    assert p.steps == ("define func a", "define type B")


def test_chunks_cover_real_files_exactly(stdlib_src: Path) -> None:
    for name in ("fmt/print.go", "sort/sort.go", "bufio/bufio.go"):
        text = (stdlib_src / name).read_text()
        decls, pkg = goparse.parse_file(text)
        assert pkg.startswith("Package ") == (name != "fmt/print.go")  # fmt's is in doc.go
        chunks = goparse.chunks(text, 4000, decls)
        assert "".join(c.text for c in chunks) == text
        assert chunks[0].text.lstrip().startswith("// Copyright")
        for c in chunks:
            # A chunk only exceeds the limit when one declaration alone does.
            assert len(c.text.encode()) <= 4000 or len(c.decls) == 1
    # Syntax errors do not stop declaration listing.
    assert [d.name for d in goparse.declarations("package x\nfunc a( {\n}\nfunc b() {}\n")][-1] == "b"


def test_plan_for_change_with_no_message_and_no_names() -> None:
    change = goparse.diff_declarations("", "package x\n\nvar v = 1\n")
    plan = plan_for_change("", change, 3)
    assert plan.intent == "ADD" and plan.steps == ("add var v",)


def test_plan_layout_is_the_one_inference_writes_and_parses() -> None:
    """Training documents and inference prompts must put plans into the same tokens."""
    from hrm_lsp.data.plans import Plan
    from hrm_lsp.inference.plan import parse_plan, plan_parts
    from hrm_lsp.inference.types import Plan as InferencePlan

    plan = Plan("FIX", "type", ("fix off-by-one in Sum", "handle empty input"))
    assert plan.parts() == plan_parts(InferencePlan(plan.intent, plan.target, plan.steps))
    parsed = parse_plan("".join(plan.parts()))
    assert (parsed.intent, parsed.target, parsed.steps) == (plan.intent, plan.target, plan.steps)


def test_declaration_moved_between_files_is_a_refactor() -> None:
    from hrm_lsp.data.documents import commit_documents

    sum_go = "package calc\n\n// Sum adds xs.\nfunc Sum(xs []int) (t int) {\n\tfor _, x := range xs {\n\t\tt += x\n\t}\n\treturn\n}\n"
    old_a = sum_go + "\nfunc keep() {}\n"
    new_a = "package calc\n\nfunc keep() {}\n"
    new_b = "package calc\n\nimport \"fmt\"\n\nvar _ = fmt.Sprint\n\n" + sum_go.split("\n\n", 1)[1]
    group = [(ChangeRecord("r", "c9", "calc/a.go", old_a, new_a, "", "git"), 8),
             (ChangeRecord("r", "c9", "calc/b.go", "", new_b, "", "git"), 12)]
    (docs_a, why_a, _), (docs_b, _, _) = commit_documents(group, "repo")
    assert docs_a == [] and why_a == "declarations only removed"
    plan = docs_b[0].plan
    assert plan.intent == "REFACTOR"
    assert plan.steps == ("add var _", "move func Sum from calc/a.go")
    # Without the other file, the same change reads as an addition.
    alone, _ = change_documents(group[1][0], 12, "repo")
    assert alone[0].plan.intent == "ADD"
