"""The validator pipeline against the real Go toolchain: gofmt, go vet, tests, caching."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hrm_lsp.validators import InvalidSourceError, ValidationResult, find_go, validate
from hrm_lsp.validators.gotest import tests_mentioning as find_tests

TIMEOUT = 120.0  # generous: the first vet on a cold build cache compiles fmt & co.


def write_module(root: Path, files: dict[str, str], module: str = "example.com/demo") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text(f"module {module}\n\ngo 1.21\n")
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.fixture(scope="session")
def warm_go(tmp_path_factory) -> None:
    """One vet of a package using the stdlib packages the tests use, so the shared GOCACHE
    is warm and each later test pays only for its own package."""
    root = write_module(tmp_path_factory.mktemp("warm"), {
        "w.go": 'package w\n\nimport (\n\t"fmt"\n\t"os"\n\t"sort"\n\t"strings"\n)\n\n'
                'func W() { fmt.Println(strings.ToUpper("x"), sort.IntsAreSorted(nil), os.Args) }\n',
    })
    r = validate((root / "w.go").read_text(), root / "w.go", timeout=300, use_cache=False)
    assert r.ok and r.unavailable is None, r


def vet(text: str, path: Path, **kw) -> ValidationResult:
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("use_cache", False)
    return validate(text, path, **kw)


def by_stage(r: ValidationResult, stage: str):
    return [d for d in r.diagnostics if d.stage == stage]


# --- gofmt --------------------------------------------------------------------------------

def test_unformatted_code_gets_formatted_text_and_an_info_note(tmp_path: Path, warm_go):
    text = "package p\nfunc  F( x int )int{\nreturn x}\n"
    r = vet(text, tmp_path / "f.go", stages=("syntax", "gofmt"))
    assert r.ok and r.changed and r.stage == "gofmt"
    assert r.formatted == "package p\n\nfunc F(x int) int {\n\treturn x\n}\n"
    (d,) = by_stage(r, "gofmt")
    assert d.severity == "info" and d.line == 2 and "gofmt" in d.message


def test_gofmt_parse_errors_are_positioned(tmp_path: Path):
    r = vet("package p\n\nfunc f() {\n\tx := [1, 2\n}\n", tmp_path / "f.go", stages=("gofmt",))
    assert not r.ok and r.formatted is None
    d = by_stage(r, "gofmt")[0]
    assert d.line in (4, 5) and d.severity == "error"


def test_already_formatted_code_is_unchanged(stdlib_src: Path, warm_go):
    p = stdlib_src / "strings" / "compare.go"
    text = p.read_text()
    r = vet(text, p, stages=("syntax", "gofmt"))
    assert r.ok and not r.changed and r.formatted == text and r.diagnostics == []


# --- vet ------------------------------------------------------------------------------------

VET_BAD = """package demo

import "fmt"

func Show(n int) {
	fmt.Printf("%d items\\n", "many")
	return
	fmt.Println(n)
}
"""


def test_vet_findings_printf_and_unreachable(tmp_path: Path, warm_go):
    root = write_module(tmp_path, {"show.go": VET_BAD})
    r = vet(VET_BAD, root / "show.go")
    assert not r.ok and r.stage == "vet" and r.unavailable is None
    found = {(d.line, d.column, d.severity): d.message for d in by_stage(r, "vet")}
    # Go points at the format verb: `%d` in `fmt.Printf("%d items\n", "many")`
    assert (6, 14, "warning") in found and "wrong type string" in found[(6, 14, "warning")]
    assert (8, 2, "warning") in found and "unreachable code" in found[(8, 2, "warning")]


def test_unused_variable_is_a_type_error(tmp_path: Path, warm_go):
    text = "package demo\n\nfunc F() {\n\tcount := 3\n}\n"
    root = write_module(tmp_path, {"f.go": text})
    r = vet(text, root / "f.go")
    (d,) = by_stage(r, "vet")
    assert (d.line, d.column, d.severity) == (4, 2, "error")
    assert d.message == "declared and not used: count"


def test_unsaved_text_is_vetted_and_user_files_are_not_written(tmp_path: Path, warm_go):
    root = write_module(tmp_path, {"show.go": VET_BAD})
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    fixed = VET_BAD.replace('"many"', "n").replace("\treturn\n\tfmt.Println(n)\n", "")
    r = vet(fixed, root / "show.go")
    assert r.ok and r.diagnostics == [], r.diagnostics
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before


def test_multi_file_package(tmp_path: Path, warm_go):
    root = write_module(tmp_path, {
        "a.go": "package demo\n\nfunc A() int { return helper() + 1 }\n",
        "b.go": "package demo\n\nfunc helper() int { return 41 }\n\nfunc UsesA() int { return A() }\n",
    })
    assert vet((root / "a.go").read_text(), root / "a.go").ok
    # Deleting A breaks b.go: the finding is anchored at our package line, naming b.go.
    r = vet("package demo\n\nfunc Z() int { return helper() }\n", root / "a.go")
    (d,) = by_stage(r, "vet")
    assert d.line == 1 and d.message.startswith("b.go:5:") and "undefined: A" in d.message


def test_module_importing_its_own_internal_package(tmp_path: Path, warm_go):
    root = write_module(tmp_path, {
        "internal/mathx/mathx.go": "package mathx\n\n// Double doubles.\nfunc Double(x int) int { return 2 * x }\n",
        "cmd/tool/main.go": 'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/demo/internal/mathx"\n)\n\n'
                            "func main() { fmt.Println(mathx.Double(21)) }\n",
    })
    main = root / "cmd" / "tool" / "main.go"
    assert vet(main.read_text(), main).ok
    r = vet(main.read_text().replace("mathx.Double", "mathx.Triple"), main)
    (d,) = by_stage(r, "vet")
    assert d.line == 9 and "undefined: mathx.Triple" in d.message and r.unavailable is None


def test_stdlib_imports_in_a_file_outside_any_module(tmp_path: Path, warm_go):
    text = ('package main\n\nimport (\n\t"fmt"\n\t"os"\n\t"sort"\n\t"strings"\n)\n\n'
            "func main() {\n\tw := strings.Fields(os.Args[0])\n\tsort.Strings(w)\n\tfmt.Println(w)\n}\n")
    r = vet(text, tmp_path / "loose" / "main.go")  # directory does not even exist
    assert r.ok and r.stage == "vet" and r.diagnostics == []


def test_real_stdlib_package_in_place(stdlib_src: Path, warm_go):
    p = stdlib_src / "strings" / "compare.go"
    r = vet(p.read_text(), p)
    assert r.ok and r.unavailable is None
    broken = p.read_text().replace("bytealg.CompareString(a, b)", "bytealg.CompareStrings(a, b)")
    r = vet(broken, p)
    (d,) = by_stage(r, "vet")
    assert d.line == 16 and "undefined: bytealg.CompareStrings" in d.message


def test_missing_third_party_module_is_unavailable_not_a_failure(tmp_path: Path, warm_go):
    text = 'package demo\n\nimport "github.com/nobody/nothing/v9"\n\nvar X = nothing.Value\n'
    root = write_module(tmp_path, {"dep.go": text})
    gomod = (root / "go.mod").read_bytes()
    r = vet(text, root / "dep.go")
    assert r.ok and r.stage == "vet" and by_stage(r, "vet") == []
    assert r.unavailable and "github.com/nobody/nothing/v9" in r.unavailable
    assert "not available offline" in r.unavailable
    assert (root / "go.mod").read_bytes() == gomod and not (root / "go.sum").exists()


def test_missing_package_inside_own_module_is_a_code_error(tmp_path: Path, warm_go):
    text = 'package demo\n\nimport "example.com/demo/nosuch"\n\nvar X = nosuch.Value\n'
    root = write_module(tmp_path, {"dep.go": text})
    r = vet(text, root / "dep.go")
    assert r.unavailable is None and not r.ok
    assert by_stage(r, "vet")[0].line == 3


def test_vet_timeout_is_reported_and_not_cached(tmp_path: Path, warm_go):
    text = "package demo\n\nfunc F() {}\n"
    root = write_module(tmp_path, {"f.go": text})
    r = validate(text, root / "f.go", stages=("syntax", "vet"), timeout=0.001)
    assert r.unavailable and "timed out" in r.unavailable and r.stage == "vet"
    again = validate(text, root / "f.go", stages=("syntax", "vet"), timeout=TIMEOUT)
    assert not again.cached and again.unavailable is None and again.ok


def test_non_ascii_identifiers_and_strings_map_to_code_point_columns(tmp_path: Path, warm_go):
    text = ('package demo\n\nimport "fmt"\n\nfunc Grüße(名前 string) {\n'
            '\tfmt.Printf("😀 %d 名前\\n", 名前)\n}\n')
    root = write_module(tmp_path, {"g.go": text})
    r = vet(text, root / "g.go")
    (d,) = by_stage(r, "vet")
    line = text.split("\n")[5]
    assert d.line == 6 and "wrong type string" in d.message
    assert line[d.column - 1:d.end_column - 1] == "%d"  # after a 4-byte emoji


def test_crlf_file(tmp_path: Path, warm_go):
    text = "package demo\r\n\r\nfunc F() {\r\n\tcount := 3\r\n}\r\n"
    root = write_module(tmp_path, {})
    (root / "f.go").write_bytes(text.encode())
    r = vet(text, root / "f.go")
    assert not r.changed and r.formatted == text  # line endings alone are not "unformatted"
    (d,) = by_stage(r, "vet")
    assert (d.line, d.column) == (4, 2) and "declared and not used" in d.message


def test_invalid_utf8_bytes_are_a_clear_error(tmp_path: Path):
    with pytest.raises(InvalidSourceError, match=r"bad\.go:3:.*not valid UTF-8"):
        validate(b"package p\n\nvar s = \"caf\xe9\"\n", tmp_path / "bad.go")


def test_unknown_stage_is_rejected():
    with pytest.raises(ValueError, match="unknown validator stage"):
        validate("package p\n", None, stages=("syntax", "lint"))


def test_five_megabyte_file_is_bounded(tmp_path: Path, warm_go):
    parts, size, i = ['package big\n\nimport "fmt"\n'], 0, 0
    while size < 5_000_000:
        parts.append(f'\n// F{i} formats.\nfunc F{i}(x int) string {{\n\treturn fmt.Sprint(x, {i}, "é")\n}}\n')
        size += len(parts[-1])
        i += 1
    text = "".join(parts)
    broken = text + "\nfunc Broken( {\n"
    r = validate(broken, tmp_path / "big.go", stages=("syntax", "gofmt", "vet"), use_cache=False)
    assert not r.ok and r.stage == "syntax"
    assert r.diagnostics[0].line == broken.count("\n")
    r = validate(text, tmp_path / "big.go", stages=("syntax", "gofmt"), timeout=TIMEOUT, use_cache=False)
    assert r.ok and not r.changed and r.formatted == text


# --- cache and threads -----------------------------------------------------------------------

def test_cache_hit_and_invalidation_by_package_context(tmp_path: Path, warm_go):
    a = "package demo\n\nfunc A() int { return b() }\n"
    root = write_module(tmp_path, {"a.go": a, "b.go": "package demo\n\nfunc b() int { return 1 }\n"})
    first = validate(a, root / "a.go", timeout=TIMEOUT)
    hit = validate(a, root / "a.go", timeout=TIMEOUT)
    assert first.ok and not first.cached and hit.cached and hit.ok and hit.diagnostics == []
    (root / "b.go").write_text("package demo\n\nfunc c() int { return 1 }\n")  # b() gone
    after = validate(a, root / "a.go", timeout=TIMEOUT)
    assert not after.cached and not after.ok
    assert "undefined: b" in by_stage(after, "vet")[0].message


def test_concurrent_validation_from_threads(tmp_path: Path, warm_go):
    root = write_module(tmp_path, {})
    results: dict[int, ValidationResult] = {}

    def work(i: int) -> None:
        d = root / f"p{i}"
        d.mkdir()
        text = f"package p{i}\n\nfunc F() {{\n\tv{i} := {i}\n}}\n" if i % 2 else f"package p{i}\n\nfunc F() int {{ return {i} }}\n"
        results[i] = validate(text, d / "f.go", timeout=TIMEOUT, use_cache=False)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in results.items():
        if i % 2:
            assert [d.message for d in r.diagnostics] == [f"declared and not used: v{i}"]
        else:
            assert r.ok and r.diagnostics == []


# --- tests stage (opt-in) ------------------------------------------------------------------------

CALC = "package calc\n\n// Add adds.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n\nfunc Sub(a, b int) int { return a - b }\n"
CALC_TEST = """package calc

import (
	"os"
	"testing"
	"time"
)

func TestAdd(t *testing.T) {
	if Add(2, 2) != 4 {
		t.Fatalf("Add(2, 2) = %d", Add(2, 2))
	}
}

func TestSub(t *testing.T) {
	if Sub(3, 1) != 2 {
		t.Fatal("bad sub")
	}
}

func TestHang(t *testing.T) {
	marker := os.Getenv("HRM_TEST_MARKER")
	if marker == "" {
		t.Skip("only when asked")
	}
	os.WriteFile(marker, []byte(os.Getpid()), 0o644)
	time.Sleep(time.Hour)
}
"""


def test_tests_mentioning_finds_callers():
    assert find_tests("Add", [CALC_TEST]) == ["TestAdd"]
    assert find_tests("Sub", [CALC_TEST]) == ["TestSub"]
    assert find_tests("Mul", [CALC_TEST]) == []


def test_test_stage_runs_the_tests_of_the_edited_function(tmp_path: Path, warm_go):
    root = write_module(tmp_path, {"calc.go": CALC, "calc_test.go": CALC_TEST.replace("[]byte(os.Getpid())", "[]byte(\"x\")")})
    stages = ("syntax", "gofmt", "vet", "test")
    ok = validate(CALC, root / "calc.go", stages=stages, focus=CALC.index("a + b"), timeout=TIMEOUT)
    assert ok.ok and ok.stage == "test" and ok.unavailable is None
    wrong = CALC.replace("a + b", "a * b + 1")
    r = validate(wrong, root / "calc.go", stages=stages, focus=wrong.index("a * b"), timeout=TIMEOUT)
    (d,) = by_stage(r, "test")
    assert not r.ok and d.line == 4 and d.message.startswith("TestAdd failed") and "Add(2, 2) = 5" in d.message
    # Sub is untouched and its test still passes, so focusing it passes even with Add broken.
    r = validate(wrong, root / "calc.go", stages=stages, focus=wrong.index("a - b"), timeout=TIMEOUT)
    assert r.ok and r.stage == "test"
    # A rename that breaks the tests' build: compile errors in the test file, as test findings.
    renamed = CALC.replace("func Add", "func Plus")
    r = validate(renamed, root / "calc.go", stages=("syntax", "test"), focus=renamed.index("a + b"), timeout=TIMEOUT)
    assert not r.ok and {d.stage for d in r.diagnostics} == {"test"}
    assert any(d.message.startswith("calc_test.go:10:") and "undefined: Add" in d.message for d in r.diagnostics)


def test_test_stage_timeout_kills_the_test_binary(tmp_path: Path, warm_go, monkeypatch):
    root = write_module(tmp_path, {"calc.go": CALC, "calc_test.go": CALC_TEST.replace("[]byte(os.Getpid())", "[]byte(strconv.Itoa(os.Getpid()))").replace('"os"', '"os"\n\t"strconv"')})
    stages = ("syntax", "test")
    assert validate(CALC, root / "calc.go", stages=stages, timeout=TIMEOUT).ok  # builds, TestHang skips
    marker = tmp_path / "pid"
    monkeypatch.setenv("HRM_TEST_MARKER", str(marker))
    r = validate(CALC, root / "calc.go", stages=stages, timeout=8, use_cache=False)
    assert r.unavailable and "timed out" in r.unavailable
    pid = int(marker.read_text())  # the test binary really started ...
    assert _dies(pid)  # ... and was killed with its process group


def _dies(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` is gone or a zombie (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_go_version_is_part_of_the_result(tmp_path: Path, warm_go):
    r = vet("package p\n", tmp_path / "p.go", stages=("syntax", "gofmt"))
    assert r.go_version == find_go().version


def test_module_needing_a_newer_go_is_unavailable_and_names_the_users_go_mod(tmp_path: Path):
    root = write_module(tmp_path, {"n.go": "package n\n\nfunc F() {}\n"})
    (root / "go.mod").write_text("module example.com/n\n\ngo 1.999\n")
    r = vet((root / "n.go").read_text(), root / "n.go")
    assert r.ok and r.diagnostics == []
    assert r.unavailable and "needs a newer Go" in r.unavailable
    assert str(root / "go.mod") in r.unavailable


def test_stale_workspaces_are_swept(tmp_path: Path, monkeypatch):
    from hrm_lsp.validators import workspace

    monkeypatch.setenv("HRM_LSP_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "tmp"
    old, fresh = root / "ws-old", root / "ws-fresh"
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "x.go").write_text("package x\n")
    day_ago = time.time() - workspace.STALE_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    assert workspace.tmp_root() == root
    assert not old.exists() and fresh.exists()


def test_read_source_names_every_bad_file(tmp_path):
    from hrm_lsp.validators.types import InvalidSourceError, read_source

    with pytest.raises(InvalidSourceError, match="no such file"):
        read_source(tmp_path / "absent.go")
    with pytest.raises(InvalidSourceError, match="is a directory"):
        read_source(tmp_path)
    bad = tmp_path / "bad.go"
    bad.write_bytes(b"package p\n// \xff\n")
    with pytest.raises(InvalidSourceError, match=r"bad.go:2:4: not valid UTF-8"):
        read_source(bad)
    good = tmp_path / "good.go"
    good.write_text("package p\n", encoding="utf-8")
    assert read_source(good) == "package p\n"
