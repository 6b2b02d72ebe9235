"""Completion latency through the real protocol, as an editor sees it (docs/benchmarks.md, "Server").

    .venv/bin/python benchmarks/server.py                      # random-weight `small` model
    .venv/bin/python benchmarks/server.py --model MODEL.gguf   # a real model file
    .venv/bin/python benchmarks/server.py --preset default --keystrokes 60

Starts ``hrm-lsp serve`` as a subprocess over stdio, opens a real Go standard-library file
and types into it one character at a time (``didChange``, incremental), asking after every
keystroke. Each latency is the client-side round trip of one request:

- cold: the first completion in a freshly opened document (no prefix cache for it);
- warm single-line: ``textDocument/completion`` (typing trigger: one line, no plan) and
  ``textDocument/inlineCompletion`` (automatic trigger, debounce set to 0 so the figure is
  the server's work, not the configured wait);
- cache hit: the same inline request repeated (the server's own overhead, no model work);
- warm multi-line validated: ``inlineCompletion`` invoked (plan, code, syntax+gofmt+vet),
  a few samples.

Without ``--model`` a random-weight model of ``--preset`` is built and exported (GGUF,
4-bit) with a SentencePiece tokenizer trained on the Go standard library at the preset's
vocabulary size: speed does not depend on the weights, and the token budgets
(``--max-tokens``) fix how much is decoded. Say which model a figure came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402

from hrm_lsp.server.positions import LineIndex  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from quality_cases import percentile  # noqa: E402

TYPING_FILE = "strings/compare.go"
TYPED = "if len(a) == 0 {"  # typed at the start of a function body, one character at a time


def goroot_src() -> Path:
    import go

    return Path(go.__file__).resolve().parent / "src"


def build_random_model(preset_name: str, out: Path) -> Path:
    """Random weights of ``preset_name`` + an SPM tokenizer of its vocabulary, as GGUF."""
    import torch

    from hrm_lsp.export.gguf import model_to_gguf
    from hrm_lsp.model import build_model, preset
    from hrm_lsp.tokenizer.spm import train_spm

    cfg = preset(preset_name)
    src = goroot_src()
    files = sorted(src.glob("*/*.go")) + sorted(src.glob("*/*/*.go"))
    texts, size = [], 0
    # Enough text for the vocabulary to fill: about 300 bytes per piece.
    for f in files:
        if f.name.endswith("_test.go"):
            continue
        t = f.read_text(encoding="utf-8", errors="replace")
        texts.append(t)
        size += len(t)
        if size > cfg.vocab_size * 300:
            break
    tok = train_spm(texts, cfg.vocab_size)
    torch.manual_seed(0)
    model = build_model(preset(preset_name, vocab_size=tok.vocab_size))
    model_to_gguf(model, tok, out)
    return out


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 0.95), 1), "min_ms": round(min(values), 1)}


async def start_client(model_path: Path, settings: dict, *, workspace: Path | None = None,
                       log_file: Path | None = None, log_level: str = "ERROR",
                       name: str = "hrm-lsp-bench") -> LanguageClient:
    """Start ``hrm-lsp serve`` over stdio and initialize it as an editor does.

    ``settings`` go in ``initializationOptions`` under ``hrmLsp``; ``workspace`` becomes the
    one workspace folder (and root URI). The client creates and follows ``$/progress``
    tokens: ``client.progress_active`` holds the tokens begun and not yet ended."""
    client = LanguageClient(name, "1")
    client.progress_active = set()  # type: ignore[attr-defined]

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def _create(params: types.WorkDoneProgressCreateParams) -> None:
        return None

    @client.feature(types.PROGRESS)
    def _progress(params: types.ProgressParams) -> None:
        kind = params.value.get("kind") if isinstance(params.value, dict) else \
            getattr(params.value, "kind", None)
        if kind == "begin":
            client.progress_active.add(params.token)
        elif kind == "end":
            client.progress_active.discard(params.token)

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _message(params: types.ShowMessageParams) -> None:
        client.messages.append(params.message)  # type: ignore[attr-defined]

    client.messages = []  # type: ignore[attr-defined]
    args = ["-m", "hrm_lsp.cli", "serve", "--model", str(model_path), "--log-level", log_level]
    if log_file is not None:
        args += ["--log-file", str(log_file)]
    await client.start_io(sys.executable, *args)
    caps = types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=["utf-16"]),
        window=types.WindowClientCapabilities(work_done_progress=True))
    folders = None
    root_uri = None
    if workspace is not None:
        root_uri = workspace.resolve().as_uri()
        folders = [types.WorkspaceFolder(uri=root_uri, name=workspace.name)]
    await client.initialize_async(types.InitializeParams(
        process_id=os.getpid(), capabilities=caps, root_uri=root_uri, workspace_folders=folders,
        initialization_options={"hrmLsp": settings}))
    client.initialized(types.InitializedParams())
    return client


async def wait_model(client: LanguageClient) -> tuple[dict, float]:
    """Poll ``hrm-lsp.status`` until the model is ready; (status, seconds waited).
    Exits with the server's message when the model failed to load."""
    t0 = time.perf_counter()
    while True:
        st = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="hrm-lsp.status", arguments=[]))
        if st["model"]["state"] in ("ready", "failed"):
            break
        await asyncio.sleep(0.05)
    if st["model"]["state"] != "ready":
        raise SystemExit(f"model did not load: {st['model']['message']}")
    return st, time.perf_counter() - t0


async def stop_client(client: LanguageClient) -> None:
    """shutdown + exit, then wait for the process to end."""
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


async def run(args: argparse.Namespace, model_path: Path) -> dict:
    client = await start_client(model_path, {
        "debounceMs": 0, "maxTokens": args.max_tokens, "maxTokensMultiline": args.max_tokens_multiline,
        "device": "cpu", "timeBudgetMs": 60_000, "completionSources": args.sources},
        workspace=goroot_src() / Path(TYPING_FILE).parent)
    st, load_s = await wait_model(client)
    if args.sources != "model":  # measure typing, not indexing: wait for the index
        while (await client.workspace_execute_command_async(types.ExecuteCommandParams(
                command="hrm-lsp.status", arguments=[])))["index"].get("state") != "ready":
            await asyncio.sleep(0.2)

    text = (goroot_src() / TYPING_FILE).read_text(encoding="utf-8")
    site = text.index("{\n", text.index("\nfunc ")) + 2  # start of the first function body

    async def complete(uri: str, offset: int, body: str) -> float:
        p = LineIndex(body).position(offset)
        t = time.perf_counter()
        await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(p.line, p.character)))
        return (time.perf_counter() - t) * 1000

    async def inline(uri: str, offset: int, body: str, invoked: bool) -> float:
        p = LineIndex(body).position(offset)
        kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
        t = time.perf_counter()
        await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(p.line, p.character),
            context=types.InlineCompletionContext(trigger_kind=kind)))
        return (time.perf_counter() - t) * 1000

    def open_doc(uri: str, body: str) -> None:
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=uri, language_id="go", version=1, text=body)))

    # Cold: a fresh document each time (its own session, nothing cached).
    cold = []
    for i in range(args.cold):
        uri = f"file:///bench/cold{i}/compare.go"
        open_doc(uri, text)
        cold.append(await complete(uri, site, text))

    # Warm: type into a document, asking after each keystroke. Popup and inline completion
    # type into separate documents: both take the same single-line path, so asking both at
    # one keystroke would time a cache hit for the second.
    async def type_into(uri: str, ask, keystrokes: int = args.keystrokes
                        ) -> tuple[list[float], str, int]:
        open_doc(uri, text)
        await complete(uri, site, text)  # the document's cold request, not counted here
        body, version, offset = text, 1, site
        times = []
        typed = (TYPED * (1 + keystrokes // len(TYPED)))[:keystrokes]
        for ch in typed:
            p = LineIndex(body).position(offset)
            version += 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(p.line, p.character),
                                      types.Position(p.line, p.character)), text=ch)]))
            body = body[:offset] + ch + body[offset:]
            offset += 1
            times.append(await ask(uri, offset, body))
        return times, body, offset

    warm_popup, _, _ = await type_into("file:///bench/popup/compare.go", complete)
    warm_inline, body, offset = await type_into(
        "file:///bench/inline/compare.go", lambda u, o, b: inline(u, o, b, invoked=False))
    uri = "file:///bench/inline/compare.go"
    # The same request again: answered from the result cache, so this is the server's own
    # protocol overhead (JSON-RPC, position conversion, item building) without the model.
    hits = [await inline(uri, offset, body, invoked=False) for _ in range(args.keystrokes)]
    multi_times, _, _ = await type_into(
        "file:///bench/multi/compare.go", lambda u, o, b: inline(u, o, b, invoked=True),
        keystrokes=args.multiline_samples)

    await stop_client(client)
    return {"model_load_s": round(load_s, 2), "cold_completion": summary(cold),
            "warm_single_line_completion": summary(warm_popup),
            "warm_single_line_inline": summary(warm_inline),
            "cache_hit_inline": summary(hits),
            "multi_line_validated_inline": summary(multi_times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model file (default: a random-weight --preset model)")
    ap.add_argument("--preset", default="small", help="preset for the random-weight model")
    ap.add_argument("--keystrokes", type=int, default=40)
    ap.add_argument("--cold", type=int, default=5)
    ap.add_argument("--multiline-samples", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16, help="single-line token budget")
    ap.add_argument("--max-tokens-multiline", type=int, default=64)
    ap.add_argument("--sources", default="both", choices=["both", "model", "index"],
                    help="completionSources (the workspace folder is the typed file's package)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        what = str(model) if model else f"random-weight '{args.preset}' preset (4-bit GGUF)"
        if model is None:
            model = build_random_model(args.preset, Path(tmp) / f"{args.preset}.gguf")
        result = asyncio.run(run(args, model))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
              "load_avg": [round(x, 1) for x in os.getloadavg()], "model": what,
              "max_tokens": args.max_tokens, "keystrokes": args.keystrokes,
              "sources": args.sources, **result}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
