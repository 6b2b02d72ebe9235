"""pijul change histories (hrm_lsp.data.pijul).

The sample `pijul change` output below is written from pijul 1.0's source, not captured from a
binary (pijul is not installable where this was written): the TOML header is ChangeHeader
serialized by `toml::ser::to_string_pretty`, dependency lines are `[N] HASH # message` and
`[N]+HASH # message` (libpijul/src/change/text_changes.rs), hunk headers and their edge, context
and content lines follow `PrintableHunk::write` in libpijul/src/change/printable.rs (beta.9).
`test_real_pijul_history` runs the real binary when one is on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from data_helpers import CALC_V1, CALC_V2, CALC_V3, SHAPE, git
from pijul_standin import make_repo

from hrm_lsp.data import PrepareOptions, prepare
from hrm_lsp.data.pijul import (
    PijulChange,
    PijulFormatError,
    PijulHunk,
    change_records,
    check_pijul_repo,
    history_backend,
    iter_pijul_history,
    parse_change_text,
    parse_hash_list,
    parse_since,
    pijul_root,
    read_quoted,
)
from hrm_lsp.data.sources import ChangeRecord, Skips, SourceError

H1 = "UKTYM7AXWHSH2BEXKNKN5JPW6BOEJCGRDBUVXBFD3EIMOSB7N4YAC"
H2 = "MJ7DWRTZ2GHJ4C2EQJ3LOBZRWR4TBQNSDDVYDMVRKDRJ5PYUMXHQC"
H3 = "ZN3MKJ2CXVH5N7YDRZPBKPA5JVNGVPYDOUXVLQB3JTXMNPCHKSHAC"

CHANGE_TEXT = f"""message = 'calc: fix off-by-one in Sum'
description = '''
The loop skipped the first element.
Reported by the tests.'''
timestamp = '2024-02-01T10:00:00.123456789Z'

[[authors]]
key = '7VaUxnAHQmRDbqiM9jpHM2Uhx1xXcqcTUvr5VS1NStgr'

# Dependencies
[2] {H1} # Add calc package with Sum
[3]+{H3} #

# Hunks

1. Replacement in "calc/sum.go":6 2.23 "UTF-8"
B:BD 2.95 -> 2.95:127/2
  up 2.95, new 0:32, down 2.127
- \tfor i := 1; i < len(xs); i++ {{
+ \tfor i := 0; i < len(xs); i++ {{

2. File addition: "mean.go" in "calc" "UTF-8"
  up 2.1, new 33:42
+ package calc
+{' '}
+ // 3. not a hunk header: content lines start with "+ "
+ func Mean(xs []int) int {{ return Sum(xs) / len(xs) }}

3. File addition: "internal" in "calc" +dx "UTF-8"
  up 2.1, new 120:128

4. Moved: "calc/total.go" "total.go"  2.40
B:BD 2.38 -> 2.40:40/2
up 2.1, down 2.40

5. File deletion: "calc/old \\"quoted\\".go" 2.60 "UTF-8"
B:BD 2.58 -> 2.60:60/2
BF:BFD 2.60 -> 2.61:200/2
- package calc

6. Edit in "README.md":1 2.200 "UTF-8"
  up 2.210, new 250:260, down 2.210
+ calc

7. File addition: "logo.png" in "" "binary"
  up 1.0, new 300:308
+biVBORw0KGgo=

8. Solving an order conflict in "calc/sum.go":9 2.300 "UTF-8"
  up 2.301, new 400:410, down 2.302
+ }}
"""


def test_change_text_header_and_hunks() -> None:
    c = parse_change_text(CHANGE_TEXT, H2)
    assert c.hash == H2
    assert c.message == ("calc: fix off-by-one in Sum\n\n"
                         "The loop skipped the first element.\nReported by the tests.")
    assert c.timestamp == datetime(2024, 2, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert c.hunks == (
        PijulHunk("edit", "calc/sum.go"),
        PijulHunk("add", "calc/mean.go"),
        PijulHunk("add", "calc/internal", is_dir=True),
        PijulHunk("move", "calc/total.go"),
        PijulHunk("delete", 'calc/old "quoted".go'),
        PijulHunk("edit", "README.md"),
        PijulHunk("add", "logo.png"),
        PijulHunk("conflict", "calc/sum.go"),
    )


def test_change_text_root_change_and_colours() -> None:
    # The first change of a repository adds the root directory only; colours are dropped.
    text = ("\x1b[1mmessage = ''\x1b[0m\ntimestamp = '2024-01-01T00:00:00Z'\n\n[[authors]]\n\n"
            "# Hunks\n\n1. Root add\n  up 1.0, new 0:0\n")
    c = parse_change_text(text, H3)
    assert c.message == "" and c.hunks == (PijulHunk("root", ""),)
    assert c.timestamp == datetime(2024, 1, 1, tzinfo=timezone.utc)


def test_change_text_errors() -> None:
    with pytest.raises(PijulFormatError, match="not TOML"):
        parse_change_text("message = unquoted words\n# Hunks\n", H1)
    with pytest.raises(PijulFormatError, match="none of its 1 hunk headers"):
        parse_change_text("message = 'x'\n\n# Hunks\n\n1. Teleported: \"a.go\"\n", H1)
    with pytest.raises(PijulFormatError, match="unterminated"):
        parse_change_text("message = 'x'\n\n# Hunks\n\n1. Edit in \"a.go:3 2.1\n", H1)
    with pytest.raises(PijulFormatError, match="parent directory"):
        parse_change_text("message = 'x'\n\n# Hunks\n\n1. File addition: \"a.go\" \"UTF-8\"\n", H1)


def test_read_quoted_escapes() -> None:
    s = r'x "a\"b\\c\nd\te" y'
    text, end = read_quoted(s, 2)
    assert text == 'a"b\\c\nd\te' and s[end:] == " y"
    with pytest.raises(PijulFormatError, match="unknown escape"):
        read_quoted(r'"a\qb"', 0)
    with pytest.raises(PijulFormatError, match="expected a quoted string"):
        read_quoted("abc", 0)


def test_hash_list() -> None:
    assert parse_hash_list(f"{H2}\n{H1}\n\n") == [H2, H1]
    assert parse_hash_list("") == []
    with pytest.raises(PijulFormatError, match="not a change hash"):
        parse_hash_list("No matching logs found\n")


def test_since_forms() -> None:
    now = datetime(2024, 6, 1, tzinfo=timezone.utc)
    assert parse_since("2024-03-01") == datetime(2024, 3, 1, tzinfo=timezone.utc)
    assert parse_since("2024-03-01T12:00:00+02:00") == datetime(2024, 3, 1, 10, tzinfo=timezone.utc)
    assert parse_since("2024-03-01T12:00:00Z") == datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
    assert parse_since("@86400") == datetime(1970, 1, 2, tzinfo=timezone.utc)
    assert parse_since("2 weeks ago", now) == now - timedelta(days=14)
    assert parse_since("1 year ago", now) == now - timedelta(days=365)
    with pytest.raises(SourceError, match="ISO date"):
        parse_since("last tuesday")


# ---------------------------------------------------------------------------------------------
# records of one change, from two states


def _records(change, after, before, **kw):
    skips = Skips()
    out = change_records(change, after, before, skips, name="calc", **kw)
    return out, skips


def _ch(*hunks: tuple[str, str], message: str = "msg") -> PijulChange:
    return PijulChange(H1, message, None, tuple(PijulHunk(op, p) for op, p in hunks))


def test_records_modified_added_deleted() -> None:
    before = {"calc/sum.go": CALC_V1.encode(), "calc/gone.go": SHAPE.encode()}
    after = {"calc/sum.go": CALC_V2.encode(), "calc/point.go": b"package calc\n\nvar P = 1\n"}
    ch = _ch(("edit", "calc/sum.go"), ("add", "calc/point.go"), ("delete", "calc/gone.go"),
             ("edit", "README.md"), message="calc: fix Sum")
    out, skips = _records(ch, after, before)
    assert [(r.path, r.before == "", r.source, r.commit) for r, _ in out] == [
        ("calc/sum.go", False, "pijul", H1), ("calc/point.go", True, "pijul", H1)]
    rec, n = out[0]
    assert rec == ChangeRecord("calc", H1, "calc/sum.go", CALC_V1, CALC_V2, "calc: fix Sum", "pijul")
    assert n == 2  # one line removed, one added
    assert skips.counts["file deleted"] == 1 and skips.examples["file deleted"] == [f"calc@{H1[:12]}:calc/gone.go"]


def test_records_move_takes_the_old_file_as_before() -> None:
    moved = CALC_V3.replace("Sum", "Total")  # edited while moved: most lines still alike
    before = {"calc/sum.go": CALC_V3.encode(), "calc/other.go": SHAPE.encode()}
    after = {"calc/total.go": moved.encode(), "calc/other.go": SHAPE.encode()}
    out, skips = _records(_ch(("move", "calc/total.go"), ("edit", "calc/total.go")), after, before)
    assert len(out) == 1 and out[0][0].path == "calc/total.go"
    assert out[0][0].before == CALC_V3 and out[0][0].after == moved
    assert "file deleted" not in skips.counts
    # A pure rename (same text) is not a change, as with git.
    out, skips = _records(_ch(("move", "calc/total.go")), {"calc/total.go": CALC_V3.encode()},
                          {"calc/sum.go": CALC_V3.encode()})
    assert out == [] and skips.counts["no content change (mode or rename only)"] == 1
    # An unrelated file that disappeared is not taken for the before-version.
    out, _ = _records(_ch(("add", "calc/new.go"), ("delete", "calc/sum.go")),
                      {"calc/new.go": SHAPE.encode()}, {"calc/sum.go": CALC_V1.encode()})
    assert out[0][0].before == ""


def test_records_filters_and_limits() -> None:
    gen = b"// Code generated by stringer. DO NOT EDIT.\n\npackage calc\n"
    conflict = b"package calc\n\n>>>>>>> 1 [UKTYM7AX]\nvar A = 1\n=======\nvar A = 2\n<<<<<<< 1\n"
    after = {"vendor/x/x.go": b"package x\n", "calc/gen.go": gen, "calc/c.go": conflict,
             "calc/link.go": "symlink or submodule", "calc/bin.go": b"package calc\x00",
             "other/o.go": b"package other\n"}
    hunks = [("add", p) for p in after]
    out, skips = _records(_ch(*hunks), after, {})
    assert [r.path for r, _ in out] == ["other/o.go"]
    for reason in ("vendored/testdata/hidden path", "generated", "pijul conflict markers",
                   "symlink or submodule", "binary"):
        assert skips.counts[reason] == 1, reason
    # A subdirectory source only sees its own files.
    out, _ = _records(_ch(*hunks), after, {}, prefix="other/")
    assert [r.path for r, _ in out] == ["other/o.go"]
    # Files beyond the per-commit limit are counted, not read.
    many = {f"calc/f{i}.go": f"package calc\n\nvar V{i} = {i}\n".encode() for i in range(5)}
    out, skips = _records(_ch(*[("add", p) for p in many]), many, {}, max_files_per_commit=3)
    assert len(out) == 3 and skips.counts["huge commit (files beyond the per-commit limit)"] == 2


# ---------------------------------------------------------------------------------------------
# finding repositories; pijul missing


def test_backend_detection(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert history_backend(plain) == "git" and pijul_root(plain) is None
    pj = tmp_path / "pj"
    (pj / ".pijul" / "pristine").mkdir(parents=True)
    (pj / "sub").mkdir()
    assert history_backend(pj) == "pijul" and history_backend(pj / "sub") == "pijul"
    assert pijul_root(pj / "sub") == pj.resolve()
    both = tmp_path / "both"  # git-pijul users keep both: the git history is read
    (both / ".pijul" / "pristine").mkdir(parents=True)
    git(both, "init", "-q")
    assert history_backend(both) == "git"
    nested = both / "vendored-pijul"  # a pijul repository inside a git work tree
    (nested / ".pijul" / "pristine").mkdir(parents=True)
    assert history_backend(nested) == "pijul"


def test_missing_pijul_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pj = tmp_path / "pj"
    (pj / ".pijul" / "pristine").mkdir(parents=True)
    monkeypatch.setattr("hrm_lsp.data.pijul.find_pijul", lambda: None)
    with pytest.raises(SourceError, match="`pijul` command is not on PATH.*snapshot"):
        list(iter_pijul_history(pj, Skips()))
    with pytest.raises(SourceError, match="not a pijul repository"):
        check_pijul_repo(tmp_path)
    (tmp_path / "broken" / ".pijul").mkdir(parents=True)
    with pytest.raises(SourceError, match="no pristine"):
        check_pijul_repo(tmp_path / "broken", "pijul")


def test_prepare_reads_a_pijul_repo_as_snapshot_without_pijul(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pj = tmp_path / "calcpj"
    (pj / ".pijul" / "pristine").mkdir(parents=True)
    (pj / "calc").mkdir()
    (pj / "calc" / "sum.go").write_text(CALC_V3)
    monkeypatch.setattr("hrm_lsp.data.pijul.find_pijul", lambda: None)
    m = prepare(PrepareOptions(sources=(str(pj),), history=True, tokenizer="byte",
                               refine_examples=0, val_fraction=0.0, test_fraction=0.0),
                tmp_path / "out", workers=1)
    kinds = {s["kind"]: s for s in m["sources"]}
    assert set(kinds) == {"pijul", "dir"}
    assert "not on PATH" in kinds["pijul"]["error"]
    assert kinds["dir"]["documents"] >= 1 and kinds["dir"]["error"] == ""


# ---------------------------------------------------------------------------------------------
# the walk, against the stand-in (tests/data/pijul_standin.py; not pijul)


STANDIN_CHANGES = [
    {"hash": H3, "message": "", "timestamp": "2024-01-01T00:00:00Z", "files": {}, "root": True},
    {"hash": H1, "message": "Add calc package with Sum", "timestamp": "2024-01-02T10:00:00Z",
     "files": {"calc/sum.go": CALC_V1, "README.md": "calc\n"}},
    {"hash": H2, "message": "calc: fix off-by-one in Sum", "timestamp": "2024-02-01T10:00:00Z",
     "description": "The loop skipped the first element.",
     "files": {"calc/sum.go": CALC_V2, "README.md": "calc\n", "util/point.go": SHAPE}},
    {"hash": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAC", "message": "Add Mean, move to total.go",
     "timestamp": "2024-03-01T10:00:00Z", "moves": {"calc/sum.go": "calc/total.go"},
     "files": {"calc/total.go": CALC_V3, "README.md": "calc\n", "util/point.go": SHAPE}},
]


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture()
def standin(tmp_path: Path) -> str:
    exe = tmp_path / "bin" / "pijul"
    exe.parent.mkdir()
    script = Path(__file__).with_name("pijul_standin.py")
    exe.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{script}' \"$@\"\n")
    exe.chmod(0o755)
    return str(exe)


def test_walk_newest_first_without_touching_the_repo(tmp_path: Path, standin: str) -> None:
    repo = make_repo(tmp_path / "calcpj", STANDIN_CHANGES)
    (repo / "calc" / "total.go").write_text(CALC_V3 + "// unrecorded edit\n")
    digest = _tree_digest(repo)
    skips = Skips()
    got = list(iter_pijul_history(repo, skips, pijul=standin))
    assert _tree_digest(repo) == digest  # the user's repository was only read
    assert [(r.commit[:4], r.path, r.before == "") for r, _ in got] == [
        ("AAAA", "calc/total.go", False),  # the move: before is the old sum.go
        ("MJ7D", "calc/sum.go", False), ("MJ7D", "util/point.go", True),
        ("UKTY", "calc/sum.go", True),
    ]
    move, fix = got[0][0], got[1][0]
    assert move.before == CALC_V2 and move.after == CALC_V3  # not the unrecorded edit
    assert fix.message == "calc: fix off-by-one in Sum\n\nThe loop skipped the first element."
    assert fix.before == CALC_V1 and fix.after == CALC_V2 and got[1][1] == 2
    assert all(r.repo == "calcpj" and r.source == "pijul" for r, _ in got)
    assert not skips.counts


def test_walk_bounds_and_subdirectory(tmp_path: Path, standin: str) -> None:
    repo = make_repo(tmp_path / "calcpj", STANDIN_CHANGES)
    got = list(iter_pijul_history(repo, Skips(), pijul=standin, max_commits=1))
    assert {r.commit[:4] for r, _ in got} == {"AAAA"}
    got = list(iter_pijul_history(repo, Skips(), pijul=standin, since="2024-01-15"))
    assert {r.commit[:4] for r, _ in got} == {"AAAA", "MJ7D"}
    # A subdirectory: only its files, and max_commits counts changes touching it.
    got = list(iter_pijul_history(repo / "util", Skips(), pijul=standin, max_commits=1, name="calcpj"))
    assert [(r.commit[:4], r.path) for r, _ in got] == [("MJ7D", "util/point.go")]


def test_walk_empty_repository_and_failing_unrecord(tmp_path: Path, standin: str) -> None:
    empty = make_repo(tmp_path / "empty", [])
    with pytest.raises(SourceError, match="no changes yet"):
        list(iter_pijul_history(empty, Skips(), pijul=standin))
    # A stand-in that cannot unrecord: the newest change is still mined (its before-state is
    # not readable, so nothing is), the walk stops with the reason counted.
    broken = tmp_path / "bin2" / "pijul"
    broken.parent.mkdir()
    broken.write_text(f"#!/bin/sh\n[ \"$1\" = unrecord ] && {{ echo 'Error: locked' >&2; exit 1; }}\n"
                      f"exec '{sys.executable}' '{Path(__file__).with_name('pijul_standin.py')}' \"$@\"\n")
    broken.chmod(0o755)
    repo = make_repo(tmp_path / "calcpj", STANDIN_CHANGES)
    skips = Skips()
    assert list(iter_pijul_history(repo, skips, pijul=str(broken))) == []
    assert skips.counts["pijul unrecord failed (older changes not read)"] == 1
    assert "Error: locked" in skips.examples["pijul unrecord failed (older changes not read)"][0]


def test_prepare_mines_pijul_history(tmp_path: Path, standin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "calcpj", STANDIN_CHANGES)
    monkeypatch.setattr("hrm_lsp.data.pijul.find_pijul", lambda: standin)
    m = prepare(PrepareOptions(sources=(str(repo),), history=True, snapshot=False, tokenizer="byte",
                               refine_examples=0, val_fraction=0.0, test_fraction=0.0),
                tmp_path / "out", workers=1)
    (src,) = m["sources"]
    assert src["kind"] == "pijul" and src["error"] == "" and src["commits"] == 3
    assert m["counts"]["kinds"]["pijul"] >= 3
    assert m["counts"]["plans"].get("FIX", 0) >= 1 and m["counts"]["plans"].get("ADD", 0) >= 1


# ---------------------------------------------------------------------------------------------
# the real binary


@pytest.mark.skipif(shutil.which("pijul") is None, reason="pijul is not installed here")
def test_real_pijul_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A throw-away identity: pijul signs every recorded change with one.
    for var, d in (("HOME", "home"), ("XDG_CONFIG_HOME", "cfg"), ("XDG_DATA_HOME", "data")):
        (tmp_path / d).mkdir()
        monkeypatch.setenv(var, str(tmp_path / d))
    env = {**os.environ, "NO_COLOR": "1", "EDITOR": "true", "VISUAL": "true"}
    repo = tmp_path / "calcpj"

    def pj(*args: str, cwd: Path = repo) -> str:
        r = subprocess.run(["pijul", *args], cwd=cwd, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120)
        assert r.returncode == 0, f"pijul {' '.join(args)}: {r.stderr}"
        return r.stdout

    pj("identity", "new", "--no-link", "--no-prompt", "--display-name", "T",
       "--email", "t@example.com", "hrm-test", cwd=tmp_path)
    pj("init", str(repo), cwd=tmp_path)
    (repo / "calc").mkdir()
    (repo / "calc" / "sum.go").write_text(CALC_V1)
    pj("add", "calc", "calc/sum.go")
    pj("record", "-a", "-m", "Add calc package with Sum", "--timestamp", "1704103200")
    (repo / "calc" / "sum.go").write_text(CALC_V2)
    pj("record", "-a", "-m", "calc: fix off-by-one in Sum", "--description",
       "The loop skipped the first element.", "--timestamp", "1706781600")
    digest = _tree_digest(repo)

    skips = Skips()
    got = list(iter_pijul_history(repo, skips))
    assert _tree_digest(repo) == digest, "the repository must only be read"
    assert [(r.path, r.message.splitlines()[0]) for r, _ in got] == [
        ("calc/sum.go", "calc: fix off-by-one in Sum"), ("calc/sum.go", "Add calc package with Sum")]
    assert got[0][0].before == CALC_V1 and got[0][0].after == CALC_V2
    assert got[1][0].before == "" and got[1][0].after == CALC_V1
    assert "The loop skipped the first element." in got[0][0].message
    assert json.dumps(skips.to_json())  # every skip has a reason
