"""A hostile client speaking raw bytes to a real ``hrm-lsp serve`` (issue 15).

Classes of abuse: framing, JSON-RPC shapes and ids, lifecycle order, documents, positions,
load with cancellation, commands and code actions with bad arguments, settings and model
paths, a client that never answers, a Go that hangs. After each, the test checks that the
process is alive, that a known-good completion request gets a well-formed answer, that
stdout never carried a malformed frame (``raw_client``'s strict reader), and, at the end,
that no file of the user's workspace was written.

One server (a tiny untrained model: what it writes does not matter, only that the whole
pipeline runs) serves most tests; the lifecycle and unresponsive-client tests start their
own.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest
from raw_client import RawServer, frame, tree_snapshot, well_formed_completion
from server_helpers import go_module

pytestmark = pytest.mark.timeout(300)

GO = "package demo\n\n// Join glues words.\nfunc Join(words []string) string {\n\treturn \"\"\n}\n"
SETTINGS = {"device": "cpu", "maxTokens": 4, "maxTokensMultiline": 8, "timeBudgetMs": 3000,
            "debounceMs": 0, "maxRefinementIterations": 1}
NESTED = {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": 5}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """The tiny preset with the byte tokenizer, untrained, through the real GGUF writer."""
    from server_model import build_model, write_model

    from hrm_lsp.tokenizer.byte import ByteTokenizer

    tok = ByteTokenizer()
    return write_model(build_model(tok), tok, tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return go_module(tmp_path_factory.mktemp("ws"), "example.com/demo", {"demo.go": GO})


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return {"HRM_LSP_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def server(model_file, workspace, env, tmp_path_factory):
    before = tree_snapshot(workspace)
    srv = RawServer(workspace, tmp_path_factory.mktemp("log") / "server.log", env)
    # initializationOptions holding an object shaped like a JSON-RPC message: initialize
    # must still be answered (pygls used to try to decode it as a message and drop it all).
    res = srv.initialize({**SETTINGS, "modelPath": str(model_file), "extra": NESTED},
                         {"window": {"workDoneProgress": True}}, root=workspace)
    assert res["result"]["serverInfo"]["name"] == "hrm-lsp"
    srv.wait_model()
    srv.uri = (workspace / "demo.go").as_uri()
    srv.open(srv.uri, GO)
    yield srv
    assert srv.close() == 0
    srv.check_stdout()
    assert tree_snapshot(workspace) == before, "a user file was written"


def known_good(srv: RawServer) -> None:
    """Alive, a completion answered well-formed, stdout clean."""
    assert srv.alive()
    well_formed_completion(srv.complete(srv.uri, 4, 8))
    srv.check_stdout()


def req(msg_id, method="workspace/executeCommand", params=None) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method,
            "params": params if params is not None else {"command": "hrm-lsp.status",
                                                         "arguments": []}}


# -- framing ------------------------------------------------------------------------------

FRAMING = {
    # name: (bytes before the known-good request, whether the request in them is answered)
    "missing-length": (lambda i: b"Content-Type: x\r\n\r\n" + json.dumps(req(i)).encode(), False),
    "short-length": (lambda i: frame(req(i), length=10), False),
    "long-length": (lambda i: frame(req(i), length=400), True),
    "non-numeric-length": (lambda i: b"Content-Length: ten\r\n\r\n" + json.dumps(req(i)).encode(),
                           False),
    "lf-only-header": (lambda i: b"Content-Length: %d\n\n" % len(json.dumps(req(i)))
                       + json.dumps(req(i)).encode(), True),
    "lower-case-header": (lambda i: frame(req(i), header=b"content-length"), True),
    "garbage-without-crlf": (lambda i: b"\x00\xff garbage garbage" * 5, False),
    "huge-length": (lambda i: b"Content-Length: 99999999999999\r\n\r\n"
                    + json.dumps(req(i)).encode(), False),
    "line-less-flood": (lambda i: b"x" * 300_000, False),
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_framing_errors_resynchronise(server: RawServer, case: str):
    make, answered = FRAMING[case]
    msg_id = f"framing-{case}"
    server.write(make(msg_id))
    known_good(server)  # the next valid frame is read: never alive-and-deaf
    if answered:
        assert server.response(msg_id)["result"]["model"]["state"] == "ready"
    else:
        assert not [m for m in server.messages if m.get("id") == msg_id]
    if not answered or case == "long-length":
        assert "framing:" in server.log_text()  # what was skipped (or odd) is logged


def test_huge_length_is_refused_with_one_message(server: RawServer):
    server.write(b"Content-Length: 99999999999999\r\n\r\n{}")
    known_good(server)
    said = [m for m in server.messages if m.get("method") == "window/showMessage"
            and "refused" in m["params"]["message"]]
    assert len(said) == 1 and "64 MiB" in said[0]["params"]["message"]


# -- JSON-RPC shapes and ids --------------------------------------------------------------

def test_nested_message_shapes_are_answered(server: RawServer):
    res = server.request("workspace/executeCommand",
                         {"command": "hrm-lsp.status", "arguments": [NESTED]})
    assert res["result"]["model"]["state"] == "ready"
    server.notify("workspace/didChangeConfiguration",
                  {"settings": {"hrmLsp": {**SETTINGS, "maxTokens": 5, "x": [NESTED]}}})
    assert server.status()["settings"]["max_tokens"] == 5
    known_good(server)


def test_undecodable_bodies_get_parse_errors(server: RawServer):
    server.write(frame(b'{"jsonrpc": "2.0", "id": "b901", "method": "x", "p": "\xff\xfe"}'))
    r = server.response("b901")
    assert r.get("error", {}).get("code") == -32700, r
    server.write(frame(b'[{"jsonrpc": "2.0", "id": "b902", "method": "shutdown"}]'))
    assert server.response("b902")["error"]["code"] == -32700
    server.write(frame(b'{"jsonrpc": "2.0", "id": "b903", "method": '))  # cut short
    assert server.response("b903")["error"]["code"] == -32700
    for body in (b"5", b"null", b'"text"', b"[" * 100_000, b"{}" , b""):
        server.write(frame(body))
    server.write(frame({"jsonrpc": "1.0", "id": "b904", "method": "shutdown"}))
    assert server.response("b904")["error"]["code"] == -32600
    for bad_id in ({"no": 1}, True, 905.5, None, [1]):  # never run: a `shutdown` here
        server.write(frame({"jsonrpc": "2.0", "id": bad_id, "method": "shutdown"}))
    def null_ids() -> list[dict]:
        return [m for m in server.messages if "id" in m and m["id"] is None]

    server.wait(lambda _: len(null_ids()) >= 5, what="five InvalidRequest answers")
    bad = null_ids()
    assert {m["error"]["code"] for m in bad} == {-32600}
    server.write(frame({"jsonrpc": "2.0", "id": "b905", "method": "hrm/none"}))  # no params
    assert server.response("b905")["error"]["code"] in (-32601, -32602)
    server.write(frame({"jsonrpc": "2.0", "id": "r1", "result": 1}))  # answer to nothing
    server.write(frame({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {}}))
    known_good(server)


# -- documents and positions --------------------------------------------------------------

def change(server, uri, version, changes):
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                              "contentChanges": changes})


def rng(l0, c0, l1, c1):
    return {"start": {"line": l0, "character": c0}, "end": {"line": l1, "character": c1}}


def test_documents_stay_in_sync_through_abuse(server: RawServer):
    from hrm_lsp.server.positions import LineIndex

    uri = "file:///hostile/doc.go"
    text = "package a\r\n\r\nvar s = \"😀\x00\"\rvar t = 1\n"
    server.open(uri, text)
    edits = [
        (rng(0, 8, 0, 9), "b"),                # CRLF line
        (rng(2, 11, 2, 9), "X"),               # reversed range, inside the emoji's pair
        (rng(-5, -5, -1, -1), "// top\n"),     # negative: clamped to the start
        (rng(99, 0, 2**40, 2**40), "\n// end"),  # past the end (and past 2**31): the end
        (rng(3, 2**31, 3, 2**31 + 5), "\x00"),  # NUL at a clamped character
    ]
    expected = text
    for version, (r, new) in enumerate(edits, 2):
        change(server, uri, version, [{"range": r, "text": new}])
        idx = LineIndex(expected)
        s, e = r["start"], r["end"]
        clamp = lambda v: min(max(v, 0), 2**31 - 1)  # noqa: E731
        a = idx.offset(clamp(s["line"]), clamp(s["character"]))
        b = idx.offset(clamp(e["line"]), clamp(e["character"]))
        a, b = min(a, b), max(a, b)
        expected = expected[:a] + new + expected[b:]
    doc = server.status(uri)["document"]
    assert doc == {"version": len(edits) + 1, "text": expected}
    # Lone surrogates and astral characters through JSON escapes; unknown URIs.
    server.open("file:///hostile/lone.go", "package a\nvar x = \"\ud800\"\n")
    well_formed_completion(server.complete("file:///hostile/lone.go", 1, 9, invoked=True))
    change(server, "file:///never/opened.go", 2, [{"text": "x"}])
    server.notify("textDocument/didClose", {"textDocument": {"uri": "file:///never/opened.go"}})
    assert well_formed_completion(server.complete("file:///never/opened.go", 0, 0)) == []
    known_good(server)


def test_huge_document_and_typing(server: RawServer):
    uri = "file:///hostile/huge.go"
    line = "var v = 1 // " + "x" * 60 + "\n"
    text = "package a\n" + line * 70_000  # ~5 MB
    server.open(uri, text)
    for i in range(20):  # typing in the middle
        change(server, uri, i + 2, [{"range": rng(35_000, 4, 35_000, 4), "text": "y"}])
    well_formed_completion(server.complete(uri, 35_000, 5))
    doc = server.status(uri)["document"]
    assert doc["version"] == 21 and doc["text"].count("y") == 20 + text.count("y")
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    known_good(server)


@pytest.mark.parametrize("line,character", [(-1, -1), (2**31, 2**31), (2**53, 0), (4, -7)])
def test_out_of_range_positions_are_clamped(server: RawServer, line: int, character: int):
    res = server.complete(server.uri, line, character)
    well_formed_completion(res)  # an answer, not InvalidParams
    res = server.request("textDocument/codeAction", {
        "textDocument": {"uri": server.uri}, "range": rng(line, character, line, character),
        "context": {"diagnostics": []}})
    assert "error" not in res
    known_good(server)


# -- load with cancellation, commands, code actions, settings ------------------------------

def test_requests_and_cancels_while_the_model_reloads(server: RawServer, model_file, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(model_file.read_bytes())
    server.notify("workspace/didChangeConfiguration",
                  {"settings": {"hrmLsp": {**SETTINGS, "modelPath": str(copy)}}})
    ids = []
    for k in range(12):
        ids.append(server.send("textDocument/completion", {
            "textDocument": {"uri": server.uri}, "position": {"line": 4, "character": 8},
            "context": {"triggerKind": 1}}))
        if k % 2:
            server.notify("$/cancelRequest", {"id": ids[-1]})
    for i in ids:
        res = server.response(i)
        assert "result" in res or res["error"]["code"] == -32800  # answered or cancelled
    assert server.wait_model()["model"]["path"] == str(copy)
    known_good(server)


def test_commands_and_code_actions_with_bad_arguments(server: RawServer):
    for args in ([], [5], [{"uri": 5}], [None, None, None], [{"textDocument": 3}],
                 [server.uri, "a", "b"], [{"uri": server.uri, "line": -3, "character": 2**40}]):
        for command in ("hrm-lsp.refineFunction", "hrm-lsp.generateFromComment"):
            res = server.request("workspace/executeCommand", {"command": command, "arguments": args})
            assert "result" in res or "error" in res
    res = server.request("workspace/executeCommand", {"command": "hrm-lsp.nope", "arguments": []})
    assert "error" in res
    res = server.request("workspace/executeCommand", {"command": 5})
    assert res["error"]["code"] == -32602
    res = server.request("codeAction/resolve", {"title": "x", "data": {"command": "hrm-lsp.refineFunction",
                                                                      "uri": 7}})
    assert "error" not in res
    popups = [m for m in server.messages if m.get("method") == "window/showMessage"
              and "expects" in m["params"]["message"]]
    assert len(popups) <= 2  # at most one per command, not one per call
    known_good(server)


def test_model_paths_that_are_not_files(server: RawServer, model_file, tmp_path):
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    cases = {str(tmp_path): "not a run directory", str(fifo): "named pipe",
             "/dev/null": "device", str(tmp_path / "none.gguf"): "does not exist"}
    for path, said in cases.items():
        server.notify("workspace/didChangeConfiguration",
                      {"settings": {"hrmLsp": {**SETTINGS, "modelPath": path}}})
        st = server.wait_model("failed", path)
        assert said in st["model"]["message"], st["model"]
    server.notify("workspace/didChangeConfiguration",
                  {"settings": {"hrmLsp": {**SETTINGS, "modelPath": str(model_file),
                                           "maxTokens": "many", "validators": [], "goPath": 5}}})
    st = server.wait_model()
    assert st["settings"]["max_tokens"] == 48  # invalid value: default, with a warning
    known_good(server)


# -- lifecycle ------------------------------------------------------------------------------

def test_lifecycle_out_of_order(workspace, env, tmp_path):
    srv = RawServer(workspace, tmp_path / "life.log", env)
    try:
        # Before initialize: answered (an error or an empty result), never a hang.
        res = srv.request("textDocument/completion", {"textDocument": {"uri": "file:///a.go"},
                                                      "position": {"line": 0, "character": 0}})
        assert "result" in res or "error" in res
        srv.initialize({"modelPath": str(tmp_path / "none.gguf")})
        res = srv.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        assert "result" in res or "error" in res
        assert srv.request("shutdown")["result"] is None
        after = srv.request("textDocument/completion", {"textDocument": {"uri": "file:///a.go"},
                                                        "position": {"line": 0, "character": 0}})
        assert after["error"]["code"] == -32600
        srv.notify("exit")
        assert srv.proc.wait(timeout=30) == 0
        srv.check_stdout()
    finally:
        if srv.alive():
            srv.proc.kill()


# -- a client that never answers, a Go that hangs -------------------------------------------

def test_unanswered_configuration_and_hanging_go(model_file, workspace, env, tmp_path):
    """workspace/configuration and progress creation never answered; goPath hangs."""
    pids = tmp_path / "pids"
    fake_go = tmp_path / "go"
    fake_go.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 600\n")
    fake_go.chmod(fake_go.stat().st_mode | stat.S_IEXEC)
    before = tree_snapshot(workspace)
    srv = RawServer(workspace, tmp_path / "quiet.log",
                    {**env, "HRM_LSP_GO_PROBE_TIMEOUT": "600"},  # hangs until the test ends
                    ignore=("workspace/configuration",))
    try:
        srv.initialize({**SETTINGS, "modelPath": str(model_file), "goPath": str(fake_go),
                        "validators": ["syntax", "gofmt", "vet"]},
                       {"workspace": {"configuration": True}, "window": {"workDoneProgress": True}},
                       root=workspace)
        srv.wait_model()  # loads with defaults after the configuration wait
        assert "did not answer workspace/configuration" in srv.log_text()
        srv.uri = (workspace / "demo.go").as_uri()
        srv.open(srv.uri, GO)
        # An invoked completion wants gofmt and vet while `go env` hangs (and would hang
        # for 600 s): it is answered without waiting, every fake go still hanging.
        well_formed_completion(srv.complete(srv.uri, 4, 8, invoked=True))
        started = [int(p) for p in pids.read_text().split()] if pids.exists() else []
        for pid in started:
            os.kill(pid, 0)  # raises if a probe already timed out and was killed
        known_good(srv)
        assert srv.close() == 0
        srv.check_stdout()
        assert tree_snapshot(workspace) == before
    finally:
        if srv.alive():
            srv.proc.kill()
        for pid in (pids.read_text().split() if pids.exists() else []):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass



# -- long lines, the time budget -------------------------------------------------------------

def test_a_2mb_line_does_not_freeze_the_server(server: RawServer):
    uri = "file:///hostile/long.go"
    server.open(uri, "package main\n\nfunc f() {\n\t_ = " + "x" * 2_000_000 + "\n}\n")
    well_formed_completion(server.complete(uri, 3, 10, invoked=True))  # syntax, gofmt, vet
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    known_good(server)


def test_time_budget_bounds_validation_with_a_hanging_gofmt(server: RawServer, tmp_path):
    """An invoked completion whose gofmt hangs: answered, and that gofmt is killed."""
    from hrm_lsp.validators.go import find_go

    real = find_go().go
    (tmp_path / "go").write_text(f"#!/bin/sh\nexec {real} \"$@\"\n")
    pids = tmp_path / "pids"
    (tmp_path / "gofmt").write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 600\n")
    for name in ("go", "gofmt"):
        (tmp_path / name).chmod(0o755)
    uri = "file:///hostile/budget.go"
    text = "package main\n// v3\n"
    server.open(uri, text)
    server.notify("workspace/didChangeConfiguration", {"settings": {"hrmLsp": {
        **SETTINGS, "goPath": str(tmp_path / "go"), "timeBudgetMs": 1500,
        "maxTokensMultiline": 1}}})
    try:
        # One-token suggestions inside the comment pass the syntax gate, so validation
        # reaches gofmt once discovery of the new goPath has finished (it never blocks).
        for version in range(2, 40):
            well_formed_completion(server.complete(uri, 1, 3, invoked=True))
            if pids.exists():
                break
            change(server, uri, version, [{"text": text}])  # a new version: not cached
        assert pids.exists(), "validation never reached gofmt"
        for pid in pids.read_text().split():  # killed, not left hanging
            state = Path(f"/proc/{pid}/stat")
            assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    finally:
        for pid in (pids.read_text().split() if pids.exists() else []):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.notify("workspace/didChangeConfiguration", {"settings": {"hrmLsp": SETTINGS}})
    known_good(server)
