"""The same checks with recorded capabilities of real clients (Neovim, VS Code, Emacs):
negotiated position encoding, text sync with astral characters in that encoding, and
code actions shaped for what the client supports (resolve vs command). LSP specification
warnings from pytest-lsp's checks fail the test."""

from __future__ import annotations

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from server_helpers import GO_SOURCE, SERVER_CMD, change, make_client, open_doc, status

pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.filterwarnings("error::pytest_lsp.checks.LspSpecificationWarning")]

CLIENTS = {
    # name: (expected encoding, resolves code-action edits)
    "neovim@v0.11.0": ("utf-8", True),
    "neovim@v0.6.1": ("utf-16", True),
    "visual-studio-code": ("utf-16", True),
    "emacs": ("utf-32", False),
}


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_CMD, client_factory=make_client), scope="module",
                    params=sorted(CLIENTS))
async def client(lsp_client: LanguageClient, request):
    lsp_client.spec = request.param
    lsp_client.init_result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities(request.param),
        initialization_options={"modelPath": "/nonexistent/model.gguf"}))
    yield
    await lsp_client.shutdown_session()


async def test_encoding_and_capabilities(client: LanguageClient):
    encoding, _ = CLIENTS[client.spec]
    caps = client.init_result.capabilities
    assert caps.position_encoding == encoding
    assert caps.inline_completion_provider is not None  # offered; clients without it ignore it
    assert (await status(client))["positionEncoding"] == encoding


async def test_sync_with_astral_characters_in_negotiated_encoding(client: LanguageClient):
    encoding, _ = CLIENTS[client.spec]
    uri = f"file:///tmp/clients/{client.spec.replace('@', '_')}.go"
    line = 'var s = "𝔘😀x"'
    open_doc(client, uri, f"package demo\n\n{line}\n")
    before_x = line[:line.index("x")]
    units = {"utf-8": len(before_x.encode()), "utf-16": len(before_x.encode("utf-16-le")) // 2,
             "utf-32": len(before_x)}[encoding]
    change(client, uri, 2, (2, units), (2, units + 1), "ok")
    st = await status(client, uri)
    assert st["document"]["text"] == 'package demo\n\nvar s = "𝔘😀ok"\n'


async def test_code_action_shape_follows_client(client: LanguageClient):
    _, resolves = CLIENTS[client.spec]
    uri = f"file:///tmp/clients/act_{client.spec.replace('@', '_')}.go"
    open_doc(client, uri, GO_SOURCE)
    acts = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(types.Position(6, 2), types.Position(6, 2)),
        context=types.CodeActionContext(diagnostics=[])))
    assert len(acts) == 1 and acts[0].title == "Refine this function"
    if resolves:
        assert acts[0].command is None and acts[0].data["command"] == "hrm-lsp.refineFunction"
    else:
        assert acts[0].command.command == "hrm-lsp.refineFunction"
        assert acts[0].command.arguments[0]["uri"] == uri


async def test_completion_answers_empty_without_model(client: LanguageClient):
    uri = f"file:///tmp/clients/c_{client.spec.replace('@', '_')}.go"
    open_doc(client, uri, GO_SOURCE)
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(6, 8)))
    assert res is not None and not res.items
