"""The hrm-lsp language server (pygls 2): wiring of LSP messages to inference and validators.

Design choices:
- Handlers are thin: find the document, convert positions (``positions.py``), call the
  engine or the validators, convert back (``builders.py``). Nothing here knows how text is
  generated or judged.
- Documents live in our own store (``documents.py``): pygls's built-in text-sync handlers
  are replaced in ``HrmProtocol`` so CRLF, astral characters and bad ranges are handled in
  the one place that does position conversion.
- The model loads in the background (``model_host.py``) with ``$/progress``; until it is
  ready, completion requests answer empty at once. Missing/corrupt model: one
  ``window/showMessage``; validation-based features keep working.
- Generation runs on one worker thread (one model, two cores): per document a newer
  request supersedes the older one (its cancel token fires), ``$/cancelRequest`` fires it
  too, results are cached by (uri, version, offset, mode), automatic inline triggers are
  debounced.
- Client input never crashes the server: malformed requests get an InvalidParams error
  response, positions are clamped, unknown documents answer empty, and pygls's habit of
  showing every error as a popup is replaced by logging plus one message per kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from hrm_lsp import __version__
from hrm_lsp.log import get_logger
from hrm_lsp.server import actions, builders, framing
from hrm_lsp.server.cache import ResultCache
from hrm_lsp.server.debounce import Debouncer
from hrm_lsp.server.documents import Document, DocumentStore, uri_to_path
from hrm_lsp.server.index_host import IndexHost
from hrm_lsp.server.inflight import InFlight
from hrm_lsp.server.model_host import ModelHost, resolve_model_path
from hrm_lsp.server.positions import UTF16, choose_encoding
from hrm_lsp.server.settings import SECTION, Settings, parse_settings

log = get_logger(__name__)

COMMAND_REFINE = "hrm-lsp.refineFunction"
COMMAND_GENERATE = "hrm-lsp.generateFromComment"
COMMAND_STATUS = "hrm-lsp.status"
TITLE_REFINE = "Refine this function"
TITLE_GENERATE = "Generate from comment"
PARENT_POLL_S = 2.0
CONFIG_TIMEOUT_S = 5.0  # a client that never answers workspace/configuration: defaults
READ_CHUNK = 64 * 1024
MAX_POSITION = 2**31 - 1  # LSP's uinteger range: positions are clamped into it
PARSE_ERROR, INVALID_REQUEST = -32700, -32600
_ID_IN_TEXT = re.compile(r'"id"\s*:\s*(-?[0-9]{1,15}|"(?:[^"\\\n]|\\.){0,200}")')


def _new_token() -> Any:
    from hrm_lsp.inference import CancelToken

    return CancelToken()


class _BadMessage:
    """A request whose params did not fit its method: answered with an error, not dropped."""

    jsonrpc = "2.0"

    def __init__(self, msg_id: Any, method: str, error: JsonRpcException) -> None:
        self.id = msg_id
        self.method = method
        self.error = error


class HrmProtocol(LanguageServerProtocol):
    """pygls's protocol with our framing, our document store and answers to malformed
    requests.

    pygls decodes bodies with ``json.loads(object_hook=structure_message)``, which tries to
    turn *every nested object* into a message: an argument shaped like a JSON-RPC message
    fails, and the whole request is dropped unanswered. Here only the top-level object is a
    message (``handle_frame``), and what cannot be decoded is answered where an id can be
    read.
    """

    _server: HrmLanguageServer

    def handle_frame(self, frame: framing.Frame) -> None:
        """One frame from ``framing``: decode the body, answer what is broken, dispatch."""
        if frame.note:
            log.warning("framing: %s", frame.note)
        body = frame.body
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            self._answer_undecodable(body.decode("utf-8", "replace"), PARSE_ERROR,
                                     f"Parse error: the body is not UTF-8 (byte {e.start})")
            return
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            self._answer_undecodable(text, PARSE_ERROR, f"Parse error: {str(e)[:200]}")
            return
        if not isinstance(data, dict):
            self._answer_undecodable(text, PARSE_ERROR, "Parse error: the body is a JSON "
                                     f"{type(data).__name__}, not an object")
            return
        if data.get("jsonrpc") != "2.0" or ("method" in data and not isinstance(data["method"], str)):
            log.warning("not a JSON-RPC 2.0 message: %.200s", text)
            if "method" in data and "id" in data:
                self._send_error(data["id"], INVALID_REQUEST,
                                 'Invalid Request: expected "jsonrpc": "2.0" and a string "method"')
            return
        if "id" in data and not _valid_id(data["id"]):
            # pygls would run it (a `shutdown` with id {} shuts down) and answer an id the
            # client cannot match; LSP ids are integers or strings.
            log.warning("message with an invalid id %.100r dropped", data["id"])
            if "method" in data:
                self._send_error(None, INVALID_REQUEST, "Invalid Request: the id must be an "
                                 "integer or a string")
            return
        _clamp_positions(data.get("params"))
        try:
            message = self.structure_message(data)
        except Exception as e:
            log.warning("dropping a message that does not decode (%s): %.200s", e, text)
            self._server._report_server_error(e, JsonRpcException)
            return
        try:
            self.handle_message(message)
        except Exception as e:  # a handler bug must not end the read loop
            log.exception("failed to handle a message")
            self._server._report_server_error(e, JsonRpcException)

    def _answer_undecodable(self, text: str, code: int, message: str) -> None:
        """Log a body that does not decode; answer it when an id can be read from it."""
        log.warning("%s: %.200r", message, text)
        m = _ID_IN_TEXT.search(text[:4096])
        if m is None:
            return
        try:
            msg_id = json.loads(m.group(1))
        except ValueError:
            return
        if msg_id in self._request_futures:  # an id of a request we sent: not a request
            return
        self._send_error(msg_id, code, message)

    def _send_error(self, msg_id: Any, code: int, message: str) -> None:
        """An error response echoing any JSON id (null when the id is not a string/number)."""
        if not isinstance(msg_id, (str, int, float)) or isinstance(msg_id, bool):
            msg_id = None
        self._send_data({"jsonrpc": "2.0", "id": msg_id,
                         "error": {"code": code, "message": message}})

    def structure_message(self, data: dict[str, Any]):
        """Deserialize; a request with bad params becomes a _BadMessage (answered later)."""
        try:
            return super().structure_message(data)
        except JsonRpcException as e:
            if isinstance(data, dict) and "id" in data and "method" in data:
                msg_id = data["id"]
                if _valid_id(msg_id):
                    return _BadMessage(msg_id, str(data["method"]), e)
            raise

    def handle_message(self, message):
        """Answer _BadMessage with InvalidParams and requests after shutdown with
        InvalidRequest (pygls drops them unanswered); everything else as pygls does."""
        if isinstance(message, _BadMessage):
            log.warning("invalid params for %s (id %r)", message.method, message.id)
            err = JsonRpcInvalidParams(f"invalid params for {message.method}")
            self._send_response(message.id, error=err.to_response_error())
            return
        if not hasattr(message, "jsonrpc"):  # a JSON value that is not a message at all
            log.warning("ignoring a message that is not JSON-RPC: %.200r", message)
            return
        method = getattr(message, "method", None)
        if self._shutdown and method is not None and method != types.EXIT and \
                getattr(message, "id", None) is not None:
            self._send_error(message.id, INVALID_REQUEST,
                             f"Invalid Request: {method} after shutdown")
            return
        return super().handle_message(message)

    def _handle_response(self, msg_id, result=None, error=None):
        """A client's answer; one that comes after we stopped waiting is logged and dropped."""
        fut = self._request_futures.get(msg_id)
        if fut is not None and fut.done():
            self._request_futures.pop(msg_id, None)
            log.info("late answer to request %r ignored", msg_id)
            return
        super()._handle_response(msg_id, result, error)

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        """Track the document in our store."""
        td = params.text_document
        self._server.docs.open(td.uri, td.text, td.version, td.language_id)
        doc = self._server.go_document(td.uri)
        if doc is not None:
            self._server.index_host.opened(str(doc.path), doc.text)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        """Apply incremental (or full) changes; stale work for the document is cancelled."""
        changes = []
        for ch in params.content_changes:
            rng = getattr(ch, "range", None)
            if rng is None:
                changes.append((None, ch.text))
            else:
                changes.append(((rng.start.line, rng.start.character, rng.end.line,
                                 rng.end.character), ch.text))
        uri = params.text_document.uri
        doc = self._server.docs.change(uri, params.text_document.version, changes,
                                       self._server.encoding)
        if doc is None:
            log.info("didChange for a document that is not open: %s", uri)
        elif doc.is_go:
            self._server.index_host.changed(str(doc.path), doc.text)
        self._server.inflight.cancel(uri)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        """Forget the document and everything cached for it."""
        uri = params.text_document.uri
        server = self._server
        doc = server.go_document(uri)
        if doc is not None:
            server.index_host.closed(str(doc.path))
        server.docs.close(uri)
        server.inflight.cancel(uri)
        server.cache.forget(uri)
        server.debouncer.forget(uri)
        engine = server.model.engine
        if engine is not None:  # free the document's KV cache, after any queued generation
            server.generation_pool.submit(engine.sessions.drop, uri)


class HrmLanguageServer(LanguageServer):
    """Server state: documents, settings, the model host and the generation machinery."""

    protocol: HrmProtocol

    def __init__(self, model_path: str | None = None, sources: str | None = None) -> None:
        super().__init__("hrm-lsp", __version__, protocol_cls=HrmProtocol, max_workers=4)
        self.docs = DocumentStore()
        # `serve --sources` sets the default of completionSources; client settings override.
        self.defaults = Settings(completion_sources=sources) if sources else Settings()
        self.settings = self.defaults
        self.index_host = IndexHost()
        self.model = ModelHost()
        self.cache = ResultCache()
        self.debouncer = Debouncer()
        self.inflight = InFlight(_new_token)
        # One worker: the model is one set of weights on two cores; requests queue and
        # superseded ones fall through quickly because their token is already cancelled.
        # Go discovery (`go env`, which can hang) never runs on it: validation there uses
        # the cached toolchain, or skips gofmt/vet while discovery runs in the background.
        from hrm_lsp.validators.go import never_wait_for_discovery

        self.generation_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hrm-gen",
                                                  initializer=never_wait_for_discovery)
        self.cli_model_path = model_path
        self._init_options: Any = None
        self._said: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loaded_key: tuple[str, str] | None = None
        from hrm_lsp.validators.go import ENV_VAR

        self._go_env_at_start = os.environ.get(ENV_VAR)  # restored when goPath is cleared

    # -- transport: our framing instead of pygls's reader ----------------------------------

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        """Serve over stdio with ``framing`` (resynchronising, bounded) reading stdin."""
        self._stop_event = threading.Event()
        stdin = stdin or sys.stdin.buffer
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        # Its own thread: reading must never wait behind handlers in the shared pool.
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hrm-stdin")

        async def main() -> None:
            loop = asyncio.get_running_loop()
            await framing.read_frames(lambda: loop.run_in_executor(reader, _read_some, stdin),
                                      self.protocol.handle_frame, self._frame_skipped,
                                      self._stop_event.is_set)

        try:
            asyncio.run(main())
        except BrokenPipeError:
            log.error("the client's end of the pipe is gone; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            reader.shutdown(wait=False)
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        """Serve one client at a time over TCP (debugging) with the same framing."""
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)  # type: ignore[arg-type]
            await framing.read_frames(lambda: reader.read(READ_CHUNK), self.protocol.handle_frame,
                                      self._frame_skipped, stop.is_set)
            self.shutdown()

        async def main() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass

    def _frame_skipped(self, skipped: framing.Skipped) -> None:
        """Log input that was not a frame; tell the user once per session."""
        log.warning("framing: skipped %d bytes (%s), starting %r", skipped.count,
                    skipped.reason, skipped.preview)
        if "limit" in skipped.reason:
            self.say(f"hrm-lsp: a message was refused: {skipped.reason}; the server goes on "
                     "with the next message", types.MessageType.Warning, once_key="frame-limit")

    # -- small helpers -------------------------------------------------------------------

    @property
    def encoding(self) -> str:
        """The negotiated position encoding (utf-16 until initialize says otherwise)."""
        try:
            enc = self.workspace.position_encoding
        except RuntimeError:
            return UTF16
        return choose_encoding([getattr(enc, "value", enc)]) if enc else UTF16

    def _client_cap(self, path: str) -> Any:
        node: Any = getattr(self.protocol, "client_capabilities", None)
        for part in path.split("."):
            if node is None:
                return None
            node = getattr(node, part, None)
        return node

    def say(self, message: str, kind: types.MessageType = types.MessageType.Warning,
            once_key: str | None = None) -> None:
        """``window/showMessage`` (and the log); with ``once_key``, at most once a session."""
        if once_key is not None:
            if once_key in self._said:
                return
            self._said.add(once_key)
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, "%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Log errors; tell the user once per kind instead of a popup per message."""
        log.error("server error (%s): %s", getattr(source, "__name__", source), error)
        if source is JsonRpcException or "Notification" in getattr(source, "__name__", ""):
            self.say(f"hrm-lsp ignored a message it could not handle ({type(error).__name__}); "
                     "see the server log", types.MessageType.Warning,
                     once_key=f"error:{getattr(source, '__name__', source)}")

    def go_document(self, uri: str) -> Document | None:
        """The open Go document for ``uri``, or None (unknown, closed, not Go)."""
        doc = self.docs.get(uri)
        return doc if doc is not None and doc.is_go else None

    # -- settings and model --------------------------------------------------------------

    def apply_settings(self, raw: Any, base: Settings | None = None) -> Settings:
        """Parse client settings (warnings go to the user) and adopt them."""
        settings, warnings = parse_settings(raw, base or self.defaults)
        for w in warnings:
            self.say(w, types.MessageType.Warning)
        if settings != self.settings:
            self.cache.clear()
        self.settings = settings
        _use_go(settings.go_path, self._go_env_at_start)
        from hrm_lsp.validators.go import start_discovery

        start_discovery()  # in the background, for the validators' own lookup (HRM_LSP_GO)
        return settings

    async def fetch_configuration(self) -> None:
        """Pull the ``hrmLsp`` section with ``workspace/configuration`` when supported."""
        if not self._client_cap("workspace.configuration"):
            return
        answer = asyncio.ensure_future(self.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])))
        # A client that never answers must not keep the model from loading: after a while
        # go on with what we have; an answer that comes later still applies.
        done, _ = await asyncio.wait({answer}, timeout=CONFIG_TIMEOUT_S)
        if not done:
            log.warning("the client did not answer workspace/configuration within %g s; "
                        "going on with initializationOptions and defaults (a later answer "
                        "still applies)", CONFIG_TIMEOUT_S)
            answer.add_done_callback(self._late_configuration)
            return
        self._adopt_configuration(answer)

    def _adopt_configuration(self, answer: asyncio.Future) -> bool:
        """Apply a ``workspace/configuration`` answer; False when there was none."""
        if answer.cancelled():
            return False
        error = answer.exception()
        if error is not None:  # the client may answer with an error; keep what we have
            log.warning("workspace/configuration failed: %s", error)
            return False
        result = answer.result()
        if result and result[0] is not None:
            base, _ = parse_settings(self._init_options, self.defaults)
            self.apply_settings(result[0], base)
        return True

    def _late_configuration(self, answer: asyncio.Future) -> None:
        if self._adopt_configuration(answer):
            log.info("late workspace/configuration answer applied")
            asyncio.ensure_future(self.ensure_model())

    async def ensure_model(self) -> None:
        """(Re)load the model if its path or device changed; progress while it loads."""
        path = resolve_model_path(self.settings.model_path or self.cli_model_path or "")
        key = (str(path), self.settings.device)
        if key == self._loaded_key:
            return
        self._loaded_key = key
        self.inflight.cancel_all()
        self.cache.clear()
        ticket = self.model.begin_load(path)
        token = None
        if self._client_cap("window.work_done_progress"):
            token = f"hrm-lsp/load/{uuid.uuid4().hex[:8]}"
            try:
                # A client that never answers must not keep the model from loading.
                await asyncio.wait_for(self.work_done_progress.create_async(token), 10)
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                    title="hrm-lsp", message=f"loading model {path.name}", cancellable=False))
            except Exception as e:
                log.warning("progress create failed: %s", e)
                token = None
        loop = asyncio.get_running_loop()
        engine, status = await loop.run_in_executor(self.generation_pool, self.model.load, path,
                                                    self.settings.device)
        # Commit and tell in one step on the loop: a status request never sees "failed"
        # before the message explaining it has been written.
        committed = self.model.commit(ticket, engine, status)
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=status.message))
        if committed and status.state == "failed":
            self.say(f"hrm-lsp: {status.message}. Completions and code actions are off "
                     "until a model loads; the server keeps running.", types.MessageType.Error)

    def start_index(self) -> None:
        """Build the repository index for the loaded model's tokenizer, in the background
        (``index_host.py``); nothing to do with ``completionSources = "model"``."""
        engine = self.model.engine
        if engine is None or self.settings.completion_sources == "model" or \
                not self.index_host.needs_build(engine.tok):
            return
        progress = self._begin_progress("hrm-lsp index")
        loop = asyncio.get_running_loop()
        self.index_host.start(engine.tok, progress.report_threadsafe,
                              lambda _: loop.call_soon_threadsafe(progress.finish))

    async def check_go(self) -> None:
        """Say once when Go is missing (validation falls back to the syntax gate)."""
        def probe() -> str | None:
            try:
                from hrm_lsp.validators import find_go

                find_go(self.settings.go_path or None)
                return None
            except Exception as e:  # GoNotFoundError, or anything else that means "no Go"
                return str(e)

        problem = await asyncio.get_running_loop().run_in_executor(None, probe)
        if problem:
            self.say(f"hrm-lsp: {problem}. Only the syntax check runs (gofmt and go vet are "
                     "skipped); set hrmLsp.goPath or install Go.", types.MessageType.Warning,
                     once_key="go-missing")

    # -- generation ----------------------------------------------------------------------

    async def generate(self, doc: Document, offset: int, *, multiline: bool,
                       plan: bool = True) -> Any | None:
        """Run one completion off the event loop; None when not ready, superseded or failed."""
        engine = self.model.engine
        if engine is None:
            return None
        s = self.settings
        key = (doc.uri, doc.version, offset, multiline, plan, self.index_host.version)
        hit = self.cache.get(key)
        if hit is not None:
            return None if getattr(hit, "withheld", None) else hit
        text, off, _ = actions.context_window(doc.text, offset, s.max_context_chars)
        req = s.completion_request(text, off, str(doc.path), multiline=multiline, plan=plan)
        comp = await self._run_cancellable(doc.uri, engine.complete, req, session_key=doc.uri,
                                           index=self.index_host.for_request(s.completion_sources))
        if comp is None or getattr(comp, "cancelled", False):
            return None
        self.cache.put(key, comp)
        self._note_skipped(getattr(comp, "validation", None))
        if getattr(comp, "withheld", None):
            log.debug("not shown (%s): %r", comp.withheld, comp.text[:80])
            return None
        return comp

    async def _run_cancellable(self, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, cancel=token, **kwargs)`` on the generation thread.

        The token fires when a newer request for ``key`` arrives, when the client sends
        ``$/cancelRequest`` (pygls cancels our task or the request's future), or on shutdown.
        """
        token = self.inflight.begin(key)
        self._cancel_with_request(token)
        loop = asyncio.get_running_loop()

        def call() -> Any:
            # Superseded while queued behind another generation: skip the work entirely.
            return None if token.cancelled else fn(*args, cancel=token, **kwargs)

        fut = loop.run_in_executor(self.generation_pool, call)
        try:
            result = await fut
        except asyncio.CancelledError:
            token.cancel()
            raise
        except Exception as e:  # engine errors become an empty answer and a log line
            log.warning("generation failed: %s", e, exc_info=True)
            return None
        finally:
            self.inflight.end(key, token)
        return None if token.cancelled else result

    def _cancel_with_request(self, token: Any) -> None:
        """Fire ``token`` when the current request's future is cancelled by the client."""
        msg_id = self.protocol.msg_id
        fut = self.protocol._request_futures.get(msg_id) if msg_id is not None else None
        if fut is not None:
            fut.add_done_callback(lambda f: token.cancel() if f.cancelled() else None)

    def _note_skipped(self, validation: Any) -> None:
        skipped = dict(getattr(validation, "skipped", None) or {})
        for stage, reason in skipped.items():
            if "go" in str(reason).lower() and "not found" in str(reason).lower():
                self.say(f"hrm-lsp: {reason}; {stage} is skipped, only the syntax check runs.",
                         types.MessageType.Warning, once_key="go-missing")

    # -- code actions --------------------------------------------------------------------

    async def compute_action_edit(self, command: str, uri: str, line: int, character: int,
                                  version: int | None = None) -> types.WorkspaceEdit | None:
        """The WorkspaceEdit for a code action, or None (with a message saying why)."""
        doc = self.go_document(uri)
        if doc is None:
            self.say(f"hrm-lsp: {uri} is not an open Go document", types.MessageType.Info)
            return None
        if version is not None and version != doc.version:
            self.say("hrm-lsp: the document changed; run the action again",
                     types.MessageType.Info)
            return None
        engine = self.model.engine
        if engine is None:
            self.say(f"hrm-lsp: the model is {self.model.status.state}: "
                     f"{self.model.status.message or 'not loaded yet'}", types.MessageType.Info)
            return None
        text, ver = doc.text, doc.version
        offset = doc.index.offset(line, character, self.encoding)
        title = TITLE_REFINE if command == COMMAND_REFINE else TITLE_GENERATE
        progress = self._begin_progress(title)
        try:
            span = await self._action_span(command, engine, doc, text, offset, progress)
        finally:
            progress.finish()
        if span is None:
            self.say(f"hrm-lsp: {title}: no suggestion passed the checks; nothing changed",
                     types.MessageType.Info)
            return None
        start, end, new_text = span
        after = text[:start] + new_text + text[end:]
        if not actions.passes_gate(text, after):
            self.say(f"hrm-lsp: {title}: the suggestion would break the file's syntax; "
                     "nothing changed", types.MessageType.Info)
            return None
        versioned = bool(self._client_cap("workspace.workspace_edit.document_changes"))
        return builders.lsp_workspace_edit(uri, ver, doc.index if doc.text is text else
                                           _index(text), start, end, new_text, self.encoding,
                                           versioned)

    async def _action_span(self, command: str, engine: Any, doc: Document, text: str,
                           offset: int, progress: _Progress) -> tuple[int, int, str] | None:
        """Ask the engine for the action's edit; (start, end, new_text) or None."""
        s = self.settings
        options = dict(max_tokens=s.max_tokens_multiline, temperature=s.temperature,
                       time_budget_ms=float(max(s.time_budget_ms, 10_000)),
                       max_refinement_iterations=max(1, s.max_refinement_iterations),
                       refinement_threshold=s.refinement_threshold, stages=s.validators)
        if command == COMMAND_REFINE:
            fn, at = engine.refine_function, offset
        else:
            site = actions.comment_site(text, offset)
            if site is None:
                return None
            # An empty body under the comment: the refine loop writes it from the comment's
            # plan. No function yet: the engine writes the declaration after the comment.
            fn = engine.refine_function if site.has_function else engine.generate_from_comment
            at = site.insert_offset if site.has_function else offset
        edit = await self._run_cancellable(doc.uri, fn, text, at, str(doc.path),
                                           progress=progress.report_threadsafe, **options)
        return None if edit is None else (edit.start, edit.end, edit.new_text)

    def _begin_progress(self, title: str) -> _Progress:
        return _Progress(self, title, bool(self._client_cap("window.work_done_progress")))


def _index(text: str):
    from hrm_lsp.server.positions import LineIndex

    return LineIndex(text)


class _Progress:
    """Server-initiated ``$/progress`` for one long action; safe to report from a thread."""

    def __init__(self, server: HrmLanguageServer, title: str, enabled: bool) -> None:
        self.server = server
        self.token = f"hrm-lsp/{uuid.uuid4().hex[:8]}" if enabled else None
        self.loop = asyncio.get_running_loop()
        self.done = False
        if self.token is not None:
            token = self.token

            def created(_: Any) -> None:
                if not self.done:  # the client may answer after the work already ended
                    server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                        title=title, cancellable=False))

            try:
                server.work_done_progress.create(token, created)
            except Exception as e:
                log.warning("progress create failed: %s", e)
                self.token = None

    def report_threadsafe(self, *args: Any) -> None:
        """Engine progress callback: ``(message[, percentage])`` from the worker thread."""
        if self.token is None:
            return
        message = str(args[0]) if args else None
        pct = args[1] if len(args) > 1 and isinstance(args[1], int) else None
        token = self.token
        self.loop.call_soon_threadsafe(
            lambda: token in self.server.work_done_progress.tokens and
            self.server.work_done_progress.report(
                token, types.WorkDoneProgressReport(message=message, percentage=pct)))

    def finish(self) -> None:
        """End the progress (only if the client created it)."""
        self.done = True
        if self.token is not None and self.token in self.server.work_done_progress.tokens:
            self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd())


def _use_go(go_path: str, at_start: str | None) -> None:
    """Point Go discovery at the configured binary or GOROOT (validators read HRM_LSP_GO);
    an empty setting restores what the environment said when the server started."""
    from hrm_lsp.validators.go import ENV_VAR

    value = go_path or at_start
    if value:
        os.environ[ENV_VAR] = value
    else:
        os.environ.pop(ENV_VAR, None)


def _valid_id(msg_id: Any) -> bool:
    """LSP request ids: integer or string (JSON-RPC's null and fractions are not used)."""
    return isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool))


def _clamp_positions(params: Any, budget: int = 100_000) -> None:
    """Clamp every ``{line, character}`` integer pair in ``params`` into 0..2**31-1, in place.

    lsprotocol rejects a negative or huge position with InvalidParams; the LSP position
    rules here (docs/server.md) are to clamp instead, as for positions past a line's end.
    Iterative and bounded (``budget`` nodes), so deeply nested arguments cost nothing more.
    """
    stack = [params]
    while stack and budget > 0:
        node = stack.pop()
        budget -= 1
        if isinstance(node, dict):
            line, char = node.get("line"), node.get("character")
            if type(line) is int and type(char) is int:
                node["line"] = min(max(line, 0), MAX_POSITION)
                node["character"] = min(max(char, 0), MAX_POSITION)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def _read_some(stream: Any) -> bytes:
    """What is available on ``stream`` now (at least one byte; b"" at EOF)."""
    read1 = getattr(stream, "read1", None)
    if read1 is not None:
        return read1(READ_CHUNK)
    return os.read(stream.fileno(), READ_CHUNK)


def _position_args(args: tuple[Any, ...]) -> tuple[str, int, int, int | None] | None:
    """Command arguments -> (uri, line, character, version); accepts a few client styles:
    ``[{"uri", "line", "character", "version"?}]``, ``[{"textDocument": {...}, "position": {...}}]``,
    ``[uri, {"line", "character"}]`` and ``[uri, line, character]``."""
    try:
        if len(args) == 1 and isinstance(args[0], dict):
            a = args[0]
            if "textDocument" in a:
                pos = a.get("position") or {}
                return (str(a["textDocument"]["uri"]), int(pos.get("line", 0)),
                        int(pos.get("character", 0)), a["textDocument"].get("version"))
            return str(a["uri"]), int(a.get("line", 0)), int(a.get("character", 0)), a.get("version")
        if len(args) == 2 and isinstance(args[1], dict):
            return str(args[0]), int(args[1].get("line", 0)), int(args[1].get("character", 0)), None
        if len(args) == 3:
            return str(args[0]), int(args[1]), int(args[2]), None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return None


def _workspace_folders(params: types.InitializeParams) -> list[str]:
    """Filesystem paths of the client's workspace folders (else its root)."""
    folders = [str(uri_to_path(f.uri)) for f in (params.workspace_folders or [])
               if getattr(f, "uri", None)]
    if not folders and params.root_uri:
        folders = [str(uri_to_path(params.root_uri))]
    if not folders and params.root_path:
        folders = [params.root_path]
    return folders


def create_server(model_path: str | None = None, sources: str | None = None) -> HrmLanguageServer:
    """Build a server with every feature registered (not started)."""
    server = HrmLanguageServer(model_path, sources)

    @server.feature(types.INITIALIZE)
    def initialize(ls: HrmLanguageServer, params: types.InitializeParams) -> None:
        """Read initializationOptions; start watching the parent process."""
        ls._init_options = params.initialization_options
        ls.apply_settings(params.initialization_options)
        ls.index_host.set_folders(_workspace_folders(params))
        if params.process_id:
            _watch_parent(params.process_id)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: HrmLanguageServer, params: types.InitializedParams) -> None:
        """Pull workspace configuration, then load the model in the background."""
        await ls.fetch_configuration()
        await ls.ensure_model()
        ls.start_index()
        await ls.check_go()

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: HrmLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        """A saved file: the index's workspace tier refreshes in the background."""
        ls.index_host.files_changed([str(uri_to_path(params.text_document.uri))])

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: HrmLanguageServer,
                                 params: types.DidChangeWatchedFilesParams) -> None:
        """Files created, changed or deleted outside the editor: refresh the index."""
        ls.index_host.files_changed([str(uri_to_path(c.uri)) for c in params.changes])

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: HrmLanguageServer,
                                       params: types.DidChangeConfigurationParams) -> None:
        """Re-read settings (pushed or pulled); reload the model if its path/device changed."""
        if ls._client_cap("workspace.configuration"):
            await ls.fetch_configuration()
        else:
            base, _ = parse_settings(ls._init_options, ls.defaults)
            ls.apply_settings(params.settings, base)
        await ls.ensure_model()
        ls.start_index()
        await ls.check_go()

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=[".", "("]))
    async def completion(ls: HrmLanguageServer, params: types.CompletionParams
                         ) -> types.CompletionList:
        """Model suggestions as completion items carrying plan and validation status."""
        doc = ls.go_document(params.text_document.uri)
        if doc is None:
            return types.CompletionList(is_incomplete=False, items=[])
        if ls.model.engine is None:
            return types.CompletionList(is_incomplete=True, items=[])
        ls.debouncer.supersede(doc.uri)
        index, version = doc.index, doc.version
        offset = index.offset(params.position.line, params.position.character, ls.encoding)
        invoked = params.context is not None and \
            params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        multiline = ls.settings.inline_mode == "multi" or (
            invoked and ls.settings.inline_mode == "auto")
        # The plan costs up to max_plan_tokens of decoding: typing-time requests take the
        # fast path (code only); invoked or multi-line ones show the plan.
        comp = await ls.generate(doc, offset, multiline=multiline, plan=invoked or multiline)
        if comp is None or doc.version != version:
            return types.CompletionList(is_incomplete=True, items=[])
        item = builders.lsp_completion_item(comp, index, offset, ls.encoding,
                                            ls.settings.validators if multiline else ("syntax",))
        return types.CompletionList(is_incomplete=True, items=[item] if item else [])

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: HrmLanguageServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList | None:
        """Ghost text: one line on automatic triggers (debounced), validated lines when invoked."""
        uri = params.text_document.uri
        doc = ls.go_document(uri)
        if doc is None or ls.model.engine is None:
            return None
        automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
        version = doc.version
        if not automatic:
            ls.debouncer.supersede(uri)
        elif not await ls.debouncer.settle(uri, ls.settings.debounce_ms / 1000):
            return None  # a newer request for this document answers instead
        if doc.version != version:
            return None
        mode = ls.settings.inline_mode
        multiline = mode == "multi" or (mode == "auto" and not automatic)
        index = doc.index
        offset = index.offset(params.position.line, params.position.character, ls.encoding)
        comp = await ls.generate(doc, offset, multiline=multiline, plan=multiline)
        if comp is None or doc.version != version:
            return None
        item = builders.lsp_inline_item(comp, index, offset, ls.encoding)
        return types.InlineCompletionList(items=[item]) if item else None

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.RefactorRewrite], resolve_provider=True))
    def code_action(ls: HrmLanguageServer, params: types.CodeActionParams
                    ) -> list[types.CodeAction | types.Command] | None:
        """Offer "Refine this function" / "Generate from comment" where they apply."""
        doc = ls.go_document(params.text_document.uri)
        if doc is None:
            return None
        p = params.range.start
        offset = doc.index.offset(p.line, p.character, ls.encoding)
        wanted = []
        if actions.comment_site(doc.text, offset) is not None:
            wanted.append((COMMAND_GENERATE, TITLE_GENERATE))
        elif actions.enclosing_function_span(doc.text, offset) is not None:
            wanted.append((COMMAND_REFINE, TITLE_REFINE))
        only = params.context.only
        # Kinds are str enums: compare their values ("refactor.rewrite"), never str(enum),
        # and match whole dot-separated segments as the LSP spec says.
        ours = types.CodeActionKind.RefactorRewrite.value
        if only and not any(ours == getattr(k, "value", k) or ours.startswith(f"{getattr(k, 'value', k)}.")
                            for k in only):
            return None
        resolve = "edit" in (ls._client_cap("text_document.code_action.resolve_support.properties") or [])
        literals = ls._client_cap("text_document.code_action.code_action_literal_support") is not None
        out: list[Any] = []
        for command, title in wanted:
            arg = {"uri": doc.uri, "line": p.line, "character": p.character, "version": doc.version}
            if not literals:  # LSP 3.8-: clients that only understand bare commands
                out.append(types.Command(title=title, command=command, arguments=[arg]))
            elif resolve:
                out.append(types.CodeAction(title=title, kind=types.CodeActionKind.RefactorRewrite,
                                            data={"command": command, **arg}))
            else:
                out.append(types.CodeAction(title=title, kind=types.CodeActionKind.RefactorRewrite,
                                            command=types.Command(title=title, command=command,
                                                                  arguments=[arg])))
        return out

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: HrmLanguageServer, action: types.CodeAction
                                  ) -> types.CodeAction:
        """Fill in the edit of an action offered with resolve support."""
        data = action.data if isinstance(action.data, dict) else {}
        args = _position_args((data,))
        if args is None or data.get("command") not in (COMMAND_REFINE, COMMAND_GENERATE):
            return action
        edit = await ls.compute_action_edit(data["command"], *args)
        if edit is not None:
            action.edit = edit
        return action

    async def run_command(ls: HrmLanguageServer, command: str, args: tuple[Any, ...]
                          ) -> types.WorkspaceEdit | None:
        parsed = _position_args(args)
        if parsed is None:
            # Logged every time, shown once per command: a client looping on a bad call
            # must not bury the user in identical popups.
            log.warning("%s called with arguments it cannot use: %.200r", command, args)
            ls.say(f"hrm-lsp: {command} expects [{{uri, line, character}}]",
                   types.MessageType.Warning, once_key=f"bad-arguments:{command}")
            return None
        edit = await ls.compute_action_edit(command, *parsed)
        if edit is not None and ls._client_cap("workspace.apply_edit"):
            title = TITLE_REFINE if command == COMMAND_REFINE else TITLE_GENERATE
            try:
                await ls.workspace_apply_edit_async(
                    types.ApplyWorkspaceEditParams(edit=edit, label=title))
            except Exception as e:
                log.warning("workspace/applyEdit failed: %s", e)
        return edit

    @server.command(COMMAND_REFINE)
    async def refine_command(ls: HrmLanguageServer, *args: Any) -> types.WorkspaceEdit | None:
        """workspace/executeCommand form of "Refine this function"."""
        return await run_command(ls, COMMAND_REFINE, args)

    @server.command(COMMAND_GENERATE)
    async def generate_command(ls: HrmLanguageServer, *args: Any) -> types.WorkspaceEdit | None:
        """workspace/executeCommand form of "Generate from comment"."""
        return await run_command(ls, COMMAND_GENERATE, args)

    @server.command(COMMAND_STATUS)
    def status_command(ls: HrmLanguageServer, *args: Any) -> dict[str, Any]:
        """Model state, effective settings and open documents; with a URI argument, that
        document's version and text as the server holds it (for editors' status views and
        for checking text sync)."""
        from hrm_lsp.config import to_dict

        st = ls.model.status
        out: dict[str, Any] = {
            "version": __version__,
            "model": {"state": st.state, "path": st.path, "message": st.message},
            "settings": to_dict(ls.settings),
            "positionEncoding": ls.encoding,
            "documents": sorted(ls.docs.uris()),
            "cache": {"entries": len(ls.cache), "hits": ls.cache.hits, "misses": ls.cache.misses},
            "index": ls.index_host.status(),
        }
        if args and isinstance(args[0], str):
            doc = ls.docs.get(args[0])
            out["document"] = None if doc is None else {"version": doc.version, "text": doc.text}
        return out

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: HrmLanguageServer, *args: Any) -> None:
        """Stop all generation; the process exits on ``exit``."""
        ls.inflight.cancel_all()

    @server.feature(types.EXIT)
    def exit_(ls: HrmLanguageServer, *args: Any) -> None:
        """Exit now: 0 after shutdown, 1 without (LSP), even with work in flight."""
        _hard_exit(0 if ls.protocol._shutdown else 1, ls)

    return server


def _hard_exit(code: int, server: HrmLanguageServer | None = None) -> None:
    """Leave the process without waiting on threads blocked in stdin or the model."""
    if server is not None:
        server.inflight.cancel_all()
    try:
        sys.stdout.flush()
    except Exception:
        pass
    logging.shutdown()
    os._exit(code)


def _watch_parent(pid: int) -> None:
    """Exit when the editor that started us dies (POSIX; elsewhere stdin EOF does it)."""
    if os.name != "posix" or pid <= 0 or pid == os.getpid():
        return

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(PARENT_POLL_S):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                log.warning("parent process %d is gone; exiting", pid)
                _hard_exit(1)
            except PermissionError:
                pass  # alive, owned by someone else

    threading.Thread(target=watch, name="hrm-parent-watch", daemon=True).start()


def serve(model_path: str | None = None, tcp_port: int | None = None,
          sources: str | None = None) -> None:
    """Run the server over stdio (default) or TCP on 127.0.0.1 until the client exits."""
    server = create_server(model_path, sources)
    # pygls logs through its own loggers: keep its warnings, in our log destination.
    pygls_log = logging.getLogger("pygls")
    pygls_log.handlers = list(logging.getLogger("hrm_lsp").handlers)
    pygls_log.setLevel(logging.WARNING)
    pygls_log.propagate = False
    if tcp_port is not None:
        server.start_tcp("127.0.0.1", tcp_port)
        _hard_exit(0)
    server.start_io()
    # stdin closed without `exit`: LSP says exit code 1 unless shutdown was requested.
    _hard_exit(0 if server.protocol._shutdown else 1, server)
