"""``hrm-lsp check``: output format and the 0/1/2 exit-status contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from hrm_lsp.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "wordcount" / "wordcount.go"


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def module(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "go.mod").write_text("module example.com/clicheck\n\ngo 1.21\n")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_example_passes_through_the_real_console_script():
    # The README's demo command runs exactly this; use the installed entry point.
    exe = Path(sys.executable).parent / "hrm-lsp"
    proc = subprocess.run([str(exe), "check", str(EXAMPLE), "--timeout", "300"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_diagnostics_are_printed_as_path_line_col_stage_message(tmp_path: Path):
    text = "package clicheck\n\nimport \"fmt\"\n\nfunc F() {\n\tunused := 1\n\tfmt.Println()\n}\n"
    root = module(tmp_path, {"f.go": text})
    r = run("check", str(root / "f.go"), "--timeout", "300")
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [f"{root / 'f.go'}:6:2: vet: declared and not used: unused"]


def test_unformatted_file_is_a_diagnostic_but_no_vet_skips_vet(tmp_path: Path):
    root = module(tmp_path, {"f.go": "package clicheck\nfunc  F() {\n\tx := 1\n}\n"})
    r = run("check", "--no-vet", str(root / "f.go"))
    assert r.exit_code == 1
    (line,) = r.stdout.splitlines()
    assert line.startswith(f"{root / 'f.go'}:2:1: gofmt: info: not gofmt-formatted")
    assert "declared and not used" not in r.stdout


def test_json_output(tmp_path: Path):
    ok_dir, bad_dir = tmp_path / "ok", tmp_path / "bad"  # one package each: vet sees packages
    ok_dir.mkdir()
    bad_dir.mkdir()
    module(ok_dir, {"ok.go": "package clicheck\n\n// F is fine.\nfunc F() int { return 1 }\n"})
    module(bad_dir, {"bad.go": "package clicheck\n\nfunc G() { H( }\n"})
    r = run("check", "--json", str(ok_dir / "ok.go"), str(bad_dir / "bad.go"), "--timeout", "300")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 1
    ok, bad = doc["files"]
    assert ok["ok"] is True and ok["diagnostics"] == [] and ok["stage"] == "vet"
    assert bad["ok"] is False and bad["stage"] == "syntax"
    assert bad["diagnostics"][0]["line"] == 3 and bad["diagnostics"][0]["stage"] == "syntax"
    assert bad["skipped"] == {"gofmt": "skipped: syntax errors", "vet": "skipped: syntax errors"}


def test_missing_file_and_invalid_utf8_are_environment_errors(tmp_path: Path):
    (tmp_path / "latin1.go").write_bytes(b'package p\n\nvar s = "caf\xe9"\n')
    r = run("check", "--no-vet", str(tmp_path / "nope.go"), str(tmp_path / "latin1.go"))
    assert r.exit_code == 2
    assert f"error: {tmp_path / 'nope.go'}: no such file" in r.stderr
    assert f"{tmp_path / 'latin1.go'}:3:13: not valid UTF-8" in r.stderr


def test_no_files_is_a_usage_error():
    assert run("check").exit_code == 2


def test_missing_dependency_offline_exits_2_with_a_fix(tmp_path: Path):
    root = module(tmp_path, {"d.go": 'package clicheck\n\nimport "github.com/nobody/gone"\n\nvar X = gone.Y\n'})
    r = run("check", str(root / "d.go"), "--timeout", "300")
    assert r.exit_code == 2 and r.stdout == ""
    assert "vet: unavailable: github.com/nobody/gone is not available offline" in r.stderr
    assert "go mod download" in r.stderr


def test_without_go_syntax_still_runs_and_the_missing_go_is_an_environment_error(tmp_path: Path):
    env = {**os.environ, "HRM_LSP_GO": "off"}
    bad, good = tmp_path / "bad.go", tmp_path / "good.go"
    bad.write_text("package p\n\nfunc F( {}\n")
    good.write_text("package p\n\nfunc F() {}\n")
    r = run("check", str(bad), env=env)
    assert r.exit_code == 1  # the syntax errors decide; Go could not have run on this file anyway
    assert r.stdout.startswith(f"{bad}:3:") and ": syntax: " in r.stdout
    r = run("check", str(good), env=env)
    assert r.exit_code == 2 and r.stdout == ""
    assert f"warning: {good}: gofmt: not run: Go is disabled (HRM_LSP_GO=off)" in r.stderr
