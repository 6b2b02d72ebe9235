"""A raw-bytes LSP client for hostile-client tests: no pygls between the test and the server.

``RawServer`` starts a real ``hrm-lsp serve`` subprocess, writes whatever bytes a test
gives it, and reads stdout with a *strict* frame parser in a thread: every frame the server
writes must be ``Content-Length: N\\r\\n`` (optionally ``Content-Type``), a blank line and a
JSON object of exactly N bytes; anything else is recorded in ``malformed`` and fails
``check_stdout``. Server-to-client requests are answered (``null``, or ``[settings]`` for
``workspace/configuration``) unless the test says to ignore a method. Every wait has a
timeout; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SERVE = [sys.executable, "-m", "hrm_lsp.cli", "serve", "--log-level", "INFO"]
WAIT = 60.0  # generous: a 2-core machine shared with other work


def frame(body: bytes | str | dict, length: int | None = None,
          header: bytes = b"Content-Length") -> bytes:
    """A frame around ``body`` (a dict is JSON-encoded); ``length`` overrides the true one."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    n = len(body) if length is None else length
    return header + b": %d\r\n\r\n" % n + body


class RawServer:
    """One ``hrm-lsp serve`` process driven over raw stdio."""

    def __init__(self, cwd: Path, log_file: Path, env: dict[str, str] | None = None,
                 ignore: tuple[str, ...] = ()):
        self.log_file = log_file
        self.proc = subprocess.Popen([*SERVE, "--log-file", str(log_file)], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        self.ignore = ignore  # server->client request methods never answered
        self.configuration: Any = None  # what workspace/configuration answers
        self.messages: list[dict] = []  # everything the server sent, in order
        self.malformed: list[bytes] = []
        self._inbox: queue.Queue = queue.Queue()
        self._write_lock = threading.Lock()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    # -- reading (strict) ----------------------------------------------------------------

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            line = out.readline()
            if not line:
                break
            length = None
            while line not in (b"\r\n",):
                if not line.endswith(b"\r\n"):
                    self.malformed.append(line)
                    break
                name, _, value = line[:-2].partition(b": ")
                if name == b"Content-Length" and value.isdigit():
                    length = int(value)
                elif name != b"Content-Type":
                    self.malformed.append(line)
                line = out.readline()
                if not line:
                    break
            if length is None:
                self.malformed.append(b"<frame without Content-Length>")
                continue
            body = out.read(length)
            try:
                msg = json.loads(body)
                assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0"
            except (ValueError, AssertionError):
                self.malformed.append(body[:200])
                continue
            self.messages.append(msg)
            if "method" in msg and "id" in msg:
                self._answer(msg)
            self._inbox.put(msg)
        self._inbox.put(None)

    def _answer(self, msg: dict) -> None:
        if msg["method"] in self.ignore:
            return
        result = [self.configuration] if msg["method"] == "workspace/configuration" else None
        self.write(frame({"jsonrpc": "2.0", "id": msg["id"], "result": result}))

    def check_stdout(self) -> None:
        """Every byte the server wrote so far was a well-formed frame."""
        assert not self.malformed, self.malformed[:3]

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Raw bytes to the server's stdin (may be anything)."""
        with self._write_lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def new_id(self) -> int:
        self._next += 1
        return self._next

    def send(self, method: str, params: Any = None, msg_id: Any = None) -> Any:
        """A well-formed request (with ``msg_id``, or a fresh id) or notification (``False``)."""
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if msg_id is not False:
            msg["id"] = msg_id = self.new_id() if msg_id is None else msg_id
        self.write(frame(msg))
        return msg_id

    def notify(self, method: str, params: Any = None) -> None:
        self.send(method, params, msg_id=False)

    def wait(self, pred, timeout: float = WAIT, what: str = "a message") -> dict:
        """The first message (already seen or arriving) satisfying ``pred``."""
        for m in list(self.messages):
            if pred(m):
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                m = self._inbox.get(timeout=left)
            except queue.Empty:
                continue
            if m is None:
                raise AssertionError(f"server closed stdout while waiting for {what} "
                                     f"(exit {self.proc.poll()})")
            if pred(m):
                return m

    def response(self, msg_id: Any, timeout: float = WAIT) -> dict:
        """The response to request ``msg_id``."""
        return self.wait(lambda m: m.get("id") == msg_id and "method" not in m, timeout,
                         f"the response to {msg_id!r}")

    def request(self, method: str, params: Any = None, timeout: float = WAIT) -> dict:
        return self.response(self.send(method, params), timeout)

    def status(self, *args: Any) -> dict:
        res = self.request("workspace/executeCommand",
                           {"command": "hrm-lsp.status", "arguments": list(args)})
        return res["result"]

    # -- session -------------------------------------------------------------------------

    def initialize(self, options: Any = None, capabilities: dict | None = None,
                   root: Path | None = None) -> dict:
        res = self.request("initialize", {
            "processId": os.getpid(), "rootUri": root.as_uri() if root else None,
            "capabilities": capabilities or {}, "initializationOptions": options})
        self.notify("initialized", {})
        return res

    def wait_model(self, state: str = "ready", path: str | None = None,
                   timeout: float = WAIT) -> dict:
        """Status once the model is in ``state`` (for ``path``, when given)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st["model"]["state"] == state and path in (None, st["model"]["path"]):
                return st
            assert time.monotonic() < deadline, f"model never {state}: {st['model']}"

    def open(self, uri: str, text: str, version: int = 1, language: str = "go") -> None:
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": language, "version": version, "text": text}})

    def complete(self, uri: str, line: int, character: int, invoked: bool = False,
                 timeout: float = WAIT) -> dict:
        params: dict[str, Any] = {"textDocument": {"uri": uri},
                                  "position": {"line": line, "character": character}}
        if invoked:
            params["context"] = {"triggerKind": 1}
        return self.request("textDocument/completion", params, timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> int:
        """shutdown + exit (or kill when it does not go); the exit code."""
        if self.alive():
            try:
                self.request("shutdown", timeout=20)
                self.notify("exit")
                return self.proc.wait(timeout=20)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        if self.alive():
            self.proc.kill()
        return self.proc.wait(timeout=20)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def well_formed_completion(res: dict) -> list[dict]:
    """The items of a completion answer; fails unless it is a CompletionList (or a list)."""
    assert "error" not in res, res
    result = res["result"]
    items = result["items"] if isinstance(result, dict) else result
    assert isinstance(items, list), result
    for item in items:
        assert isinstance(item["label"], str)
    return items


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove no user file was written)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
