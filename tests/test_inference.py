"""Inference: plans, stop rules, the FIM prompt, sessions (warm == cold), budgets and
cancellation, the refinement loop with the real validators, and `hrm-lsp complete`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from _tiny_hrgc import trained_tiny
from click.testing import CliRunner

from hrm_lsp.cli import main
from hrm_lsp.export.gguf import model_to_gguf
from hrm_lsp.inference import CancelToken, CompletionRequest, Engine, Plan
from hrm_lsp.inference.plan import parse_plan, plan_from_comment, plan_parts
from hrm_lsp.inference.prompt import fim_prompt
from hrm_lsp.inference.refine import refine_loop
from hrm_lsp.inference.stops import StopRule, close_blocks, cursor_in_block, repeat_cut
from hrm_lsp.validators import syntax_errors, validate

SRC = '''package demo

import "errors"

// Parse reads a config value. It rejects empty input.
func Parse(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// Double returns twice n.
func Double(n int) int {
	return n * 2
}
'''


@pytest.fixture(scope="module")
def tiny(stdlib_src):
    return trained_tiny(stdlib_src)


@pytest.fixture(scope="module")
def engine(tiny) -> Engine:
    model, tok = tiny
    return Engine(model, tok, threads=1)


def req(text: str, offset: int, **kw) -> CompletionRequest:
    kw.setdefault("time_budget_ms", 60_000)
    kw.setdefault("refine", False)
    kw.setdefault("stages", ("syntax",))
    return CompletionRequest(text=text, offset=offset, **kw)


# -- plans ------------------------------------------------------------------------------

def test_plan_parsing_and_one_line():
    p = parse_plan("<PLAN><INTENT:ADD><TARGET:func><STEP> parse config<STEP> validate</PLAN>")
    assert p == Plan("ADD", "func", ("parse config", "validate"))
    assert p.one_line() == "ADD func · parse config, validate"
    # Junk from a weak model is dropped, not an error.
    assert parse_plan("<INTENT:NOPE><STEP> <EOT> x").steps == ("x",)
    assert Plan().one_line() == "" and Plan().empty


def test_plan_from_doc_comment_round_trips_through_tokens(tiny):
    _, tok = tiny
    plan = plan_from_comment("// Parse reads a config value. It rejects empty input.", "FIX")
    assert plan == Plan("FIX", "func", ("Parse reads a config value", "It rejects empty input"))
    ids = tok.encode_parts(plan_parts(plan))
    assert parse_plan(tok.decode(ids)) == plan


# -- stop rules -------------------------------------------------------------------------

def _stop(gen: str, prefix: str, suffix: str, multiline: bool) -> str | None:
    rule = StopRule(multiline, prefix, suffix,
                    in_block=cursor_in_block(prefix + suffix, len(prefix)),
                    syntax_errors=syntax_errors)
    for i in range(1, len(gen) + 1):  # as decoding does: one piece at a time
        cut = rule.check(gen[:i])
        if cut is not None:
            return gen[:cut]
    return None


def test_single_line_stops_at_end_of_line():
    assert _stop("x + 1\n\treturn y", "\tn := ", "\n", False) == "x + 1"
    # On an empty line, a leading newline is not the whole answer.
    assert _stop("\n\treturn y\n", "func f() {\n", "}\n", False) == "\n\treturn y"


def test_multiline_stops_at_end_of_enclosing_block():
    prefix, suffix = "package p\n\nfunc f() int {\n\t", "\n}\n"
    gen = 'x := "}" // }\n\treturn x\n}\n\nfunc g() {}\n'
    assert _stop(gen, prefix, suffix, True) == 'x := "}" // }\n\treturn x'
    # The block is not closed after the cursor: the brace is part of the completion.
    assert _stop("return 1\n}\n\nfunc h", "package p\n\nfunc f() int {\n\t", "", True) == "return 1\n}"
    # At top level: one declaration.
    top = _stop("func g() {\n\treturn\n}\n\nfunc h() {}\n", "package p\n\n", "", True)
    assert top == "func g() {\n\treturn\n}"


def test_a_completion_that_repeats_itself_stops_before_the_repeat():
    prefix, suffix = "package p\n\nfunc f(c *C) {\n", "}\n"
    # One line again, then a two-line run again: cut before the second copy.
    assert _stop("\tc.Lock()\n\tc.Unlock()\n\tc.Unlock()\n\tx()", prefix, suffix, True) == \
        "\tc.Lock()\n\tc.Unlock()\n"
    two = "\ta()\n\tif x {\n\tb()\n\tif x {\n\tb()\n"
    assert repeat_cut(two) == len("\ta()\n\tif x {\n\tb()\n")
    # A line that loops on one piece of code is cut off whole.
    assert repeat_cut("\tx := 1\n\tif l.next.next.next.next") == len("\tx := 1\n")
    # Braces, blanks and ordinary code that happens to look alike are not loops.
    assert repeat_cut("\t}\n\t}\n\n\n") is None
    assert repeat_cut("\tn := 0000\n\tm := []int{1, 2}\n\ty := a.b.c\n") is None
    rule = StopRule(True, prefix, suffix, in_block=True, syntax_errors=syntax_errors)
    assert rule.check("\tc.c.c.c.c.c.") == 0 and rule.reason == "repeat"


def test_settle_makes_a_cut_completion_whole_go():
    prefix, suffix = "package p\n\nfunc f(c *C) int {\n", "}\n"
    rule = StopRule(True, prefix, suffix, in_block=True, syntax_errors=syntax_errors)
    # Open blocks are closed at the indentation of the line that opened them.
    assert close_blocks("\tif c.ok {\n\t\tfor {\n\t\t\tc.n++") == \
        "\tif c.ok {\n\t\tfor {\n\t\t\tc.n++\n\t\t}\n\t}\n"
    assert close_blocks("\tc.f(1,\n") is None and close_blocks("\t}\n") is None
    assert rule.settle("\tif c.ok {\n\t\treturn 1") == "\tif c.ok {\n\t\treturn 1\n\t}\n"
    # A half-written last line goes; whole text is kept as it is.
    assert rule.settle("\tc.n++\n\treturn c.f(1,") == "\tc.n++\n"
    assert rule.settle("\tc.n++\n\treturn c.n\n") == "\tc.n++\n\treturn c.n\n"
    # Nothing fits: the text comes back for the refinement loop and the gate to judge.
    assert rule.settle("\treturn c.f(1,") == "\treturn c.f(1,"
    for text in ("\tif c.ok {\n\t\treturn 1", "\tc.n++\n\treturn c.f(1,"):
        assert not syntax_errors(prefix + rule.settle(text) + suffix)


def test_code_asked_for_in_an_empty_block_starts_with_code(engine):
    doc = "package demo\n\nfunc f(n int) int {\n\n}\n"
    at = doc.index("{\n\n}") + 2
    comp = engine.complete(req(doc, at, multiline=True, max_tokens=24, refine=False,
                               stages=("syntax",)))
    first = comp.text.lstrip(" \t\r\n")
    assert first and first[0] not in "})]/"
    bans = engine._code_first_bans()
    assert engine.id_eot in bans.tolist()
    assert all(engine.tok.decode([int(i)]).lstrip(" \t\r\n")[:1] in "})]/"
               for i in bans if int(i) not in engine.special_ids)


def test_repeat_penalty_pushes_down_only_the_tokens_already_written():
    from hrm_lsp.inference.sampling import repeat_penalized

    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = repeat_penalized(logits, [0, 1, 0], 1.25)
    assert torch.allclose(out, torch.tensor([1.6, -1.25, 0.5, 3.0])) and logits[0] == 2.0
    assert repeat_penalized(logits, [], 1.25) is logits
    assert repeat_penalized(logits, [0], 1.0) is logits
    # Greedy after "a a": the repeated token gives way to the runner-up.
    assert int(torch.argmax(repeat_penalized(torch.tensor([3.0, 2.9]), [0], 1.2))) == 1


def test_a_body_that_restates_a_neighbouring_line_is_decoded_again(engine, monkeypatch):
    import hrm_lsp.inference.engine as engine_mod

    doc = "package demo\n\nfunc f(n int) int {\n\n}\n"
    at = doc.index("{\n\n}") + 2

    def answer(retries: int):
        monkeypatch.setattr(engine_mod, "MULTILINE_RETRIES", retries)
        return engine.complete(req(doc, at, multiline=True, max_tokens=12))

    plain = answer(0)
    word = engine._last_word
    assert plain.text.strip() and word is not None
    # The real gate cannot be made to see this tiny model restate a line, so it is told the
    # first answer did; the second try must then not start with that answer's first word.
    real, calls = engine_mod.gate.withhold_reason, []

    def says_repeat(*args):
        calls.append(args[0])
        return "repeats the line above" if len(calls) == 1 else real(*args)

    monkeypatch.setattr(engine_mod.gate, "withhold_reason", says_repeat)
    again = answer(2)
    assert calls[0] == plain.text and len(calls) >= 2
    first_piece = engine.tok.encode(again.text.lstrip(" \t\n"))[:1]
    assert again.text != plain.text and first_piece != [word]


def test_a_withheld_body_from_both_falls_back_to_the_model_alone(tmp_path, monkeypatch):
    import hrm_lsp.inference.engine as engine_mod
    from hrm_lsp.index import RepoIndex
    from hrm_lsp.paths import default_model_path

    if not default_model_path().is_file():
        pytest.skip("no shipped model file in this checkout")
    engine = Engine.load(default_model_path())  # the tiny model's bodies are blanks: withheld
    doc = "package demo\n\nfunc f(n int) int {\n\n}\n"
    at = doc.index("{\n\n}") + 2
    (tmp_path / "a.go").write_text(doc)
    index = RepoIndex(engine.tok, background=False, stdlib=False, modcache=False)
    index.start([tmp_path])
    r = req(doc, at, multiline=True, max_tokens=24, sources="both")
    # The real gate, except that both's answer may not be shown: the first two judgements of
    # a request are both's (the restated-line check after decoding, then the fallback's own
    # check, or with the fallback off the final one). The model alone then answers where the
    # real gate lets it; with the fallback off the request ends withheld.
    real, calls = engine_mod.gate.withhold_reason, []

    def first_withheld(*args):
        calls.append(args[0])
        return "does not parse" if len(calls) <= 2 else real(*args)

    try:
        monkeypatch.setattr(engine_mod.gate, "withhold_reason", real)
        plain = engine.complete(r, index=index)
        monkeypatch.setattr(engine_mod, "BODY_MODEL_FALLBACK", 0)
        own = engine.complete(r, index=index)  # both's own answer, judged by the real gate
        monkeypatch.setattr(engine_mod, "BODY_MODEL_FALLBACK", 1)
        monkeypatch.setattr(engine_mod.gate, "withhold_reason", first_withheld)
        alone = engine.complete(r, index=index)
        monkeypatch.setattr(engine_mod, "BODY_MODEL_FALLBACK", 0)
        calls.clear()
        kept = engine.complete(r, index=index)
    finally:
        index.close()
    # Unforced, the fallback runs exactly when the real gate withholds both's own answer.
    assert own.sources == "both" and plain.text.strip()
    assert plain.sources == ("both" if own.withheld is None else "model")
    assert alone.sources == "model" and not alone.withheld and alone.text.strip()
    assert any("model alone" in n for n in alone.notes)
    assert kept.sources == "both" and kept.withheld == "does not parse"


def test_the_best_candidate_the_gate_would_show_wins(engine, monkeypatch):
    import hrm_lsp.inference.engine as engine_mod

    doc = "package p\n\nfunc f(n int) int {\n\tx := n + 1\n\t\n\treturn x\n}\n"
    r = req(doc, doc.index("\t\n") + 1)
    scored = [(2.0, "y := (n"), (1.5, "x := n + 1"), (1.0, "x *= 2")]
    assert engine._pick(r, scored, lambda c: c) == (1.0, "x *= 2")
    assert engine._pick(r, scored[:2], lambda c: c) == (2.0, "y := (n")  # none shows: the best
    assert engine._pick(r, [], lambda c: c) is None
    # Far below the best, a shown candidate is junk more often than not: the best (withheld).
    assert engine._pick(r, [(2.0, "y := (n"), (-9.0, "x *= 2")], lambda c: c) == (2.0, "y := (n")
    monkeypatch.setattr(engine_mod, "PICK_SHOWN", False)
    assert engine._pick(r, scored, lambda c: c) == (2.0, "y := (n")


# -- prompt -----------------------------------------------------------------------------

def test_fim_prompt_is_suffix_first_and_stable_while_typing(tiny):
    _, tok = tiny
    off = SRC.index("n := 0") + len("n := ")
    a = fim_prompt(tok, SRC[:off], SRC[off:], budget=200)
    assert a.ids[0] == tok.id_of("<FIM_SUFFIX>") and a.ids[-1] == tok.id_of("<FIM_MIDDLE>")
    assert tok.decode(a.ids[1:40]) == SRC[off:off + 39]  # the suffix comes first
    assert a.truncated
    typed = SRC[:off] + "1" + SRC[off:]
    b = fim_prompt(tok, typed[:off + 1], typed[off + 1:], budget=200)
    assert b.ids[:-1][: len(a.ids) - 1] == a.ids[:-1]  # one token appended, nothing else moved
    assert len(b.ids) == len(a.ids) + 1


def test_long_documents_are_cut_to_the_window_and_stay_stable(tiny):
    _, tok = tiny
    big = "package p\n\n" + "".join(f"// 世界 {i} 🎉\nfunc f{i}() {{}}\n" for i in range(400))
    off = len(big) // 2
    prompts = []
    for i in range(12):  # type 12 characters at the cursor
        text = big[:off] + "x" * i + big[off:]
        p = fim_prompt(tok, text[:off + i], text[off + i:], budget=300)
        assert len(p.ids) <= 300 and p.truncated
        assert p.prefix.endswith("x" * i) and p.suffix and big[off:].startswith(p.suffix)
        prompts.append(p.ids)
    # The window start moved at most once; otherwise each keystroke appended one token.
    moved = sum(1 for a, b in zip(prompts[:-1], prompts[1:], strict=True) if b[: len(a) - 1] != a[:-1])
    assert moved <= 1


# -- sessions, FIM, budgets -------------------------------------------------------------

def test_warm_equals_cold_while_typing(tiny, engine):
    model, tok = tiny
    off = SRC.index("\treturn n * 2") + 1
    text = SRC
    for i, ch in enumerate("ret"):
        text = text[:off + i] + ch + text[off + i:]
        warm = engine.complete(req(text, off + i + 1, max_tokens=12), session_key="typing")
        cold = Engine(model, tok, threads=1).complete(req(text, off + i + 1, max_tokens=12))
        assert warm.text == cold.text and warm.plan == cold.plan
        assert cold.timings.reused_tokens == 0
        if i:
            # Typing one character reuses everything but the last token or two.
            assert warm.timings.prefill_tokens <= 3 < warm.timings.reused_tokens


def test_line_candidates_keep_warm_equal_to_cold(tiny, monkeypatch):
    """Trying several first tokens rewinds and re-extends the session: the next keystroke's
    warm answer must still be the cold one."""
    from hrm_lsp.inference import engine as engine_mod

    model, tok = tiny
    monkeypatch.setattr(engine_mod, "LINE_CANDIDATES", 3)
    warm_engine = Engine(model, tok, threads=1, backend="torch")
    off = SRC.index("\treturn n * 2") + 1
    text = SRC
    for i, ch in enumerate("re"):
        text = text[:off + i] + ch + text[off + i:]
        r = req(text, off + i + 1, max_tokens=12, plan=False)
        warm = warm_engine.complete(r, session_key="typing")
        cold = Engine(model, tok, threads=1, backend="torch").complete(r)
        assert warm.text == cold.text


def test_pruned_line_candidates_give_the_same_answers(tmp_path, monkeypatch):
    """Candidates that cannot outscore a shown one are skipped; the answer is the same."""
    from hrm_lsp.index import RepoIndex
    from hrm_lsp.inference import engine as engine_mod
    from hrm_lsp.paths import default_model_path

    if not default_model_path().is_file():
        pytest.skip("no shipped model file in this checkout")
    engine = Engine.load(default_model_path())  # the tiny model is never sure enough to prune
    monkeypatch.setattr(engine_mod, "LINE_CANDIDATES", 3)
    # Lines the repository index is sure of (they alternate, so none repeats the line above),
    # and the example's own line starts, where it is not.
    pairs = "".join(f"\ta.Add({k})\n\tb.Sub({k})\n" for k in range(3))
    doc = f"package p\n\nfunc f(a, b *T) {{\n{pairs}\ta.Add(3)\n\t\n}}\n"
    (tmp_path / "p.go").write_text(doc)
    index = RepoIndex(engine.tok, background=False, stdlib=False, modcache=False)
    index.start([tmp_path])
    spots = [(doc, doc.rindex("\t\n") + 1, index)]
    spots += [(SRC, m.end() + 1, None) for m in re.finditer("\n\t(?=[a-z])", SRC)]
    work = {}
    try:
        for prune in (False, True):
            monkeypatch.setattr(engine_mod, "PRUNE_CANDIDATES", prune)
            comps = [engine.complete(req(text, at, max_tokens=12, plan=False, sources="both"),
                                     index=idx) for text, at, idx in spots]
            work[prune] = ([c.text for c in comps], sum(c.timings.decode_tokens for c in comps))
    finally:
        index.close()
    assert work[True][0][0].startswith(("a.", "b."))  # a line of the pattern (which one is the model's call)
    assert work[True][0] == work[False][0]
    assert work[True][1] < work[False][1], work  # and some of the work was skipped


def test_the_trained_context_bounds_each_request(tiny, tmp_path):
    """A GGUF file's ``train_context`` bounds what the engine puts in one request; files
    without it use the model's window; a context too small to hold a request is refused."""
    from hrm_lsp.export.gguf import load_model

    model, tok = tiny
    model_to_gguf(model, tok, tmp_path / "ctx.gguf", train_context=32)
    model_to_gguf(model, tok, tmp_path / "plain.gguf")
    m, t, meta = load_model(tmp_path / "ctx.gguf")
    assert meta.train_context == 32 and Engine(m, t, meta, backend="torch").capacity == 32
    m, t, meta = load_model(tmp_path / "plain.gguf")
    assert meta.train_context == 0
    assert Engine(m, t, meta, backend="torch").capacity == model.cfg.max_seq_len
    with pytest.raises(ValueError, match="at least 16 tokens"):
        Engine(model, tok, backend="torch", context=8)
    # A request still completes inside the short context, its prompt cut to fit.
    short = Engine(model, tok, meta, backend="torch", context=32)
    comp = short.complete(req(SRC, SRC.index("\treturn n * 2") + 1, max_tokens=8, plan=False),
                          session_key="short")
    assert "context truncated to the model's window" in comp.notes
    session = short.sessions.get("short")
    assert session.capacity == 32 and 0 < len(session.ids) <= 32


def test_fim_uses_the_suffix(tiny):
    model, tok = tiny
    off = SRC.index("func Double")
    logits = []
    for suffix in ("func Double(n int) int {\n", "\tfor i := range 10 {\n"):
        text = SRC[:off] + suffix
        ids = fim_prompt(tok, text[:off], text[off:], budget=400).ids
        assert tok.encode(suffix)[:5] == ids[1:6]
        from hrm_lsp.inference.session import Session

        lg, _, _ = Session(model, tok, 512).sync(ids + [tok.id_of("<PLAN>")])
        logits.append(lg)
    assert not torch.allclose(logits[0], logits[1])


def test_single_line_completion_and_plan(engine):
    off = SRC.index("\tn := 0") + len("\tn := ")
    comp = engine.complete(req(SRC, off, max_tokens=40))
    assert "\n" not in comp.text
    assert comp.stop_reason in ("line", "eot", "max_tokens")
    # A layout-2 model writes no plan: training gave a plan only before a whole body.
    assert comp.plan == Plan() and engine.cfg.fim_layout >= 2
    assert comp.validation is not None and comp.validation.stage == "syntax"


def test_layout2_body_gets_its_doc_comment_as_plan_and_nothing_else_does(engine):
    src = ("package p\n\n// Sum adds the numbers. It returns zero for none.\n"
           "func Sum(xs []int) int {\n\t\n}\n\nfunc Other() {\n\t\n}\n")
    body = src.index("int {\n\t") + len("int {\n\t")
    comp = engine.complete(req(src, body, max_tokens=8, multiline=True))
    assert comp.plan == plan_from_comment("// Sum adds the numbers. It returns zero for none.")
    assert comp.plan.steps  # the comment's sentences
    other = src.index("Other() {\n\t") + len("Other() {\n\t")  # no doc comment: no plan
    assert engine.complete(req(src, other, max_tokens=8, multiline=True)).plan == Plan()
    # A body that already has code is not a whole-body middle: no plan either.
    filled = src.replace("int {\n\t\n}", "int {\n\tn := 0\n\t\n\treturn n\n}")
    at = filled.index("n := 0\n\t") + len("n := 0\n\t")
    assert engine.complete(req(filled, at, max_tokens=8, multiline=True)).plan == Plan()



def test_a_doc_comment_longer_than_the_window_allows_is_not_given_as_plan(engine):
    # The given plan is not cut by max_plan_tokens; a long one used to push the prompt past
    # the window ("prompt of 257 tokens exceeds the context (256)" on the dev split).
    words = " ".join(f"step{i} handles case number {i} of the input" for i in range(80))
    src = f"package p\n\n// Sum adds. {words}\nfunc Sum(xs []int) int {{\n\t\n}}\n" + SRC * 8
    body = src.index("int {\n\t") + len("int {\n\t")
    assert len(engine.plan_ids(plan_from_comment(words))) > engine.capacity // 2
    comp = engine.complete(req(src, body, max_tokens=256, multiline=True))
    assert "the doc comment is too long for the model's window: no plan given" in comp.notes
    assert comp.timings.prefill_tokens + comp.timings.reused_tokens <= engine.capacity - 8

def test_a_large_multiline_reserve_leaves_the_prompt_half_the_window(engine):
    # The tiny model's window is 512: plan + 256 code tokens + a refinement round (666) would
    # leave no prompt; the prompt keeps at least half the window and decoding stops cleanly.
    long_doc = SRC * 12
    off = long_doc.rindex("\tn := 0") + 1
    comp = engine.complete(req(long_doc, off, max_tokens=256, multiline=True, refine=True,
                               max_refinement_iterations=5), session_key="big")
    assert "context truncated to the model's window" in comp.notes
    # (the prompt is cut on line boundaries, so a little under half; it was 16 tokens)
    assert comp.timings.prefill_tokens + comp.timings.reused_tokens >= engine.capacity // 2 - 32
    assert comp.stop_reason in ("eot", "block", "max_tokens", "context")


def test_token_budget_time_budget_and_cancel(engine):
    off = SRC.index("\tn := 0") + 1
    comp = engine.complete(req(SRC, off, max_tokens=2, multiline=True), session_key="b")
    assert comp.timings.decode_tokens <= 2 + 3 and comp.stop_reason in ("max_tokens", "eot", "block")
    comp = engine.complete(req(SRC, off, time_budget_ms=0.001), session_key="b")
    assert comp.stop_reason == "time" and comp.text == ""

    class CancelAfter(CancelToken):
        def __init__(self, n: int):
            super().__init__()
            self.n = n

        @property
        def cancelled(self) -> bool:
            self.n -= 1
            return self.n < 0

    # With a given plan: the fixture's 60 steps often end a no-plan middle at once (<EOT>).
    comp = engine.complete_with_plan(req(SRC, off, multiline=True, max_tokens=200),
                                     Plan("ADD", "func", ()), cancel=CancelAfter(6))
    assert comp.cancelled and comp.timings.decode_tokens <= 6


# -- refinement loop ----------------------------------------------------------------------

DOC = "package demo\n\nfunc f() int {\n\t\n}\n"
AT = DOC.index("\t\n}") + 1


def _loop(candidates, stages=("syntax", "gofmt"), max_iterations=5, threshold=0.9):
    queue = list(candidates)
    fed: list[str] = []

    def regenerate(diag: str):
        fed.append(diag)
        return queue.pop(0) if queue else None

    out = refine_loop(queue.pop(0), regenerate,
                      lambda code: validate(DOC[:AT] + code + DOC[AT:], stages=stages),
                      max_iterations=max_iterations, threshold=threshold, deadline=float("inf"))
    return out, fed


def test_loop_stops_early_on_pass_and_feeds_diagnostics():
    out, fed = _loop([("return (1", None, "block"), ("return 1", None, "block"),
                      ("return 2", None, "block")])
    assert out.stop == "pass" and out.iterations == 2 and out.best.text == "return 1"
    assert len(fed) == 1 and fed[0].startswith("4:")  # line:col: message of the broken one


def test_loop_stops_at_the_cap():
    out, fed = _loop([(f"return ({i}", None, "block") for i in range(9)], max_iterations=3)
    assert out.stop == "cap" and out.iterations == 3 and len(fed) == 2
    assert not out.best.validation.ok


def test_loop_stops_when_the_refinement_head_is_confident():
    # vet fails (unused variable is a compile error), syntax is fine, the head says 0.95.
    out, _ = _loop([("x := 1\n\treturn 2", 0.95, "block"), ("return 1", 0.2, "block")],
                   stages=("syntax", "gofmt", "vet"))
    assert out.stop in ("confident", "pass") and out.iterations == 1


def test_engine_loop_stops_early_on_pass(engine):
    # At the end of a comment line any text the model writes is valid Go: the first
    # candidate passes and the loop stops there.
    doc = "package demo\n\n// Sum adds\nfunc Sum(a, b int) int { return a + b }\n"
    off = doc.index("adds") + len("adds")
    comp = engine.complete(req(doc, off, refine=True, stages=("syntax", "gofmt"),
                               max_refinement_iterations=3))
    assert comp.validation.ok and comp.iterations == 1
    assert "refinement stopped: pass" in comp.notes
    assert comp.history[0]["ok"] is True


def test_formatted_candidate_is_returned():
    doc = "package demo\n\nfunc f() int {\n\t\n}\n"
    out, _ = _loop([("x:=1\n\treturn x", None, "block")])
    from hrm_lsp.inference.refine import formatted_middle

    assert out.stop == "pass"
    assert formatted_middle(doc, AT, out.best.text, out.best.validation) == "x := 1\n\treturn x"


def test_engine_refinement_respects_the_cap(engine):
    doc = "package demo\n\nfunc Max(a, b int) int {\n\t\n}\n"
    off = doc.index("\t\n}") + 1
    comp = engine.complete(req(doc, off, multiline=True, refine=True, max_tokens=24,
                               max_refinement_iterations=2, stages=("syntax", "gofmt")))
    assert comp.validation is not None and len(comp.history) == comp.iterations
    if comp.history[0]["ok"]:
        assert comp.iterations == 1 and "refinement stopped: pass" in comp.notes
    else:  # the first candidate failed: a second round ran with its diagnostics, then the cap
        assert comp.iterations == 2
        assert ("refinement stopped: cap" in comp.notes) or comp.validation.ok


def test_refine_function_regenerates_the_body(engine):
    off = SRC.index("return n * 2")
    edit = engine.refine_function(SRC, off, None, cancel=None, progress=None,
                                  stages=("syntax",), max_tokens=24, max_refinement_iterations=2)
    if edit is not None:  # None means no candidate passed the syntax gate: nothing to apply
        new = edit.apply(SRC)
        assert new.startswith(SRC[: SRC.index("func Double(n int) int {") + 24])
        assert new.endswith("}\n") and not syntax_errors(new)
        assert edit.plan.steps == ("Double returns twice n",)


# -- the command --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tiny, tmp_path_factory) -> Path:
    model, tok = tiny
    out = tmp_path_factory.mktemp("model") / "tiny.gguf"
    model_to_gguf(model, tok, out)
    return out


def _module(tmp_path: Path) -> Path:
    (tmp_path / "go.mod").write_text("module example.com/demo\n\ngo 1.21\n")
    f = tmp_path / "demo.go"
    f.write_text(SRC)
    return f


def test_complete_command_end_to_end_json(model_file, tmp_path):
    f = _module(tmp_path)
    line = SRC[: SRC.index("\treturn n * 2")].count("\n") + 1
    res = CliRunner().invoke(main, ["complete", f"{f}:{line}:2", "--model", str(model_file),
                                    "--json", "--max-tokens", "16"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # the index reports its progress on stderr
    assert set(out) >= {"plan", "text", "validation", "iterations", "elapsed_ms"}
    assert set(out["validation"]) >= {"ok", "stage", "diagnostics"}
    # A layout-2 model gets no plan for a line (training had none there).
    assert out["plan"]["text"] == "" and "\n" not in out["text"]
    assert out["validation"]["stage"] in ("syntax", "gofmt", "vet")
    assert 1 <= out["iterations"] <= 5


def test_complete_without_go_runs_the_syntax_gate_and_says_so(model_file, tmp_path):
    f = _module(tmp_path)
    # At the end of a comment line: whatever the tiny model writes there parses, so the
    # syntax gate passes and gofmt/vet are what is skipped.
    comment = "// Parse reads a config value. It rejects empty input."
    line, col = SRC[: SRC.index(comment)].count("\n") + 1, len(comment) + 1
    res = CliRunner(env={"HRM_LSP_GO": "off"}).invoke(
        main, ["complete", f"{f}:{line}:{col}", "--model", str(model_file), "--max-tokens", "8",
               "--no-refine"])
    assert res.exit_code == 0, res.output
    assert "gofmt skipped" in res.output and "vet skipped" in res.output
    assert "Go is disabled" in res.output


def test_complete_command_errors(model_file, tmp_path):
    f = _module(tmp_path)
    r = CliRunner()
    res = r.invoke(main, ["complete", f"{f}:999:1", "--model", str(model_file)])
    assert res.exit_code == 1 and "past the end of the file" in res.output
    res = r.invoke(main, ["complete", f"{f}", "--model", str(model_file)])
    assert res.exit_code == 1 and "FILE:LINE:COL" in res.output
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(model_file.read_bytes()[:1000])
    res = r.invoke(main, ["complete", f"{f}:1:1", "--model", str(bad)])
    assert res.exit_code == 1 and "truncated" in res.output and "Traceback" not in res.output
    res = r.invoke(main, ["complete", f"{f}:1:1", "--model", str(tmp_path / "none.gguf")])
    assert res.exit_code == 1 and "no such model file" in res.output


def test_complete_without_a_model_says_what_to_do(tmp_path, monkeypatch):
    import hrm_lsp.paths

    # As on an install whose shipped model file is missing.
    monkeypatch.setattr(hrm_lsp.paths, "default_model_path", lambda: tmp_path / "absent.gguf")
    f = _module(tmp_path)
    res = CliRunner().invoke(main, ["complete", f"{f}:1:1"])
    assert res.exit_code == 1
    assert "is not installed" in res.output and "--model" in res.output


@pytest.mark.mlx
def test_mlx_backend_gives_the_torch_completions(tiny):
    pytest.importorskip("mlx.core")
    model, tok = tiny
    engine = Engine(model, tok, threads=1, backend="torch")
    mlx_engine = Engine(model, tok, threads=1, backend="mlx")
    texts = []
    for needle in ('import "errors"', "\tn := 0"):
        off = SRC.index(needle) + len(needle) // 2
        # With a given plan: the fixture's 60 steps leave a no-plan middle often empty (an
        # <EOT> right after <FIM_MIDDLE>), and parity needs text to compare.
        r, plan = req(SRC, off, max_tokens=16), Plan("ADD", "func", ())
        a = engine.complete_with_plan(r, plan)
        b = mlx_engine.complete_with_plan(r, plan, session_key="mlx")
        assert a.text == b.text
        texts.append(a.text)
    assert any(texts)  # at least one non-empty completion was compared


def test_model_alone_heals_a_cut_word_but_not_after_a_blank(engine):
    off = SRC.index("\tn := 0") + len("\tn")  # `n|`: the cursor may cut a word
    cut = engine.complete(req(SRC, off, max_tokens=6))
    assert "healed 'n'" in cut.notes
    blank = engine.complete(req(SRC, off + 1, max_tokens=6))  # `n |`: after a blank
    assert not any(n.startswith("healed") for n in blank.notes)
