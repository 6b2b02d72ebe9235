"""The robustness parts on their own (issue 15): the frame parser, position clamping, the
incrementally updated line index, linear-time parsing of tool output, the time budget and
cancellation of validation, Go discovery that never blocks the generation thread, and
model paths that are not files. No server process: ``test_server_hostile.py`` drives the
same paths through a real ``hrm-lsp serve``.
"""

from __future__ import annotations

import json
import os
import random
import stat
import threading
import time
from pathlib import Path

import pytest

from hrm_lsp.server import framing
from hrm_lsp.server.framing import Frame, FrameParser, Skipped
from hrm_lsp.server.model_host import model_path_problem
from hrm_lsp.server.positions import LineIndex, _scan
from hrm_lsp.server.server import _clamp_positions
from hrm_lsp.validators import go as gomod
from hrm_lsp.validators import validate
from hrm_lsp.validators.types import MAX_OUTPUT_LINE
from hrm_lsp.validators.vet import classify_unavailable
from hrm_lsp.validators.workspace import PackageContext

GOOD = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x"}).encode()


def frame(body: bytes, n: int | None = None, header: bytes = b"Content-Length") -> bytes:
    return header + b": %d\r\n\r\n" % (len(body) if n is None else n) + body


def parse(data: bytes, chunk: int) -> list[Frame | Skipped]:
    p = FrameParser()
    events = []
    for i in range(0, len(data), chunk):
        events += p.feed(data[i:i + chunk])
    return events + p.close()


CASES = {
    # name: (bytes, the frames expected, in order, and whether something is reported skipped)
    "plain": (frame(GOOD) + frame(GOOD), [GOOD, GOOD], False),
    "content-type": (b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; "
                     b"charset=utf-8\r\n\r\n" % len(GOOD) + GOOD, [GOOD], False),
    "lf-only": (b"Content-Length: %d\n\n" % len(GOOD) + GOOD + frame(GOOD), [GOOD, GOOD], False),
    "lower-case": (frame(GOOD, header=b"content-length") + frame(GOOD), [GOOD, GOOD], False),
    "missing": (b"X-Other: 1\r\n\r\n" + GOOD + frame(GOOD), [GOOD], True),
    "short": (frame(GOOD, 10) + frame(GOOD), [GOOD[:10], GOOD], True),
    "long": (frame(GOOD, len(GOOD) + 30) + frame(GOOD), [GOOD, GOOD], False),
    "non-numeric": (b"Content-Length: abc\r\n\r\n" + GOOD + frame(GOOD), [GOOD], True),
    "garbage": (b"\x00\xffgarbage" + frame(GOOD), [GOOD], True),
    "over-limit": (b"Content-Length: 99999999999999\r\n\r\n" + GOOD + frame(GOOD), [GOOD], True),
    "line-less": (b"x" * 100_000 + frame(GOOD), [GOOD], True),
    "digits-flood": (b"Content-Length: " + b"9" * 20_000 + b"\r\n\r\n" + frame(GOOD), [GOOD], True),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("chunk", [1 << 20, 7, 1])
def test_frame_parser_resynchronises(name: str, chunk: int):
    data, frames, skipped = CASES[name]
    if chunk == 1 and len(data) > 5000:
        chunk = 997  # byte by byte is the same code path; keep the test fast
    events = parse(data, chunk)
    assert [e.body for e in events if isinstance(e, Frame)] == frames
    assert any(isinstance(e, Skipped) for e in events) == skipped


def test_frame_parser_reports_limits_and_notes():
    events = parse(CASES["over-limit"][0], 1 << 20)
    assert "over the 64 MiB limit" in events[0].reason
    long = parse(CASES["long"][0], 1 << 20)
    assert "declared Content-Length" in long[0].note and not long[1].note


def test_frame_parser_coalesces_garbage_into_one_report_per_mib():
    events = parse(b"x" * (3 * 1024 * 1024 + 10) + frame(GOOD), 64 * 1024)
    skipped = [e for e in events if isinstance(e, Skipped)]
    assert 3 <= len(skipped) <= 4 and sum(e.count for e in skipped) == 3 * 1024 * 1024 + 10
    assert events[-1] == Frame(GOOD)


def test_a_legitimate_body_mentioning_content_length_is_one_frame():
    body = json.dumps({"jsonrpc": "2.0", "method": "m",
                       "params": {"text": "Content-Length: 5\r\n\r\nabc\nContent-Length: 9\n"}})
    assert parse(frame(body.encode()), 3) == [Frame(body.encode())]


def test_read_frames_drives_the_parser_until_eof():
    import asyncio

    chunks = [frame(GOOD)[:5], frame(GOOD)[5:] + b"junk\n", b""]
    frames, skipped = [], []

    async def read() -> bytes:
        return chunks.pop(0)

    asyncio.run(framing.read_frames(read, frames.append, skipped.append))
    assert frames == [Frame(GOOD)] and skipped[0].count == 5


def test_positions_are_clamped_into_uinteger_range():
    params = {"position": {"line": -1, "character": 2**40},
              "range": {"start": {"line": 2**31, "character": -5},
                        "end": {"line": 3, "character": "x"}},
              "arguments": [[{"line": -2, "character": 0}]], "line": True}
    _clamp_positions(params)
    assert params["position"] == {"line": 0, "character": 2**31 - 1}
    assert params["range"]["start"] == {"line": 2**31 - 1, "character": 0}
    assert params["range"]["end"] == {"line": 3, "character": "x"}  # not a position: left
    assert params["arguments"][0][0] == {"line": 0, "character": 0}
    deep: list = []
    node = deep
    for _ in range(50_000):  # deeply nested arguments: iterative, no recursion error
        node.append([])
        node = node[0]
    _clamp_positions(deep)


def test_line_index_replace_matches_a_rebuild():
    rng = random.Random(7)
    alphabet = ["a", "\n", "\r", "\r\n", "😀", " ", "\x00"]
    for _ in range(1500):
        idx = LineIndex("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 25))))
        for _ in range(4):
            a = rng.randrange(0, len(idx.text) + 1)
            b = rng.randrange(0, len(idx.text) + 1)
            new = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 5)))
            expected = idx.text[:min(a, b)] + new + idx.text[max(a, b):]
            idx = idx.replace(a, b, new)
            starts, ends = _scan(expected, 0, len(expected))
            assert idx.text == expected and (idx.starts, idx.ends) == (starts, ends + [len(expected)])
    lf = "ab\n\ncd\n"
    assert (LineIndex(lf).starts, LineIndex(lf).ends) == ([0, 3, 4, 7], [2, 3, 6, 7])


# -- tool output: linear time ---------------------------------------------------------------

CTX = PackageContext(file=Path("/m/a.go"), pkg_dir=None, module_root=None,
                     module_path="example.com/m")


@pytest.mark.timeout(60)  # the old regex took hours on one such line
def test_tool_output_with_a_2mb_line_is_parsed_in_linear_time():
    tc = gomod.find_go()
    huge = "x" * 2_000_000
    for line in (f"{huge}@{huge}", f"a@b {huge}", f"./a.go:4:6: undefined: {huge}",
                 f"go.mod {huge} @ {huge} GOPROXY=off"):
        classify_unavailable(line + "\n" + line, CTX, tc)
    text = f"package main\n\nfunc f() {{\n\t_ = {huge}\n}}\n"
    result = validate(text, path=Path("/nonexistent-hrm/a.go"), stages=("syntax", "gofmt", "vet"),
                      timeout=120)
    assert any("undefined" in d.message for d in result.diagnostics), result
    assert all(len(d.message) <= MAX_OUTPUT_LINE for d in result.diagnostics)


def test_offline_module_lines_are_still_recognised():
    tc = gomod.find_go()
    line = "go: example.org/dep@v1.2.3: module lookup disabled by GOPROXY=off"
    reason = classify_unavailable(line, CTX, tc)
    assert reason.startswith("example.org/dep@v1.2.3 is not available offline")
    own = "go: example.com/m/sub@v0.0.0: missing go.sum entry"
    assert "a required module" not in (classify_unavailable(own, CTX, tc) or "")


# -- time budget and cancellation of validation ------------------------------------------------

@pytest.fixture
def hanging_gofmt(tmp_path: Path):
    """A toolchain whose gofmt hangs for 600 s (its pid in ``pids``)."""
    tc = gomod.find_go()
    pids = tmp_path / "pids"
    gofmt = tmp_path / "gofmt"
    gofmt.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 600\n")
    gofmt.chmod(gofmt.stat().st_mode | stat.S_IEXEC)
    yield gomod.GoToolchain(tc.go, gofmt, tc.goroot, tc.version, tc.version_tuple, "explicit"), pids


def _dead(pids: Path) -> bool:
    for pid in pids.read_text().split():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            continue
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state not in ("Z", "X"):
            return False
    return True


@pytest.mark.timeout(60)
def test_the_deadline_bounds_a_hanging_go_process(hanging_gofmt):
    tc, pids = hanging_gofmt
    result = validate("package a\n", stages=("syntax", "gofmt", "vet"), timeout=600, go=tc,
                      deadline=time.monotonic() + 0.5, use_cache=False)
    assert "stopped at the request's time budget" in result.unavailable
    assert result.skipped["vet"] == "skipped: gofmt timed out"
    assert _dead(pids)
    spent = validate("package a\n", stages=("syntax", "gofmt", "vet"), go=tc,
                     deadline=time.monotonic() - 1)
    assert spent.skipped == {"gofmt": "skipped: time budget spent",
                             "vet": "skipped: time budget spent"}


@pytest.mark.timeout(60)
def test_cancellation_kills_a_running_go_process(hanging_gofmt):
    tc, pids = hanging_gofmt
    flag = threading.Event()
    threading.Thread(target=lambda: (_wait_file(pids), flag.set()), daemon=True).start()
    result = validate("package a\n", stages=("syntax", "gofmt"), timeout=600, go=tc,
                      cancelled=flag.is_set, use_cache=False)
    assert result.unavailable == "gofmt: cancelled" and _dead(pids)


def _wait_file(p: Path) -> None:
    while not p.exists():
        time.sleep(0.01)


def test_engine_passes_its_time_budget_to_validation(tmp_path: Path):
    from server_model import build_model

    from hrm_lsp.inference import CompletionRequest, Engine
    from hrm_lsp.tokenizer.byte import ByteTokenizer

    tok = ByteTokenizer()
    engine = Engine(build_model(tok), tok)
    comp = engine.complete(CompletionRequest(
        text="package main\n// v3\n", offset=17, path=str(tmp_path / "a.go"), multiline=True,
        max_tokens=32, time_budget_ms=1, refine=True, stages=("syntax", "gofmt", "vet")))
    assert comp.stop_reason == "time"
    assert comp.validation.skipped == {"gofmt": "skipped: time budget spent",
                                       "vet": "skipped: time budget spent"}


# -- Go discovery off the generation thread, model paths ----------------------------------------

def test_discovery_never_waits_in_a_marked_thread(tmp_path: Path, monkeypatch):
    go = tmp_path / "go"
    release = tmp_path / "release"
    real = gomod.find_go().go
    go.write_text(f"#!/bin/sh\nwhile [ ! -e {release} ]; do sleep 0.02; done\nexec {real} \"$@\"\n")
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(gomod.ENV_VAR, str(go))
    out: list = []

    def generation_thread() -> None:
        gomod.never_wait_for_discovery()
        for _ in range(2):
            try:
                out.append(gomod.find_go())
            except gomod.GoDiscoveryPending as e:
                out.append(e)

    t = threading.Thread(target=generation_thread)
    t.start()
    t.join(30)
    assert not t.is_alive() and all(isinstance(e, gomod.GoDiscoveryPending) for e in out)
    release.touch()  # `go env` answers; the background discovery finishes and is cached
    deadline = time.monotonic() + 60
    while True:
        try:
            gomod.never_wait_for_discovery()
            tc = gomod.find_go()
            break
        except gomod.GoDiscoveryPending:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        finally:
            gomod._local.no_wait = False
    assert tc.go == go and tc.source == gomod.ENV_VAR


def test_model_paths_that_are_not_regular_files(tmp_path: Path):
    fifo = tmp_path / "m.fifo"
    os.mkfifo(fifo)
    assert "named pipe" in model_path_problem(fifo)
    assert "a device" in model_path_problem(Path("/dev/null"))
    assert "does not exist" in model_path_problem(tmp_path / "none.gguf")
    assert model_path_problem(tmp_path) is None  # a run directory: the loader judges it
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    assert model_path_problem(f) is None
