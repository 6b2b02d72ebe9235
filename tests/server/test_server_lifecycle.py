"""Process-level behaviour of ``hrm-lsp serve``: exit codes, parent death, stdin EOF,
Go missing, TCP on 127.0.0.1. Driven with a minimal JSON-RPC writer/reader over pipes."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading

import pytest
from server_helpers import SERVER_CMD


class RawClient:
    """Just enough JSON-RPC over a subprocess's pipes for lifecycle tests.

    A reader thread queues everything the server writes, so every wait has a timeout.
    """

    def __init__(self, env: dict[str, str] | None = None, args: list[str] | None = None):
        self.proc = subprocess.Popen([*SERVER_CMD, *(args or [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})
        self.next_id = 0
        self.inbox: queue.Queue = queue.Queue()
        self.notes: list[dict] = []
        threading.Thread(target=self._read_all, daemon=True).start()

    def _read_all(self) -> None:
        length = 0
        out = self.proc.stdout
        while True:
            line = out.readline()
            if not line:
                self.inbox.put(None)
                return
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            elif line in (b"\r\n", b"\n"):
                self.inbox.put(json.loads(out.read(length)))

    def _write(self, msg: dict) -> None:
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, method: str, params=None, request: bool = True) -> int | None:
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        msg_id = None
        if request:
            self.next_id += 1
            msg_id = msg["id"] = self.next_id
        self._write(msg)
        return msg_id

    def wait(self, pred, timeout: float = 30.0) -> dict:
        """Next message satisfying ``pred``; others are kept in ``notes``."""
        for m in self.notes:
            if pred(m):
                return m
        while True:
            msg = self.inbox.get(timeout=timeout)
            if msg is None:
                raise EOFError("server closed stdout")
            self.notes.append(msg)
            if "method" in msg and "id" in msg:  # a server->client request: answer null
                self._write({"jsonrpc": "2.0", "id": msg["id"], "result": None})
            if pred(msg):
                return msg

    def request(self, method: str, params=None) -> dict:
        msg_id = self.send(method, params)
        return self.wait(lambda m: m.get("id") == msg_id and "method" not in m)

    def initialize(self, process_id: int | None = None, options=None) -> dict:
        res = self.request("initialize", {"processId": process_id, "rootUri": None,
                                          "capabilities": {}, "initializationOptions": options})
        self.send("initialized", {}, request=False)
        return res


def test_shutdown_then_exit_is_code_0():
    c = RawClient()
    assert c.initialize(options={"modelPath": "/nonexistent.gguf"})["result"]["serverInfo"]["name"] == "hrm-lsp"
    assert c.request("shutdown")["result"] is None
    c.send("exit", request=False)
    assert c.proc.wait(timeout=30) == 0


def test_exit_without_shutdown_is_code_1():
    c = RawClient()
    c.initialize(options={"modelPath": "/nonexistent.gguf"})
    c.send("exit", request=False)
    assert c.proc.wait(timeout=30) == 1


def test_stdin_closed_ends_the_server():
    c = RawClient()
    c.initialize(options={"modelPath": "/nonexistent.gguf"})
    c.proc.stdin.close()
    assert c.proc.wait(timeout=30) == 1


@pytest.mark.skipif(os.name != "posix", reason="parent watch is POSIX-only")
def test_parent_death_ends_the_server():
    parent = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    c = RawClient()
    c.initialize(process_id=parent.pid, options={"modelPath": "/nonexistent.gguf"})
    parent.stdin.close()
    parent.wait(timeout=30)
    assert c.proc.wait(timeout=30) == 1


def test_go_missing_is_said_once():
    c = RawClient(env={"HRM_LSP_GO": "off"})
    c.initialize(options={"modelPath": "/nonexistent.gguf"})
    # Settings changes re-check Go; the message must still appear only once.
    c.send("workspace/didChangeConfiguration", {"settings": {"hrmLsp": {"maxTokens": 20}}},
           request=False)
    st = c.request("workspace/executeCommand", {"command": "hrm-lsp.status", "arguments": []})
    assert st["result"]["settings"]["max_tokens"] == 20

    def is_go_msg(m: dict) -> bool:
        return m.get("method") == "window/showMessage" and \
            "Only the syntax check runs" in m["params"]["message"]

    first = c.wait(is_go_msg)
    assert "disabled" in first["params"]["message"]
    # A second settings change triggers a second check; still no second message.
    c.send("workspace/didChangeConfiguration", {"settings": {"hrmLsp": {"maxTokens": 21}}},
           request=False)
    c.request("workspace/executeCommand", {"command": "hrm-lsp.status", "arguments": []})
    c.request("shutdown")
    c.send("exit", request=False)
    assert c.proc.wait(timeout=30) == 0
    with pytest.raises(EOFError):
        c.wait(lambda m: False)
    assert len([m for m in c.notes if is_go_msg(m)]) == 1


def test_bad_go_path_setting_is_reported():
    c = RawClient()
    c.initialize(options={"modelPath": "/nonexistent.gguf", "goPath": "/nonexistent/go"})
    msg = c.wait(lambda m: m.get("method") == "window/showMessage"
                 and "Only the syntax check runs" in m["params"]["message"])
    assert "/nonexistent/go" in msg["params"]["message"]
    c.request("shutdown")
    c.send("exit", request=False)
    assert c.proc.wait(timeout=30) == 0


def test_tcp_binds_localhost_only():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*SERVER_CMD, "--tcp", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        sock = None
        for _ in range(300):  # the server needs a moment to import and listen
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=0.1)
                break
            except OSError:
                try:  # not listening yet: wait a little for it to exit (it must not)
                    proc.wait(timeout=0.1)
                    raise AssertionError("server exited instead of listening")
                except subprocess.TimeoutExpired:
                    pass
        assert sock is not None, "server never listened"
        sock.settimeout(60)  # the 0.1 s was for connecting; initialize may take longer
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode()
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        data = b""
        while b"serverInfo" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk
        sock.close()
        # Only loopback: the port is not bound on other addresses.
        listeners = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                   text=True)
        if listeners.returncode == 0 and listeners.stdout.strip():
            assert all("127.0.0.1" in line for line in listeners.stdout.strip().splitlines())
    finally:
        proc.kill()
        proc.wait(timeout=30)
