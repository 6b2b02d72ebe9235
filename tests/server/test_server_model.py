"""Protocol tests with a real (tiny) model: background loading with progress, completion
items carrying plan and validation, inline completion, code actions whose edits pass gofmt
and go vet, caching, debounce/superseding, $/cancelRequest, huge documents, and a
randomized run of mixed requests after which the server still answers correctly.

The model is the ``tiny`` preset, taught in the fixture to answer two requests (see
``server_model.py``); everything else it writes is whatever an almost untrained model
writes, which is what robustness tests want.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from server_helpers import GO_SOURCE, SERVER_CMD, change, make_client, open_doc, status, wait_for
from server_model import (
    build_model,
    completion_example,
    refine_example,
    teach,
    train_tokenizer,
    write_model,
)

from hrm_lsp.inference import Plan
from hrm_lsp.inference.engine import Engine
from hrm_lsp.server.positions import LineIndex
from hrm_lsp.validators import validate

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CUT = GO_SOURCE.index("strings.Join")
COMPLETE_SOURCE = GO_SOURCE[:CUT] + "\n}\n"  # cursor after `return ` in Join
COMPLETION = 'strings.Join(words, ",")'
PLAN = Plan("ADD", "func", ("join the words",))
COUNT_AT = GO_SOURCE.index("func Count") + 5
BODY = "return len(words)"
# Generous time budget: the shared 2-core test machine may be slow; tests assert content.
# The model alone: these tests check what the taught model answers through the server; the
# repository index's mixing has its own tests (test_server_index.py).
SETTINGS = {"device": "cpu", "timeBudgetMs": 120_000, "maxTokens": 6, "maxTokensMultiline": 64,
            "debounceMs": 10, "completionSources": "model"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, stdlib_src):
    tok = train_tokenizer(stdlib_src)
    model = build_model(tok)
    engine = Engine(model, tok)
    examples = [refine_example(engine, GO_SOURCE, COUNT_AT, BODY),
                completion_example(engine, COMPLETE_SOURCE, CUT, PLAN, COMPLETION)]
    teach(model, examples)
    return write_model(model, tok, tmp_path_factory.mktemp("model") / "tiny.gguf")


def pos_of(text: str, offset: int) -> types.Position:
    p = LineIndex(text).position(offset)
    return types.Position(p.line, p.character)


def apply_edit(text: str, edit: types.WorkspaceEdit, uri: str) -> str:
    """Apply a WorkspaceEdit's edits for ``uri`` the way a client does (UTF-16)."""
    if edit.document_changes:
        edits = [e for dc in edit.document_changes if dc.text_document.uri == uri for e in dc.edits]
    else:
        edits = list(edit.changes[uri])
    idx = LineIndex(text)
    spans = sorted(((idx.offset(e.range.start.line, e.range.start.character),
                     idx.offset(e.range.end.line, e.range.end.character), e.new_text)
                    for e in edits), reverse=True)
    for a, b, new in spans:
        text = text[:a] + new + text[b:]
    return text


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_CMD, client_factory=make_client),
                    scope="module")
async def client(lsp_client: LanguageClient, model_file):
    lsp_client.applied = []

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply(params: types.ApplyWorkspaceEditParams):
        lsp_client.applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"hrmLsp": {**SETTINGS, "modelPath": str(model_file)}}))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while (await status(lsp_client))["model"]["state"] != "ready":
        assert loop.time() < deadline, "model never loaded"
        await wait_for(lambda: any(r and r[-1].kind == "end"
                                   for r in lsp_client.progress_reports.values()), timeout=120,
                       what="model load progress to end")
    yield
    await lsp_client.shutdown_session()


async def test_model_loads_in_background_with_progress(client: LanguageClient):
    loads = [r for r in client.progress_reports.values()
             if r and r[0].kind == "begin" and "loading model" in (r[0].message or "")]
    assert loads, client.progress_reports
    assert loads[0][-1].kind == "end" and "loaded" in loads[0][-1].message
    assert not [m for m in client.messages if m.type == types.MessageType.Error]


async def test_completion_item_carries_plan_and_validation(client: LanguageClient):
    uri = "file:///tmp/model/join.go"
    open_doc(client, uri, COMPLETE_SOURCE)
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos_of(COMPLETE_SOURCE, CUT),
        context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked)))
    assert len(res.items) == 1
    item = res.items[0]
    assert item.label == COMPLETION
    assert item.detail == "ADD func · join the words"
    doc = item.documentation.value
    assert "**Plan** ADD func\n1. join the words" in doc
    assert "syntax ✓ gofmt ✓ vet ✓" in doc
    cursor = pos_of(COMPLETE_SOURCE, CUT)
    assert item.text_edit.range == types.Range(cursor, cursor)
    edited = apply_edit(COMPLETE_SOURCE, types.WorkspaceEdit(changes={uri: [item.text_edit]}), uri)
    assert COMPLETION in edited
    assert validate(edited, stages=("syntax", "gofmt", "vet")).ok


async def test_results_are_cached_by_version_and_position(client: LanguageClient):
    uri = "file:///tmp/model/join.go"  # opened by the previous test, same version
    before = (await status(client))["cache"]["hits"]
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos_of(COMPLETE_SOURCE, CUT),
        context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked)))
    assert res.items[0].label == COMPLETION
    assert (await status(client))["cache"]["hits"] == before + 1


async def test_inline_completion_invoked_is_validated_ghost_text(client: LanguageClient):
    uri = "file:///tmp/model/inline.go"
    open_doc(client, uri, COMPLETE_SOURCE)
    res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos_of(COMPLETE_SOURCE, CUT),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert [i.insert_text for i in res.items] == [COMPLETION]
    cursor = pos_of(COMPLETE_SOURCE, CUT)
    assert res.items[0].range == types.Range(cursor, cursor)


async def test_code_action_edit_passes_gofmt_and_vet(client: LanguageClient):
    uri = "file:///tmp/model/count.go"
    open_doc(client, uri, GO_SOURCE)
    acts = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(pos_of(GO_SOURCE, COUNT_AT), pos_of(GO_SOURCE, COUNT_AT)),
        context=types.CodeActionContext(diagnostics=[])))
    assert [a.title for a in acts] == ["Refine this function"]
    resolved = await client.code_action_resolve_async(acts[0])
    assert resolved.edit is not None
    # Progress while it ran: begin with the action's title, reports from the engine, end.
    refine_progress = await wait_for(lambda: [
        r for r in client.progress_reports.values()
        if r and r[0].kind == "begin" and r[0].title == "Refine this function"
        and r[-1].kind == "end"], what="refine progress")
    assert any(x.kind == "report" and "Count" in (x.message or "") for x in refine_progress[0])
    after = apply_edit(GO_SOURCE, resolved.edit, uri)
    assert BODY in after and after.count("func Count") == 1
    result = validate(after, stages=("syntax", "gofmt", "vet"))
    assert result.ok and not result.diagnostics, result.diagnostics
    # The same through workspace/executeCommand: the edit comes back and is also applied.
    n = len(client.applied)
    edit = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="hrm-lsp.refineFunction",
        arguments=[{"uri": uri, "line": pos_of(GO_SOURCE, COUNT_AT).line, "character": 5}]))
    assert edit is not None and len(client.applied) == n + 1
    assert apply_edit(GO_SOURCE, client.applied[-1].edit, uri) == after
    assert client.applied[-1].label == "Refine this function"


async def test_generate_from_comment_fills_the_empty_body(client: LanguageClient):
    uri = "file:///tmp/model/generate.go"
    open_doc(client, uri, GO_SOURCE)
    comment = pos_of(GO_SOURCE, GO_SOURCE.index("Count returns"))
    acts = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(comment, comment),
        context=types.CodeActionContext(diagnostics=[])))
    assert [a.title for a in acts] == ["Generate from comment"]
    edit = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="hrm-lsp.generateFromComment",
        arguments=[uri, {"line": comment.line, "character": comment.character}]))
    assert edit is not None
    after = apply_edit(GO_SOURCE, _structure_edit(client, edit), uri)
    assert BODY in after
    assert validate(after, stages=("syntax", "gofmt", "vet")).ok


def _structure_edit(client: LanguageClient, raw) -> types.WorkspaceEdit:
    """executeCommand results arrive as plain JSON; structure them like a client would."""
    if isinstance(raw, types.WorkspaceEdit):
        return raw
    return client.protocol._converter.structure(raw, types.WorkspaceEdit)


async def reconfigure(client: LanguageClient, model_file, **changes) -> None:
    """Change settings the way VS Code does (didChangeConfiguration, then the server pulls)."""
    settings = {**SETTINGS, "modelPath": str(model_file), **changes}
    client.set_configuration(settings, section="hrmLsp")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (await status(client))["settings"]["debounce_ms"] != settings["debounceMs"]:
        assert loop.time() < deadline, "settings never applied"


async def test_debounced_request_is_superseded_by_newer_one(client: LanguageClient, model_file):
    uri = "file:///tmp/model/debounce.go"
    open_doc(client, uri, COMPLETE_SOURCE)
    await reconfigure(client, model_file, debounceMs=5000)
    ident = types.TextDocumentIdentifier(uri=uri)
    at = pos_of(COMPLETE_SOURCE, CUT)

    def inline(trigger):
        return types.InlineCompletionParams(text_document=ident, position=at,
                                            context=types.InlineCompletionContext(trigger_kind=trigger))

    # Sent now (not when a task gets round to it), so it surely precedes the newer request.
    older = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                         inline(types.InlineCompletionTriggerKind.Automatic))
    newer = await client.text_document_inline_completion_async(
        inline(types.InlineCompletionTriggerKind.Invoked))
    assert [i.insert_text for i in newer.items] == [COMPLETION]
    assert (await asyncio.wrap_future(older)) is None  # released by the newer request
    # $/cancelRequest on a request still waiting in the debounce: cancelled, not answered.
    fut = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                       inline(types.InlineCompletionTriggerKind.Automatic))
    msg_id = next(k for k, v in client.protocol._request_futures.items() if v is fut)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    with pytest.raises(Exception) as err:
        await asyncio.wrap_future(fut)
    assert "-32800" in str(err.value) or "cancel" in str(err.value).lower()
    await reconfigure(client, model_file)


async def test_huge_document_is_cut_to_the_window(client: LanguageClient):
    uri = "file:///tmp/model/huge.go"
    filler = "".join(f"// filler line {i} 😀\n" for i in range(40_000))  # ~1 MB
    text = "package demo\n\n" + filler + "func F() int {\n\treturn \n}\n"
    open_doc(client, uri, text)
    at = pos_of(text, text.index("return ") + 7)
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=at))
    assert res is not None
    for item in res.items:  # whatever the model wrote is inserted exactly at the cursor
        assert item.text_edit.range.end == at
    client.text_document_did_close(types.DidCloseTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=uri)))


async def test_randomized_mixed_requests(client: LanguageClient):
    """A few hundred mixed requests with random (also invalid) positions and edits; then the
    server's copy of the document matches the client's, and it still answers correctly."""
    rng = random.Random(1234)
    uri = "file:///tmp/model/random.go"
    text = GO_SOURCE.replace("words", "wörds😀")
    open_doc(client, uri, text)
    version = 1
    ident = types.TextDocumentIdentifier(uri=uri)
    pending = []
    snippets = ["x", "😀", "\n", "\r\n", "é", "func ", "{}", "", "\t// 中文\n"]
    for _ in range(300):
        kind = rng.random()
        idx = LineIndex(text)
        if kind < 0.4:
            a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
            if b - a > 20:
                b = a + 20
            # Never split a surrogate pair or CRLF: positions a client can name.
            pa, pb = idx.position(a), idx.position(b)
            new = rng.choice(snippets)
            version += 1
            change(client, uri, version, (pa.line, pa.character), (pb.line, pb.character), new)
            a2 = idx.offset(pa.line, pa.character)
            b2 = idx.offset(pb.line, pb.character)
            text = text[:a2] + new + text[b2:]
            continue
        line = rng.choice([rng.randint(0, idx.line_count + 3), 0, idx.line_count - 1])
        char = rng.choice([rng.randint(0, 120), 0, 10_000])
        pos = types.Position(line, char)
        if kind < 0.6:
            pending.append(client.text_document_completion_async(types.CompletionParams(
                text_document=ident, position=pos)))
        elif kind < 0.8:
            # Typing-time triggers only: the invoked, validated paths are tested above and
            # each costs a gofmt/vet run.
            trig = types.InlineCompletionTriggerKind.Automatic
            pending.append(client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=ident, position=pos, context=types.InlineCompletionContext(trigger_kind=trig))))
        elif kind < 0.9:
            pending.append(client.text_document_code_action_async(types.CodeActionParams(
                text_document=ident, range=types.Range(pos, pos),
                context=types.CodeActionContext(diagnostics=[]))))
        else:
            pending.append(status(client, uri))
        if len(pending) >= 8:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    st = await status(client, uri)
    assert st["document"] == {"version": version, "text": text}
    # Still answering correctly: the taught completion on a fresh document.
    fresh = "file:///tmp/model/after-random.go"
    open_doc(client, fresh, COMPLETE_SOURCE)
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=fresh), position=pos_of(COMPLETE_SOURCE, CUT),
        context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked)))
    assert [i.label for i in res.items] == [COMPLETION]
