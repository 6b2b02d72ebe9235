"""Protocol tests of ``hrm-lsp serve`` without a usable model: lifecycle, capabilities,
text sync, settings, and robustness against anything a client may send.

One server (recorded VS Code capabilities) serves the whole module; each test leaves it
answering, which is itself part of what is tested.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Future

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from server_helpers import (
    GO_SOURCE,
    SERVER_CMD,
    change,
    frame,
    make_client,
    open_doc,
    send_raw,
    status,
    wait_for,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MISSING = "/nonexistent/hrm-lsp-test/model.gguf"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_CMD, client_factory=make_client), scope="module")
async def client(lsp_client: LanguageClient):
    caps = client_capabilities("visual-studio-code")
    lsp_client.init_result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=caps,
        initialization_options={"hrmLsp": {"modelPath": MISSING, "temperature": "hot",
                                           "debounceMs": 20, "noSuchSetting": 1}}))
    yield
    await lsp_client.shutdown_session()


async def test_capabilities(client: LanguageClient):
    caps = client.init_result.capabilities
    assert client.init_result.server_info.name == "hrm-lsp"
    assert caps.position_encoding == "utf-16"
    sync = caps.text_document_sync
    assert sync.change == types.TextDocumentSyncKind.Incremental and sync.open_close
    assert caps.completion_provider is not None
    assert caps.inline_completion_provider is not None
    assert caps.code_action_provider.resolve_provider is True
    assert set(caps.execute_command_provider.commands) >= {
        "hrm-lsp.refineFunction", "hrm-lsp.generateFromComment", "hrm-lsp.status"}


async def test_missing_model_is_reported_once_and_server_stays_up(client: LanguageClient):
    msgs = await wait_for(lambda: [m for m in client.messages if "could not load model" in m.message],
                          what="model failure message")
    assert len(msgs) == 1
    assert msgs[0].type == types.MessageType.Error
    assert MISSING in msgs[0].message
    st = await status(client)
    assert st["model"]["state"] == "failed"
    assert MISSING in st["model"]["message"]


async def test_invalid_settings_warn_and_fall_back(client: LanguageClient):
    texts = [m.message for m in client.messages]
    assert any("temperature" in t and "invalid setting" in t for t in texts), texts
    assert any("no_such_setting" in t for t in texts), texts
    st = await status(client)
    assert st["settings"]["temperature"] == 0.0  # default kept
    assert st["settings"]["debounce_ms"] == 20  # the valid key still applied


async def test_completion_without_model_is_empty_at_once(client: LanguageClient):
    uri = "file:///tmp/demo/a.go"
    open_doc(client, uri, GO_SOURCE)
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(6, 5)))
    assert res is not None and not res.items
    inline = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(6, 5),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert inline is None or not inline.items


async def test_incremental_sync_utf16_astral_and_crlf(client: LanguageClient):
    uri = "file:///tmp/demo/emoji.go"
    text = 'package demo\r\n\r\nvar s = "😀x"\r\nvar t = 1\r\n'
    open_doc(client, uri, text)
    # UTF-16: 😀 is two code units (9-10), so "x" spans characters 11-12.
    change(client, uri, 2, (2, 11), (2, 12), "y")
    # Replace across the CRLF between lines 2 and 3.
    change(client, uri, 3, (2, 13), (3, 0), "\n")
    st = await status(client, uri)
    assert st["document"] == {"version": 3, "text": 'package demo\r\n\r\nvar s = "😀y"\nvar t = 1\r\n'}


async def test_positions_past_end_are_clamped(client: LanguageClient):
    uri = "file:///tmp/demo/clamp.go"
    open_doc(client, uri, "package demo\n")
    change(client, uri, 2, (0, 999), (0, 999), " // end")  # past end of line -> end of line
    change(client, uri, 3, (50, 3), (60, 0), "\nvar x = 1\n")  # past end of file -> append
    st = await status(client, uri)
    assert st["document"]["text"] == "package demo // end\n\nvar x = 1\n"
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(10_000, 10_000)))
    assert not res.items


async def test_unknown_and_non_go_documents(client: LanguageClient):
    never = types.TextDocumentIdentifier(uri="file:///never/opened.go")
    res = await client.text_document_completion_async(
        types.CompletionParams(text_document=never, position=types.Position(0, 0)))
    assert not res.items
    acts = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=never, range=types.Range(types.Position(0, 0), types.Position(0, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    assert not acts
    # didChange / didClose for documents never opened are ignored.
    change(client, "file:///never/opened.go", 5, (0, 0), (0, 0), "x")
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=never))
    md = "file:///tmp/demo/README.md"
    open_doc(client, md, "# title\n", language_id="markdown")
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=md), position=types.Position(0, 2)))
    assert not res.items
    st = await status(client, "file:///never/opened.go")
    assert st["document"] is None and md in st["documents"]


async def test_malformed_messages_get_errors_not_crashes(client: LanguageClient):
    loop = asyncio.get_running_loop()
    # Not JSON at all; JSON that is not an object; a notification with garbage params.
    await send_raw(client, frame(b"{this is not json"))
    await send_raw(client, frame(b"[1, 2, 3]"))
    await send_raw(client, frame(json.dumps({"jsonrpc": "2.0", "method": "textDocument/didOpen",
                                             "params": {"bogus": True}}).encode()))
    # A request whose params do not fit: InvalidParams comes back for its id.
    fut: Future = Future()
    client.protocol._request_futures["bad-1"] = fut
    await send_raw(client, frame(json.dumps({
        "jsonrpc": "2.0", "id": "bad-1", "method": "textDocument/completion",
        "params": {"textDocument": {"uri": "file:///x.go"}, "position": {"line": -1, "character": "a"}},
    }).encode()))
    with pytest.raises(Exception) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut, loop=loop), 30)
    assert "-32602" in str(err.value) or "invalid params" in str(err.value).lower()
    # Unknown request -> MethodNotFound; unknown notification -> ignored.
    with pytest.raises(Exception) as err2:
        await client.protocol.send_request_async("hrm/noSuchMethod", {})
    assert "-32601" in str(err2.value) or "not found" in str(err2.value).lower()
    client.protocol.notify("hrm/noSuchNotification", {})
    st = await status(client)
    assert st["model"]["state"] == "failed"  # still answering
    # The malformed input produced at most one popup, not one per message.
    popups = [m for m in client.messages if "could not handle" in m.message]
    assert len(popups) <= 1


async def settings_where(client, pred, timeout: float = 30.0) -> dict:
    """Ask for status until ``pred(status)`` holds (settings apply asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred(st := await status(client)):
        assert loop.time() < deadline, "settings never applied"
    return st


async def test_did_change_configuration_applies(client: LanguageClient):
    client.set_configuration({"maxTokens": 17, "inlineMode": "single", "modelPath": MISSING},
                             section="hrmLsp")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    s = await settings_where(client, lambda st: st["settings"]["max_tokens"] == 17)
    assert s["settings"]["inline_mode"] == "single"
    client.set_configuration({"maxTokens": -5}, section="hrmLsp")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    await wait_for(lambda: any("max_tokens" in m.message for m in client.messages),
                   what="warning about max_tokens")
    s = await status(client)
    assert s["settings"]["max_tokens"] == 48  # default, not -5


async def test_corrupt_model_file_is_reported_and_server_stays_up(client: LanguageClient,
                                                                   tmp_path_factory):
    bad = tmp_path_factory.mktemp("corrupt") / "model.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)  # the magic, then garbage
    n = len(client.messages)
    client.set_configuration({"modelPath": str(bad)}, section="hrmLsp")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    msg = await wait_for(lambda: [m for m in client.messages[n:] if str(bad) in m.message
                                  and m.type == types.MessageType.Error], what="corrupt-model message")
    assert "could not load model" in msg[0].message
    st = await status(client)
    assert st["model"]["state"] == "failed" and st["model"]["path"] == str(bad)
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///tmp/demo/a.go"),
        position=types.Position(0, 0)))
    assert not res.items
    client.set_configuration({"modelPath": MISSING}, section="hrmLsp")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    await settings_where(client, lambda s: s["model"]["path"] == MISSING
                         and s["model"]["state"] == "failed")


async def test_code_action_without_model_explains(client: LanguageClient):
    uri = "file:///tmp/demo/act.go"
    open_doc(client, uri, GO_SOURCE)
    acts = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(types.Position(6, 3), types.Position(6, 3)),
        context=types.CodeActionContext(diagnostics=[])))
    assert [a.title for a in acts] == ["Refine this function"]
    acts = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(types.Position(9, 5), types.Position(9, 5)),
        context=types.CodeActionContext(diagnostics=[])))
    assert [a.title for a in acts] == ["Generate from comment"]
    # The `only` filter (VS Code's "Refactor…" menu) matches whole kind segments.
    for only, titles in ((["refactor.rewrite"], ["Refine this function"]),
                         (["refactor"], ["Refine this function"]),
                         (["quickfix"], []), (["refactor.rewr"], [])):
        acts = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(types.Position(6, 3), types.Position(6, 3)),
            context=types.CodeActionContext(diagnostics=[], only=only)))
        assert [a.title for a in acts or []] == titles, only
    n = len(client.messages)
    res = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="hrm-lsp.refineFunction", arguments=[{"uri": uri, "line": 6, "character": 3}]))
    assert res is None
    assert any("model is failed" in m.message for m in client.messages[n:])
