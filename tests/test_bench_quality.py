"""The pure pieces of benchmarks/quality.py: case cutting with tree-sitter, splicing, metrics.

Real Go written here (no ../shared): the benchmark itself runs the server and Go.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality_cases import (  # noqa: E402
    Case,
    aggregate,
    body_sites,
    edit_similarity,
    file_cases,
    levenshtein,
    score_body_text,
    score_line,
    select_cases,
    statement_sites,
    summary_line,
)

GO = '''package shapes

import "fmt"

// Area of a rectangle.
func Area(w, h int) int {
	a := w * h
	return a
}

type Box struct{ w, h int }

func (b *Box) Grow(n int) {
	b.w += n
	if n > 10 {
		fmt.Println("big") // loud
	}
	x := 1; y := 2
	_ = x + y
}

func One() int { return 1 }

func Long(s []string) string {
	out := ""
	for _, v := range s {
		out += v
	}
	go func() {
		out += "é"
	}()
	return out
}

var global = func() int {
	return 2
}()
'''


def line_of(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start:end]


def test_statement_sites_are_statement_lines_inside_functions():
    rests = [GO[o:GO.find("\n", o)] for o in statement_sites(GO)]
    assert rests == [
        "a := w * h", "return a",
        "b.w += n", 'if n > 10 {', 'fmt.Println("big") // loud', "x := 1; y := 2", "_ = x + y",
        'out := ""', "for _, v := range s {", "out += v", "go func() {", 'out += "é"', "return out",
    ]
    # Not cut: the one-line body of One, the function literal of a package-level var.
    assert all(not GO[GO.rfind("\n", 0, o) + 1:o].strip() for o in statement_sites(GO))


def test_statement_sites_skip_statements_sharing_a_line():
    rests = [GO[o:GO.find("\n", o)] for o in statement_sites(GO)]
    assert "y := 2" not in rests
    assert "return 1 }" not in rests and "return 2" not in rests


def test_body_sites_take_two_to_fifteen_line_bodies():
    bodies = [GO[s:e] for s, e in body_sites(GO)]
    assert bodies[0] == "\ta := w * h\n\treturn a\n"
    assert bodies[1].startswith("\tb.w += n\n") and bodies[1].endswith("\t_ = x + y\n")
    assert bodies[2].startswith('\tout := ""\n') and bodies[2].endswith("\treturn out\n")
    assert len(bodies) == 3  # One() is one line; the var's func literal is not top-level
    assert body_sites(GO, lines=(3, 15)) == body_sites(GO)[1:]


def test_cases_hole_and_splice_round_trip():
    cases = file_cases("r", "shapes.go", GO, seed=1)
    assert sum(len(v) for v in cases.values()) == len(statement_sites(GO)) + 3
    for kind, lst in cases.items():
        for c in lst:
            expected = c.expected(GO)
            holed = c.holed(GO)
            assert c.splice(GO, expected) == GO
            assert holed[: c.offset] == GO[: c.offset]
            assert holed == GO[: c.offset] + GO[c.hole_end:]
            assert len(holed) == len(GO) - len(expected) and expected
            line, col = c.line, c.column
            assert GO.split("\n")[line - 1][:col] == GO[GO.rfind("\n", 0, c.offset) + 1:c.offset]
            if kind == "body":
                assert holed[c.offset:].startswith("}") and holed[c.offset - 2:c.offset] == "{\n"
                assert c.splice(GO, expected.rstrip("\n")) == GO  # the closing line break is added
            else:
                assert "\n" not in expected and expected.strip()
                if kind == "midline":
                    assert line_of(GO, c.offset)[:col].strip()  # something typed before
                else:
                    assert not line_of(GO, c.offset)[:col].strip()
    # A line suggestion is spliced up to its first line only.
    c = cases["line"][0]
    assert c.splice(GO, c.expected(GO) + "\nextra") == GO


def test_case_cutting_is_deterministic_and_seeded():
    a = file_cases("r", "shapes.go", GO, seed=0)
    assert a == file_cases("r", "shapes.go", GO, seed=0)
    kinds = {s: {c.offset: c.kind for k in ("line", "midline") for c in file_cases("r", "shapes.go", GO, seed=s)[k]}
             for s in range(6)}
    assert len({tuple(sorted(v.items())) for v in kinds.values()}) > 1  # the seed matters


def _fake(repo: str, path: str, n: int, kind: str = "line") -> list[Case]:
    return [Case(kind, repo, path, i * 10, i * 10 + 5, i + 1, 1) for i in range(n)]


def test_select_spreads_over_repos_and_files_with_caps():
    per_file = {
        ("a", "1.go"): {"line": _fake("a", "1.go", 20)},
        ("a", "2.go"): {"line": _fake("a", "2.go", 20)},
        ("b", "1.go"): {"line": _fake("b", "1.go", 2)},
        ("c", "1.go"): {"line": _fake("c", "1.go", 20), "body": _fake("c", "1.go", 5, "body")},
    }
    got = select_cases(per_file, {"line": 12, "midline": 5, "body": 3}, {"line": 4, "body": 2})
    lines = [c for c in got if c.kind == "line"]
    assert len(lines) == 12  # offered (caps of 4 per file): a 4+4, b 2, c 4
    # Repositories take turns until one runs out (b after 2, c after 4); a's files alternate.
    per = Counter(c.repo for c in lines)
    assert per == {"a": 6, "b": 2, "c": 4}
    assert Counter(c.path for c in lines if c.repo == "a") == {"1.go": 3, "2.go": 3}
    assert [c.kind for c in got].count("body") == 2  # capped at 2 per file, one file has bodies
    assert got == select_cases(per_file, {"line": 12, "midline": 5, "body": 3}, {"line": 4, "body": 2})


def test_select_takes_exactly_the_count_when_enough():
    per_file = {(r, f): {"line": _fake(r, f, 10)} for r in "xyz" for f in ("a.go", "b.go")}
    got = select_cases(per_file, {"line": 7}, {"line": 10})
    assert len(got) == 7 and {c.repo for c in got} == {"x", "y", "z"}


def _dp(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_levenshtein_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("ab(){}é\n") for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice("ab(){}é\n") for _ in range(rng.randint(0, 90)))
        assert levenshtein(a, b) == _dp(a, b), (a, b)
    assert levenshtein("kitten", "sitting") == 3
    long_a, long_b = "x := 1\n" * 100, "x := 2\n" * 100
    assert levenshtein(long_a, long_b) == 100


def test_edit_similarity_and_line_scores():
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("abcd", "abcf") == 0.75
    assert score_line("return a  \nmore", "return a") == {"answered": True, "exact": True, "similarity": 1.0}
    assert score_line("return b", "return a")["exact"] is False
    assert score_line("  ", "return a") == {"answered": False, "exact": False, "similarity": 0.0}
    assert score_line(None, "x")["answered"] is False
    s = score_body_text("\ta := 1  \n\treturn a\n\n", "\ta := 1\n\treturn a\n")
    assert s == {"answered": True, "exact": True, "similarity": 1.0}


def test_aggregate_and_summary_line():
    recs = [
        {"kind": "line", "answered": True, "exact": True, "similarity": 1.0, "latency_ms": 10},
        {"kind": "line", "answered": True, "exact": False, "similarity": 0.5, "latency_ms": 30},
        {"kind": "line", "answered": False, "exact": False, "similarity": 0.0, "latency_ms": 20},
        {"kind": "line", "answered": True, "exact": True, "similarity": 1.0, "latency_ms": 40},
        {"kind": "body", "answered": True, "exact": False, "similarity": 0.6, "latency_ms": 100,
         "parses": True, "vet_eligible": True, "vet_ok": True},
        {"kind": "body", "answered": True, "exact": False, "similarity": 0.4, "latency_ms": 300,
         "parses": True, "vet_eligible": True, "vet_ok": True},
        {"kind": "body", "answered": False, "exact": False, "similarity": 0.0, "latency_ms": 200,
         "parses": False, "vet_eligible": False, "vet_ok": False},
    ]
    agg = aggregate(recs)
    assert agg["line"]["exact"] == 0.5 and agg["line"]["answered"] == 0.75
    assert agg["line"]["similarity"] == 0.625
    assert agg["line"]["latency"] == {"n": 4, "p50_ms": 30, "p95_ms": 40, "max_ms": 40}
    assert agg["body"]["parses"] == round(2 / 3, 4)
    assert agg["body"]["vet_n"] == 2 and agg["body"]["vet_ok"] == 1.0
    assert agg["body"]["vet_ok_sim50"] == 0.5
    assert "midline" not in agg
    line = summary_line("index", agg)
    assert line.startswith("index: next-line exact 0.500 sim 0.62 ans 0.75")
    assert "body exact 0.000" in line and "vet 1.00 vet+sim50 0.50 (vet n=2)" in line


def test_packages_select_by_directory_or_import_path(tmp_path):
    from benchmarks.quality import collect_files, wanted_package

    assert wanted_package(".", "example.com/m", {"."})
    assert wanted_package("lru", "example.com/m", {"example.com/m/lru"})
    assert not wanted_package("lru", "example.com/m", {"example.com/m"})
    assert wanted_package("a/b", None, None)
    repo = tmp_path / "m"
    (repo / "lru").mkdir(parents=True)
    (repo / "go.mod").write_text("module example.com/m\n\ngo 1.21\n")
    (repo / "m.go").write_text("package m\n\nfunc F() int {\n\tx := 1\n\treturn x\n}\n")
    (repo / "lru" / "lru.go").write_text("package lru\n\nfunc G() {}\n")
    (repo / "lru" / "lru_test.go").write_text("package lru\n")
    (repo / "lru" / "gen.go").write_text("// Code generated by x. DO NOT EDIT.\n\npackage lru\n")
    assert sorted(collect_files([repo], None)) == [("m", "lru/lru.go"), ("m", "m.go")]
    assert sorted(collect_files([repo], {"example.com/m/lru"})) == [("m", "lru/lru.go")]


def test_quality_dev_refuses_bad_kinds_and_settings_before_any_work():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_dev.py"
    for args, said in ((["--kinds", "line,nope"], "--kinds: expected a comma list"),
                       (["--kinds", ","], "--kinds: expected a comma list"),
                       (["--set", "stops.NO_SUCH=1"], "hrm_lsp.inference.stops has no such constant"),
                       (["--set", "NO_SUCH=1"], "hrm_lsp.inference.engine has no such constant"),
                       (["--set", "lowercase=1"], "expected NAME=VALUE")):
        r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)
    from benchmarks.quality_dev import engine_setting

    assert engine_setting("stops.REPEAT_LINES=0") == ("stops.REPEAT_LINES", 0)
    assert engine_setting("PICK_MARGIN=2.5") == ("PICK_MARGIN", 2.5)
    assert engine_setting("CHOOSE_BY=index") == ("CHOOSE_BY", "index")
