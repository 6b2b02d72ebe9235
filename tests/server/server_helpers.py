"""Helpers for the language-server tests: the server command, status queries, waiting.

Every protocol test talks to a real ``hrm-lsp serve`` subprocess over stdio through
pytest-lsp. Waiting is on conditions (a message arrived, a state changed) with a generous
timeout, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types

SERVER_CMD = [sys.executable, "-m", "hrm_lsp.cli", "serve", "--log-level", "WARNING"]

GO_SOURCE = """package demo

import "strings"

// Join glues words with a comma.
func Join(words []string) string {
\treturn strings.Join(words, ",")
}

// Count returns how many words there are.
func Count(words []string) int {
}
"""


async def wait_for(pred, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``pred()`` on the event loop until it is truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def status(client, uri: str | None = None) -> dict:
    """The server's ``hrm-lsp.status`` answer (optionally with one document's text)."""
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="hrm-lsp.status", arguments=[uri] if uri else []))


def open_doc(client, uri: str, text: str, language_id: str = "go", version: int = 1) -> None:
    """didOpen a document."""
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=version,
                                             text=text)))


def change(client, uri: str, version: int, start: tuple[int, int], end: tuple[int, int],
           text: str) -> None:
    """didChange with one incremental edit."""
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(*start), types.Position(*end)), text=text)]))


async def send_raw(client, payload: bytes) -> None:
    """Write bytes straight to the server's stdin (for malformed-message tests)."""
    stdin = client._server.stdin
    stdin.write(payload)
    await stdin.drain()


def go_module(root: Path, module: str, files: dict[str, str]) -> Path:
    """A Go module on disk: ``go.mod`` for ``module`` plus ``files`` (name -> text)."""
    (root / "go.mod").write_text(f"module {module}\n\ngo 1.21\n")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def frame(body: bytes) -> bytes:
    """Frame a JSON-RPC body with its Content-Length header."""
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def make_client():
    """pytest-lsp's client, with one fix to its converter: lsprotocol structures a code
    action that carries a ``command`` object as a bare Command (dropping the action), so
    dispatch on the field's type the way real clients do."""
    from typing import Union

    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    conv = client.protocol._converter

    def command_or_action(obj, _):
        if isinstance(obj, dict) and isinstance(obj.get("command"), str):
            return conv.structure(obj, types.Command)
        return conv.structure(obj, types.CodeAction)

    conv.register_structure_hook(Union[types.Command, types.CodeAction],  # noqa: UP007 - cattrs keys on typing.Union
                                 command_or_action)
    return client
