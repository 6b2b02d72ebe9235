"""The repository index through the real server: completionSources, the workspace tier,
file events, and the status report (a real tiny model file; stdlib tier off, see conftest)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pytest_lsp import ClientServerConfig, client_capabilities
from server_helpers import SERVER_CMD, go_module, make_client, open_doc, status
from server_model import build_model, train_tokenizer, write_model

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

LIB = '''package shapes

// Area of a rectangle.
func Area(w, h float64) float64 {
	return w * h * rectangleScale
}
'''
OPEN = '''package shapes

func Double(w, h float64) float64 {
	return 2 * Area(w, h)
}

func Scaled(w, h float64) float64 {
	\n}
'''
TYPED = "\treturn w * h * rect"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return go_module(tmp_path_factory.mktemp("ws"), "example.com/shapes", {"area.go": LIB})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, stdlib_src) -> Path:
    tok = train_tokenizer(stdlib_src)
    return write_model(build_model(tok), tok, tmp_path_factory.mktemp("m") / "tiny.gguf")


async def _start(client: LanguageClient, ws: Path, model_file: Path, sources: str) -> None:
    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        initialization_options={"hrmLsp": {"device": "cpu", "modelPath": str(model_file),
                                           "completionSources": sources, "debounceMs": 0,
                                           "timeBudgetMs": 60_000}}))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        st = await status(client)
        if st["model"]["state"] == "ready" and st["index"]["state"] in ("ready", "off"):
            return
        assert loop.time() < deadline, f"server never got ready: {st}"
        await asyncio.sleep(0.2)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_CMD, client_factory=make_client),
                    scope="module")
async def client(lsp_client: LanguageClient, workspace, model_file):
    await _start(lsp_client, workspace, model_file, "index")
    yield
    await lsp_client.shutdown_session()


def _doc(ws: Path, typed: str) -> tuple[str, str, types.Position]:
    at = OPEN.index("\t\n}\n")
    text = OPEN[:at] + typed + OPEN[at + 1:]
    line = text[: at + len(typed)].count("\n")
    col = len(typed)
    return (ws / "scaled.go").as_uri(), text, types.Position(line=line, character=col)


async def _inline(client, uri: str, pos: types.Position) -> str:
    res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    items = res.items if isinstance(res, types.InlineCompletionList) else (res or [])
    return items[0].insert_text if items else ""


async def test_status_reports_the_index_tiers(client: LanguageClient, workspace):
    st = await status(client)
    tiers = {t["tier"]: t for t in st["index"]["tiers"]}
    assert st["settings"]["completion_sources"] == "index"
    assert tiers["workspace"]["state"] == "ready" and tiers["workspace"]["files"] == 1
    assert tiers["stdlib"]["state"] == "off"  # HRM_LSP_INDEX_STATIC=off in the test suite
    assert st["index"]["folders"] == [str(workspace)]


async def test_index_source_completes_from_another_file_mid_word(client: LanguageClient, workspace):
    uri, text, pos = _doc(workspace, TYPED)
    open_doc(client, uri, text)
    # The rest of the word comes from area.go (token healing: "rect" is not a token there).
    got = await _inline(client, uri, pos)
    assert got == "angleScale"


async def test_new_file_on_disk_reaches_the_index(client: LanguageClient, workspace):
    (workspace / "perim.go").write_text(
        "package shapes\n\nfunc Perimeter(w, h float64) float64 {\n\treturn 2*w + 2*h + borderWidthMM\n}\n")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=(workspace / "perim.go").as_uri(), type=types.FileChangeType.Created)]))
    uri, text, pos = _doc(workspace, "\treturn 2*w + 2*h + bord")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    async def answered() -> bool:
        return await _inline(client, uri, pos) == "erWidthMM"

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not await answered():
        assert loop.time() < deadline, "the new file never reached the index"
        await asyncio.sleep(0.3)


async def test_model_source_builds_no_index(workspace, model_file):
    c = make_client()  # a second server: the module's client runs with sources=index
    await c.start_io(*SERVER_CMD)
    try:
        await _start(c, workspace, model_file, "model")
        assert (await status(c))["index"]["state"] == "off"
    finally:
        await c.shutdown_session()
