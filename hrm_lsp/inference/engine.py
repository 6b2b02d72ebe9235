"""The engine: a loaded model + tokenizer serving completions (docs/inference.md).

One completion, in order:

1. prompt: fill-in-the-middle around the cursor, suffix first (``prompt.py``);
2. session sync: reuse the document's cached prefix, run only the new tokens (``session.py``);
3. plan: ``<PLAN>`` … ``</PLAN>`` (greedy unless sampling is asked for), parsed to ``Plan``;
4. code: decode until a stop rule fires (``stops.py``: line / enclosing block) or end of
   text, the token budget, the time budget or cancellation;
5. validation and the refinement loop (``refine.py``) when asked.

The engine serves one generation at a time (a lock): on a 2-core CPU parallel decodes only
slow each other down, and the KV caches are not thread-safe.
"""

from __future__ import annotations

import math
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm_lsp.device import torch_threads
from hrm_lsp.export.errors import ModelFileError
from hrm_lsp.inference import gate
from hrm_lsp.inference.plan import parse_plan, plan_from_comment, plan_parts
from hrm_lsp.inference.prompt import fim_prompt
from hrm_lsp.inference.refine import Candidate, formatted_middle, refine_loop, splice
from hrm_lsp.inference.sampling import repeat_penalized, sample_next
from hrm_lsp.inference.session import MLXRunner, Session, SessionPool
from hrm_lsp.inference.stops import StopRule, cursor_in_block
from hrm_lsp.inference.types import CancelToken, Completion, CompletionRequest, Edit, Plan, Timings
from hrm_lsp.log import get_logger
from hrm_lsp.tokenizer import symbols
from hrm_lsp.tokenizer.layout import middle_head

log = get_logger(__name__)

_NEVER_CANCELLED = CancelToken()
_TYPED_WORD = re.compile(r"[ \t]*[A-Za-z0-9_]*$")
# Single-line: of the candidates (LINE_CANDIDATES, the index's, the mixture's against the
# index's) the best-scoring one that the gate would show wins, not the best one outright.
PICK_SHOWN = True
PICK_MARGIN = 5.0  # ... unless it scores this much (nats) below the best: then the best or nothing
PRUNE_CANDIDATES = True  # skip line candidates that cannot win (same answers, less work)
# Multi-line: the scores of tokens the completion already holds are divided (positive) or
# multiplied (negative) by this before each choice (Keskar et al. 2019 use 1.2). On the dev
# split's bodies 1.2 raised the fourth model's parse rate 0.69 -> 0.83; the fifth needs 1.3
# (0.79 at 1.2, 0.83 at 1.3; the fourth is as good at 1.3: docs/inference.md).
REPEAT_PENALTY = 1.3
# Multi-line: an answer whose first line repeats the line above or below is decoded again
# (up to this many times) with its first word kept from starting it.
MULTILINE_RETRIES = 2
# Multi-line with the index: when the mixture's answer would be withheld, the model alone
# answers in the time left (dev bodies, both: parse 0.83 -> 0.97, similarity 0.16 -> 0.19).
BODY_MODEL_FALLBACK = 1
# Multi-line with the index, in an empty function body: the bodies of this many functions of
# the package with the most similar signatures (``hrm_lsp.index.siblings``) are validated
# first, and the first that go vet judges and accepts is the answer (0: off). Dev split
# (docs/inference.md, "Sibling bodies").
SIBLING_CANDIDATES = 3
# Where vet cannot run (a module missing offline) the first sibling that passes gofmt is
# offered all the same (0: only vet-accepted ones): the decoded answer it replaces is no
# more checked. Dev split: body similarity 0.203 -> 0.280, exact 0.006 -> 0.031, p50 314 ->
# 168 ms (docs/inference.md, "Sibling bodies").
SIBLING_UNJUDGED = 1
DIAG_TOKENS = 96  # room for the diagnostics of one refinement round (longer text is cut)
SPECULATE_TOKENS = 6  # tokens the index drafts for the model to verify at once
SPECULATE_MIN_MATCH = 4  # only from a match at least this long (shorter ones rarely hold)
INDEX_CANDIDATES = 4  # first tokens the index source tries (then rescored with the suffix)
SUFFIX_TOKENS, SUFFIX_CHARS = 8, 120  # how much of the text after the hole rescores them
# What judges the mixture's line against the index's best one in "both": the mixture's
# probabilities ("mixture") or the index's alone ("index", before quality run 9). Dev split
# (404 next-line + 218 mid-line holes of the training corpora, fourth shipped model):
# "mixture" 0.218 / 0.404 exact, "index" 0.210 / 0.390 (docs/benchmarks.md, run 9).
CHOOSE_BY = "mixture"
# First tokens a greedy single-line request tries, each continued greedily; the best by
# sequence log-probability (its end included) wins (1: plain greedy). Same dev split, model
# alone: 1 -> 0.067 / 0.115, 3 -> 0.084 / 0.161, 5 no better than 3 (on a smaller split).
LINE_CANDIDATES = 3
LINE_SCORE = "sum"  # how they are judged: "sum" of log-probabilities, or their "mean"


BACKENDS = ("auto", "onnx", "torch", "mlx")  # auto: onnx on CPU where it imports, else torch


def _keep_only(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """``logits`` with every id outside ``allowed`` at -inf (None: all of them allowed)."""
    if allowed is None:
        return logits
    masked = torch.full_like(logits, float("-inf"))
    masked[allowed] = logits[allowed]
    return masked


class _Mixer:
    """The model's next-token logits mixed with the index's ∞-gram estimate
    (``hrm_lsp.index.mix``); returns log-probabilities, so sampling works unchanged."""

    def __init__(self, query: Any, weights: Any) -> None:
        self.query, self.weights = query, weights

    def mix(self, logits: torch.Tensor, out: list[int]) -> torch.Tensor:
        est = self.query.estimate(self.query.prefix_ids + out, self.weights.tier_bonus)
        if est is None:
            return logits
        lam = self.weights.lam(est.tier, est.length, est.total)
        probs = torch.softmax(logits.float(), -1) * (1.0 - lam)
        idx = torch.from_numpy(est.tokens)
        keep = idx < probs.numel()
        share = torch.from_numpy(est.counts / est.total).to(probs.dtype)
        probs.index_add_(0, idx[keep], lam * share[keep])
        return torch.log(probs.clamp_min(1e-30))


class Engine:
    """Completions from one model. Build with ``Engine.load(path)``."""

    def __init__(self, model, tokenizer, metadata: Any = None, *, max_sessions: int = 4,
                 threads: int | None = None, backend: str = "auto", ort_options: Any = None,
                 context: int | None = None):
        # threads: intra-op threads while generating; None picks the backend's default
        # (torch on CPU: 1; onnx: ort.default_threads()). Batch-1 decoding of a small model
        # gains little from more threads, and on a busy machine they wait on each other
        # (docs/benchmarks.md, "Inference"). backend: one of BACKENDS; ort_options: the
        # onnx backend's ORTOptions (threads, accuracy level, head bits).
        self.threads = threads
        self.model = model.eval()
        self.tok = tokenizer
        self.metadata = metadata
        self.cfg = model.cfg
        # context: the tokens one request may use, prompt and completion together. By
        # default the length the model was trained on where its file records it (a model
        # trained on 256-token sequences but prompted with 512 answers far worse: quality
        # run 9, docs/benchmarks.md), else its whole window (``max_seq_len``).
        trained = int(getattr(metadata, "train_context", 0) or 0)
        self.capacity = min(self.cfg.max_seq_len, context or trained or self.cfg.max_seq_len)
        if self.capacity < 16:
            raise ValueError(f"context must be at least 16 tokens, got {self.capacity}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        runner = None
        if backend == "mlx":
            try:
                runner = MLXRunner(model)
            except ImportError:
                raise ModelFileError("the MLX backend needs mlx: pip install 'hrm-lsp[mlx]'") from None
        elif backend in ("auto", "onnx"):
            runner = self._onnx_runner(backend, threads, ort_options)
            backend = "onnx" if runner is not None else "torch"
        self.backend = backend
        if backend == "torch" and threads is None and self.device.type == "cpu":
            self.threads = 1
        # torch's threads while generating: with the onnx backend the model runs in ONNX
        # Runtime's own threads and torch only does small per-token ops (sampling, mixing
        # with the index), which two threads make many times slower on a busy 2-core CPU.
        self._torch_threads = 1 if backend == "onnx" else self.threads
        self.sessions = SessionPool(model, tokenizer, self.capacity, max_sessions, runner)
        from hrm_lsp.index.mix import default_weights

        self._mix_weights = default_weights()
        self._confidence: dict[str, float] = {}
        self._shown_memo: dict[str, bool] = {}
        self._allowed_memo: dict[str, torch.Tensor] = {}  # token healing: ids per text still needed
        self._lock = threading.Lock()
        sp = tokenizer.special_ids
        self.special_ids = frozenset(sp.values())
        self.id_plan, self.id_end_plan = sp["<PLAN>"], sp["</PLAN>"]
        self.id_eot, self.id_validate = sp[symbols.EOT], sp["<VALIDATE>"]
        self._banned = torch.tensor([tokenizer.pad_id])
        # Tokens that cannot be part of a plan end it (a weak model may skip </PLAN>).
        self._plan_enders = frozenset({self.id_eot, self.id_plan, sp["<FIM_PREFIX>"],
                                       sp["<FIM_SUFFIX>"], sp["<FIM_MIDDLE>"]})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _onnx_runner(self, backend: str, threads: int | None, options: Any):
        """The ONNX Runtime runner (CPU only), or None where ``auto`` should use torch."""
        from hrm_lsp.inference import ort

        if self.device.type != "cpu":
            if backend == "onnx":
                raise ModelFileError(f"the onnx backend runs on CPU; the model is on {self.device}")
            return None
        if options is None:
            options = ort.ORTOptions(threads=threads or ort.default_threads())
        try:
            return ort.ORTRunner(self.model, options)
        except Exception as e:  # the graph or the runtime cannot take this model
            if backend == "onnx":
                raise ModelFileError(f"the onnx backend cannot run this model: {e}") from e
            log.warning("onnx backend unavailable (%s); decoding with torch", e)
            return None

    @classmethod
    def load(cls, model_path: str | Path | None = None, device: str = "auto", **kwargs) -> Engine:
        """Load a GGUF file (or run directory/checkpoint); ModelFileError when unusable.

        ``None`` means the shipped default model (``hrm_lsp.paths.default_model_path()``).
        On CPU the ``auto`` backend decodes with ONNX Runtime (``hrm_lsp.inference.ort``)
        where it imports, else with one torch thread (see ``__init__``).
        """
        from hrm_lsp.device import DeviceError, resolve_device
        from hrm_lsp.export.gguf import load_model
        from hrm_lsp.paths import default_model_path

        if model_path is None:
            model_path = default_model_path()
            if not Path(model_path).exists():
                raise ModelFileError(
                    f"no model given and the default model {model_path} is not installed in this "
                    "checkout; pass --model FILE.gguf (make one with `hrm-lsp export RUN_DIR "
                    "--out FILE.gguf`)")
        try:
            dev = resolve_device(device).torch_device
        except DeviceError as e:
            raise ModelFileError(str(e)) from None
        model, tok, meta = load_model(model_path, device=dev)
        return cls(model, tok, meta, **kwargs)

    # -----------------------------------------------------------------------------------
    # Completion

    def complete(self, req: CompletionRequest, cancel: Any = None,
                 session_key: str | None = None, index: Any = None) -> Completion:
        """Complete at ``req.offset``; see the module docstring for the steps.

        ``index``: a ``hrm_lsp.index.RepoIndex`` (or None); with ``req.sources`` of ``both``
        its estimates are mixed into the model's distribution, with ``index`` they replace
        the model (docs/index.md)."""
        req.validate()
        cancel = cancel or _NEVER_CANCELLED
        # Healing serves the index (its tiers were tokenized whole). The model alone, though
        # trained on char-level cuts too, answers a cut *word* far better healed (quality
        # run 8, docs/benchmarks.md); after a blank or punctuation it keeps its prompt.
        heal = self._heal_text(req, words_only=req.sources == "model" or index is None)
        inner = req
        if heal:  # complete from the token boundary before the cursor (token healing)
            o = req.offset - len(heal)
            inner = replace(req, text=req.text[:o] + req.text[req.offset:], offset=o)
        given = None
        if req.plan and self.cfg.fim_layout >= 2:
            # A layout-2 model never learnt to write a plan after <FIM_MIDDLE>: training put
            # one there only as given, the function's doc comment before a whole empty body.
            # So it gets that plan, or none (tokenizer/layout.py, docs/data.md).
            given = self._given_plan(req)
            inner = replace(inner, plan=False)
        with self._lock, torch_threads(self._torch_threads):
            self._must_start, self._forced_plan = heal, given
            try:
                comp = self._sibling_body(inner, index, cancel)
                if comp is None:
                    comp = self._complete(inner, cancel, session_key, index)
                left = req.time_budget_ms - comp.elapsed_ms
                if BODY_MODEL_FALLBACK and inner.multiline and index is not None and \
                        inner.sources == "both" and not comp.cancelled and left > 0 and \
                        gate.withhold_reason(comp.text, inner.text, inner.offset, None, 0.0):
                    # The mixture's answer would not be shown: the model's own may be.
                    alone = self._complete(replace(inner, sources="model", time_budget_ms=left),
                                           cancel, session_key, None)
                    if not alone.cancelled and not gate.withhold_reason(
                            alone.text, inner.text, inner.offset, None, 0.0):
                        comp = replace(alone, notes=(*alone.notes, "the model alone: both's answer was withheld"))
            finally:
                self._must_start, self._forced_plan = "", None
        if given is not None and comp.stop_reason != "sibling":  # a copied body had no plan
            comp = replace(comp, plan=given)
        if heal:
            text = comp.text[len(heal):] if comp.text.startswith(heal) else ""
            comp = replace(comp, text=text, notes=(*comp.notes, f"healed {heal!r}"))
        return self._finish(req, comp)

    def _sibling_body(self, req: CompletionRequest, index: Any, cancel: Any) -> Completion | None:
        """A sibling function's body that go vet accepts here (``SIBLING_CANDIDATES``), as the
        completion of an empty function body; None to decode instead. Where vet cannot run
        (a module missing offline) the first one gofmt accepts (``SIBLING_UNJUDGED``), with a
        note that says so."""
        if not (SIBLING_CANDIDATES and req.multiline and req.refine and req.sources != "model"
                and index is not None and "vet" in req.stages):
            return None
        t0 = time.monotonic()
        deadline = t0 + req.time_budget_ms / 1000.0
        timings = Timings()
        ta = time.monotonic()
        found = index.siblings(req.text, req.offset, req.path, SIBLING_CANDIDATES)
        timings.index_ms += (time.monotonic() - ta) * 1000
        for n, cand in enumerate(found, 1):
            if cancel.cancelled or time.monotonic() >= deadline:
                break
            if gate.withhold_reason(cand.text, req.text, req.offset, None, 0.0):
                continue
            v = self._check(req, cand.text, timings, deadline, cancel)
            unjudged = v.unavailable is not None or "vet" in v.skipped
            if unjudged and not (SIBLING_UNJUDGED and v.ok):
                break  # vet cannot judge here (nor for the next candidate)
            if v.ok:
                text = formatted_middle(req.text, req.offset, cand.text, v) or cand.text
                where = Path(cand.path).name if cand.path else "this file"
                notes = [f"the body of {cand.name} ({where}), renamed for this function"]
                if unjudged:
                    notes.append("go vet could not judge it here")
                return self._result(text, Plan(), v, n, t0, timings, "sibling", None, notes,
                                    None, req.sources)
        return None

    _must_start = ""  # token healing: the text the completion must begin with

    @staticmethod
    def _given_plan(req: CompletionRequest) -> Plan | None:
        """The plan training gives a layout-2 middle like this request's: the enclosing
        function's doc comment when the cursor is in its empty body, else none."""
        from hrm_lsp.validators.treesitter import enclosing_function

        fn = enclosing_function(req.text, req.offset)
        if fn is None or fn.body_start is None or fn.body_end is None or not fn.doc.strip():
            return None
        if not fn.body_start < req.offset < fn.body_end or req.text[fn.body_start + 1: fn.body_end - 1].strip():
            return None
        return plan_from_comment(fn.doc, intent="ADD", target="func")

    def _heal_text(self, req: CompletionRequest, words_only: bool = False) -> str:
        """Token healing: the text before the cursor that may be a cut token -- the word
        being typed (with the blank before it) or, after punctuation, the prompt's last
        token. The prompt stops before it and the completion must start with it, so the
        model and the index continue from a token boundary as in the code they learnt from
        (``strings`` is one token there, ``str`` + ``ings`` nowhere). ``words_only``: heal
        only when the cursor cuts a word (the character before it is a letter, digit or _)."""
        line = req.text[req.text.rfind("\n", 0, req.offset) + 1: req.offset]
        if not line.strip() or (words_only and not (line[-1].isalnum() or line[-1] == "_")):
            return ""
        word = _TYPED_WORD.search(line).group()
        if len(word) == len(line):  # keep the indentation: it ends the previous token
            word = word.lstrip(" \t")
        ids = self.tok.encode(line[-32:])
        last = self.tok.decode(ids[-1:]) if ids else ""
        if "\n" in last or not line.endswith(last):
            last = ""
        heal = max(word, last, key=len)
        return heal if len(heal) <= 32 else ""

    def _allowed(self, done: str) -> torch.Tensor | None:
        """Ids that keep the completion consistent with ``_must_start`` after ``done``
        (None: no constraint any more)."""
        need = self._must_start[len(done):] if done.startswith(self._must_start[:len(done)]) else None
        if not self._must_start or need is None or len(done) >= len(self._must_start):
            return None
        hit = self._allowed_memo.get(need)
        if hit is None:
            texts, ids, by_text = self._piece_order()
            # Pieces that start with ``need`` sort together; pieces that ``need`` starts
            # with are its prefixes (as every piece with ``s.startswith(need) or
            # need.startswith(s)``, without reading the whole vocabulary).
            lo, hi = bisect_left(texts, need), bisect_left(texts, need + "\U0010ffff")
            ok = set(ids[lo:hi])
            for n in range(1, len(need)):
                ok.update(by_text.get(need[:n], ()))
            hit = torch.tensor(sorted(ok), dtype=torch.long)
            if len(self._allowed_memo) >= 1024:
                self._allowed_memo.clear()
            self._allowed_memo[need] = hit
        return hit

    def _piece_order(self) -> tuple[list[str], list[int], dict[str, list[int]]]:
        """The non-empty pieces sorted, their ids in that order, and ids by piece text."""
        if self._piece_sorted is None:
            pairs = sorted((s, i) for i, s in enumerate(self._pieces()) if s)
            by_text: dict[str, list[int]] = {}
            for s, i in pairs:
                by_text.setdefault(s, []).append(i)
            self._piece_sorted = ([s for s, _ in pairs], [i for _, i in pairs], by_text)
        return self._piece_sorted

    _piece_sorted: tuple | None = None

    def _pieces(self) -> list[str]:
        """The text of every id ("" for the special ones)."""
        if self._piece_texts is None:
            self._piece_texts = [self.tok.decode([i]) if i not in self.special_ids else ""
                                 for i in range(self.tok.vocab_size)]
        return self._piece_texts

    _piece_texts: list[str] | None = None

    def _finish(self, req: CompletionRequest, comp: Completion) -> Completion:
        """Post-processing and the show-or-withhold decision (``gate.py``)."""
        if comp.cancelled:
            return comp
        text = gate.cut_suffix_repeat(comp.text, req.text[req.offset:])
        text = gate.limit_lines(text, req.text, req.offset) if req.multiline else text
        why = gate.withhold_reason(text, req.text, req.offset, comp.confidence, req.min_confidence)
        if why is not None:
            log.debug("suggestion withheld at offset %d: %s", req.offset, why)
        return replace(comp, text=text, withheld=why)

    def _query(self, req: CompletionRequest, index: Any, timings: Timings):
        """The index's view of this request (None for the model alone or without an index)."""
        if index is None or req.sources == "model":
            return None
        ta = time.monotonic()
        q = index.query(req.text, req.offset, req.path)
        timings.index_ms += (time.monotonic() - ta) * 1000
        return q

    def _complete(self, req: CompletionRequest, cancel: Any, session_key: str | None,
                  index: Any = None) -> Completion:
        t0 = time.monotonic()
        deadline = t0 + req.time_budget_ms / 1000.0
        timings = Timings()
        self._confidence: dict[str, float] = {}
        self._first_bans: list[int] = []
        self._shown_memo: dict[str, bool] = {}
        query = self._query(req, index, timings)
        if req.sources == "index":
            return self._complete_index(req, query, cancel, deadline, t0, timings)
        mixer = _Mixer(query, self._mix_weights) if query is not None else None
        gen = torch.Generator().manual_seed(req.seed) if req.temperature > 0 else None
        prefix, suffix = req.text[: req.offset], req.text[req.offset:]
        session = self.sessions.get(session_key)

        # Room for the plan and the code, and with refinement for one more round (previous
        # candidate + diagnostics + new candidate: only the latest candidate is kept, so later
        # rounds need no more); the rest is prompt. The prompt always keeps at least half the
        # window: with a 512-token model a multi-line request's reserve (666 tokens) used to
        # leave it 16 tokens. Decoding and refinement stop cleanly where the window ends
        # (stop reason "context"; a round that does not fit is not started).
        reserve = (req.max_plan_tokens + 2 if req.plan else 2) + req.max_tokens + 8
        if req.refine and req.max_refinement_iterations > 1:
            reserve += req.max_tokens + DIAG_TOKENS
        # After <FIM_MIDDLE> (hrm_lsp/tokenizer/layout.py, as in training): <PLAN> when the
        # model writes the plan, a given plan's ids (code actions), else nothing -- the code
        # follows <FIM_MIDDLE> directly, like a training middle without a plan.
        notes: list[str] = []
        forced = None if req.plan else self._forced_plan
        head = [self.id_plan] if req.plan else self._middle_head(
            self.plan_ids(forced) if forced is not None else None)
        if forced is not None and len(head) > self.capacity // 2 - 8:
            # With the prompt's half of the window, a longer plan would leave no room for code.
            head = self._middle_head(None)
            notes.append("the doc comment is too long for the model's window: no plan given")
        budget = min(max(self.capacity // 2, self.capacity - reserve), self.capacity - len(head) - 8)
        ta = time.monotonic()
        prompt = fim_prompt(self.tok, prefix, suffix, budget)
        timings.tokenize_ms += (time.monotonic() - ta) * 1000
        if prompt.truncated:
            notes.append("context truncated to the model's window")
        ids = list(prompt.ids) + head
        ta = time.monotonic()
        logits, refine_logit, reused = session.sync(ids)
        timings.prefill_ms += (time.monotonic() - ta) * 1000
        timings.reused_tokens, timings.prefill_tokens = reused, len(ids) - reused

        # Plan.
        plan = Plan()
        if req.plan:
            plan_ids, logits, reason = self._decode_plan(session, logits, req, gen, deadline,
                                                         cancel, timings)
            plan = parse_plan(self.tok.decode([self.id_plan, *plan_ids]))
            if reason == "cancelled":
                return self._result("", plan, None, 0, t0, timings, "cancelled", None, notes)

        in_block = cursor_in_block(req.text, req.offset) if req.multiline else False
        base_len = session.length  # prompt + plan: what every refinement round keeps

        def new_rule() -> StopRule:
            from hrm_lsp.validators import syntax_errors

            return StopRule(req.multiline, prefix, suffix, in_block=in_block,
                            syntax_errors=syntax_errors)

        text, reason = self._decode_line_candidates(session, logits, new_rule, req, gen,
                                                    deadline, cancel, timings, mixer)
        if reason == "cancelled":
            return self._result(text, plan, None, 0, t0, timings, reason, None, notes)
        sources = "both" if mixer is not None else "model"
        if mixer is not None and not req.refine and not req.multiline:
            # The index's own best candidate competes with the mixture's greedy one. Both are
            # judged by the same score: how well the index expects the text after the hole
            # to follow (fill-in-the-middle consistency) plus the candidate's mean
            # log-probability under the mixture, so the model has its say in the choice
            # (``CHOOSE_BY``; "index" judges with the index's probabilities alone).
            ta = time.monotonic()
            alt = self._best_index_candidate(req, query, prefix, suffix, in_block, cancel,
                                             deadline)
            if alt is not None and text != alt[1][0] and not cancel.cancelled:
                suffix_ids = self.tok.encode(suffix[:SUFFIX_CHARS])[:SUFFIX_TOKENS]
                mine_ids, alt_ids = self.tok.encode(text), self.tok.encode(alt[1][0])
                if CHOOSE_BY == "mixture":
                    mine_lp = self._mixed_logps(session, base_len, logits, mixer, mine_ids)
                    alt_lp = self._mixed_logps(session, base_len, logits, mixer, alt_ids)
                else:
                    mine_lp = self._index_logps(query, query.prefix_ids, mine_ids)
                    alt_lp = alt[1][2]
                if mine_lp is not None and alt_lp is not None:
                    mine = self._candidate_score(query, mine_ids, mine_lp, suffix_ids)
                    other = self._candidate_score(query, alt_ids, alt_lp, suffix_ids)
                    won = self._pick(req, [(mine, ((text, reason), mine_lp)),
                                           (other, (alt[1][:2], alt_lp))], lambda c: c[0][0])
                    (text, reason), lp = won[1]
                    self._confidence[text] = math.exp(sum(lp) / len(lp)) if lp else 0.0
            timings.index_ms += (time.monotonic() - ta) * 1000
        if not req.refine:
            validation = self._check(req, text, timings, deadline, cancel)
            conf = self._confidence.get(text)
            text = formatted_middle(req.text, req.offset, text, validation) or text
            notes += self._skipped_notes(validation)
            return self._result(text, plan, validation, 1, t0, timings, reason, None, notes,
                                conf, sources)
        prob = self._validate_probability(session)

        last = {"code": text}

        def regenerate(diag_text: str):
            # Prompt + plan + the latest candidate + feedback (earlier rounds are dropped, as in
            # the training documents: one broken version, its diagnostics, the fix).
            diag_ids = self.tok.encode(diag_text)[:DIAG_TOKENS - 4]
            feedback = [*self.tok.encode(last["code"]), self.id_validate, self.tok.id_of("<DIAG>"),
                        *diag_ids, self.tok.id_of("</DIAG>"), self.tok.id_of("<REFINE>")]
            if base_len + len(feedback) + 8 > self.capacity or cancel.cancelled:
                return None
            ta = time.monotonic()
            lg, _, _ = session.sync(session.ids[:base_len] + feedback)
            timings.prefill_ms += (time.monotonic() - ta) * 1000
            code, why = self._decode_code(session, lg, new_rule(), req, gen, deadline, cancel,
                                          timings, mixer, ban_first=self._first_bans)
            if why == "cancelled":
                return None
            last["code"] = code
            return code, self._validate_probability(session), why

        outcome = refine_loop(
            (text, prob, reason), regenerate, lambda code: self._check(req, code, timings, deadline, cancel),
            max_iterations=req.max_refinement_iterations, threshold=req.refinement_threshold,
            deadline=deadline, cancelled=lambda: cancel.cancelled)
        best: Candidate = outcome.best
        final = formatted_middle(req.text, req.offset, best.text, best.validation) or best.text
        notes += self._skipped_notes(best.validation)
        notes.append(f"refinement stopped: {outcome.stop}")
        comp = self._result(final, plan, best.validation, outcome.iterations, t0, timings,
                            best.stop_reason, best.refine_probability, notes,
                            self._confidence.get(best.text), sources)
        comp.history = tuple(
            {"ok": bool(c.validation.ok), "stage": c.validation.stage,
             "diagnostics": sum(1 for d in c.validation.diagnostics if d.severity in ("error", "warning")),
             "refine_probability": c.refine_probability} for c in outcome.candidates)
        return comp

    def _result(self, text, plan, validation, iterations, t0, timings, reason, prob, notes,
                confidence=None, sources="model"):
        return Completion(text=text, plan=plan, validation=validation, iterations=iterations,
                          elapsed_ms=(time.monotonic() - t0) * 1000, timings=timings,
                          stop_reason=reason, refine_probability=prob, notes=tuple(notes),
                          confidence=confidence, sources=sources)

    @staticmethod
    def _truncate(session: Session, n: int) -> None:
        if session.length > n:
            session.cache.truncate(n)
            del session.ids[n:]

    def _draft(self, mixer: _Mixer, out: list[int], req: CompletionRequest,
               used: int) -> list[int]:
        """The index's guess of the next tokens after ``out`` (greedy ∞-gram); ``used``:
        the session's length (the draft must leave room in the window)."""
        room = min(SPECULATE_TOKENS, req.max_tokens - len(out) - 1, self.capacity - used - 4)
        if room <= 0:
            return []
        ids = mixer.query.prefix_ids + out
        est = mixer.query.estimate(ids, self._mix_weights.tier_bonus)
        if est is None or est.length < SPECULATE_MIN_MATCH:
            return []
        return mixer.query.continuation(ids, room)

    def _complete_index(self, req: CompletionRequest, query: Any, cancel: Any, deadline: float,
                        t0: float, timings: Timings) -> Completion:
        """The index alone: greedy ∞-gram continuation, the same stop rules, no model run."""
        notes: list[str] = []
        if query is None:
            notes.append("no repository index for this request")
            return self._result("", Plan(), None, 0, t0, timings, "eot", None, notes, None, "index")
        prefix, suffix = req.text[: req.offset], req.text[req.offset:]
        in_block = cursor_in_block(req.text, req.offset) if req.multiline else False
        ta = time.monotonic()
        best = self._best_index_candidate(req, query, prefix, suffix, in_block, cancel, deadline)
        text, reason, logp, out = best[1] if best is not None else ("", "eot", [], [])
        timings.index_ms += (time.monotonic() - ta) * 1000
        timings.decode_tokens += len(out)
        if reason == "cancelled":
            return self._result(text, Plan(), None, 0, t0, timings, reason, None, notes, None, "index")
        validation = self._check(req, text, timings, deadline, cancel)
        final = formatted_middle(req.text, req.offset, text, validation) or text
        notes += self._skipped_notes(validation)
        conf = math.exp(sum(logp) / len(logp)) if logp else None
        return self._result(final, Plan(), validation, 1, t0, timings, reason, None, notes, conf,
                            "index")

    def _best_index_candidate(self, req, query, prefix, suffix, in_block, cancel, deadline):
        """(score, (text, stop reason, log-probabilities, ids)) of the index's best candidate,
        or None. Candidates: the greedy continuation after each of the few most likely first
        tokens; the one the text after the hole follows best wins (fill-in-the-middle
        consistency, ``_suffix_logp``), its own mean log-probability breaking ties."""
        from hrm_lsp.validators import syntax_errors

        weights = self._mix_weights
        first = self._index_step(query, [], "", weights)
        if first is None:
            return None
        starts = self._first_tokens(first, INDEX_CANDIDATES)
        suffix_ids = self.tok.encode(suffix[:SUFFIX_CHARS])[:SUFFIX_TOKENS]
        scored = []
        for k, start in enumerate(starts):
            if k and (cancel.cancelled or time.monotonic() > deadline):
                break
            rule = StopRule(req.multiline, prefix, suffix, in_block=in_block,
                            syntax_errors=syntax_errors)
            cand = self._index_greedy(query, start, first, rule, req, weights, cancel, deadline)
            scored.append((self._candidate_score(query, cand[3], cand[2], suffix_ids), cand))
        return self._pick(req, scored, lambda c: c[0])

    def _pick(self, req: CompletionRequest, scored: list, text_of: Callable[[Any], str]):
        """The best-scoring (score, candidate) of ``scored`` that the gate would show
        (``PICK_SHOWN``, single-line requests), else the best; None for none."""
        ranked = sorted(scored, key=lambda sc: sc[0], reverse=True)
        if PICK_SHOWN and not req.multiline:
            for sc in ranked:
                if sc[0] < ranked[0][0] - PICK_MARGIN:
                    break
                if self._shown(req, text_of(sc[1])):
                    return sc
        return ranked[0] if ranked else None

    def _shown(self, req: CompletionRequest, text: str) -> bool:
        """Would the gate show ``text`` at the request's cursor (its confidence aside)?
        Remembered per request."""
        if text not in self._shown_memo:
            cut = gate.cut_suffix_repeat(text, req.text[req.offset:])
            self._shown_memo[text] = gate.withhold_reason(cut, req.text, req.offset, None, 0.0) is None
        return self._shown_memo[text]

    def _mixed_logps(self, session: Session, base_len: int, logits0: torch.Tensor,
                     mixer: _Mixer, ids: list[int]) -> list[float] | None:
        """Log-probabilities the mixture gives ``ids`` one by one after the session's first
        ``base_len`` ids, whose next-token logits are ``logits0`` (None: no room left)."""
        if not ids:
            return []
        if base_len + len(ids) + 2 >= self.capacity:
            return None
        self._truncate(session, base_len)
        after = session.extend_all(ids[:-1]) if len(ids) > 1 else []
        out = []
        for i, (t, lg) in enumerate(zip(ids, [logits0, *after], strict=True)):
            out.append(float(torch.log_softmax(mixer.mix(lg, ids[:i]).float(), -1)[t]))
        return out

    def _candidate_score(self, query, ids: list[int], logp: list[float], suffix_ids) -> float:
        return self._suffix_logp(query, ids, suffix_ids) + sum(logp) / max(1, len(logp))

    def _index_step(self, query: Any, out: list[int], text: str, weights: Any):
        allowed = self._allowed(text)
        return query.estimate(query.prefix_ids + out, weights.tier_bonus,
                              allowed=None if allowed is None else allowed.numpy())

    @staticmethod
    def _first_tokens(est: Any, k: int) -> list[tuple[int, float]]:
        order = np.argsort(-est.counts, kind="stable")[:k]
        return [(int(est.tokens[i]), float(est.counts[i]) / est.total) for i in order]

    def _index_greedy(self, query, start, first, rule, req, weights, cancel, deadline):
        """(text, stop reason, log-probabilities, ids) of the greedy ∞-gram continuation
        that begins with ``start`` = (token, its share in ``first``)."""
        out, logp = [start[0]], [math.log(max(1e-9, self._index_prob(first, start[0])))]
        text, reason = self.tok.decode(out), "max_tokens"
        cut = rule.check(text)
        while cut is None:
            if cancel.cancelled:
                return text, "cancelled", logp, out
            if len(out) >= req.max_tokens:
                break
            if time.monotonic() > deadline:
                reason = "time"
                break
            est = self._index_step(query, out, text, weights)
            if est is None:
                reason = "eot"
                break
            nxt, _ = est.top()
            out.append(nxt)
            logp.append(math.log(max(1e-9, self._index_prob(est, nxt))))
            text = self.tok.decode(out)
            cut = rule.check(text)
        if cut is not None:
            text, reason = text[:cut], rule.reason or ("line" if not req.multiline else "block")
            out = self.tok.encode(text)
        if req.multiline:  # whole Go, as the model's answers (_decode_code)
            whole = rule.settle(text)
            if whole != text:
                text, out = whole, self.tok.encode(whole)
        return text, reason, logp, out

    def _index_prob(self, est: Any, token: int) -> float:
        """The index's probability of ``token`` from one estimate: its share of the
        occurrences, weighted by how far that match is trusted against a unigram."""
        lam = self._mix_weights.lam(est.tier, est.length, est.total, against="unigram")
        return lam * float(est.counts[est.tokens == token].sum()) / est.total

    def _index_logps(self, query: Any, ctx: list[int], ids: list[int]) -> list[float]:
        """Log-probabilities the index gives ``ids`` one by one after ``ctx``."""
        ctx, out = list(ctx), []
        for t in ids:
            est = query.estimate(ctx, self._mix_weights.tier_bonus)
            out.append(math.log(max(1e-4, self._index_prob(est, t) if est is not None else 0.0)))
            ctx.append(t)
        return out

    def _suffix_logp(self, query: Any, cand: list[int], suffix_ids: list[int]) -> float:
        """Mean log-probability the index gives the first tokens after the hole once
        ``cand`` is in it."""
        lp = self._index_logps(query, query.prefix_ids + list(cand), suffix_ids)
        return sum(lp) / max(1, len(lp))

    def _skipped_notes(self, validation) -> list[str]:
        skipped = dict(getattr(validation, "skipped", None) or {})
        return [f"{stage} skipped: {why}" for stage, why in skipped.items()]

    def _check(self, req: CompletionRequest, code: str, timings: Timings,
               deadline: float | None = None, cancel: Any = None):
        from hrm_lsp.validators import validate

        ta = time.monotonic()
        doc = splice(req.text, req.offset, code)
        path = Path(req.path) if req.path else None
        # The request's time budget bounds validation too (each Go process gets what is
        # left; none starts after it), and cancellation kills a running gofmt/vet.
        result = validate(doc, path=path, stages=tuple(req.stages), deadline=deadline,
                          cancelled=(lambda: cancel.cancelled) if cancel is not None else None)
        timings.validate_ms += (time.monotonic() - ta) * 1000
        return result

    def _validate_probability(self, session: Session) -> float | None:
        """Feed ``<VALIDATE>`` after the code and read the refinement head there."""
        if session.length + 1 > self.capacity:
            return None
        _, refine_logit = session.extend([self.id_validate])
        return 1.0 / (1.0 + math.exp(-float(refine_logit)))

    # -----------------------------------------------------------------------------------
    # Decoding loops

    def _decode_plan(self, session, logits, req, gen, deadline, cancel, timings):
        out: list[int] = []
        reason = "max_tokens"
        ta = time.monotonic()
        while len(out) < req.max_plan_tokens:
            if cancel.cancelled:
                reason = "cancelled"
                break
            if time.monotonic() > deadline:
                reason = "time"
                break
            if session.length + 1 >= self.capacity:
                reason = "context"
                break
            nxt = sample_next(logits, req.temperature, req.top_p, gen, self._banned)
            if nxt == self.id_end_plan:
                reason = "end"
                break
            if nxt in self._plan_enders:
                reason = "end"
                break
            out.append(nxt)
            logits, _ = session.extend([nxt])
        # Close the plan so the code follows it as in training, even when it was cut short.
        if reason != "cancelled":
            logits, _ = session.extend([self.id_end_plan])
        timings.decode_ms += (time.monotonic() - ta) * 1000
        timings.decode_tokens += len(out)
        return out, logits, reason

    def _decode_line_candidates(self, session, logits, new_rule, req, gen, deadline, cancel,
                                timings, mixer):
        """Greedy decoding, or for a greedy single-line request the best of the greedy
        continuations after each of the ``LINE_CANDIDATES`` likeliest first tokens, by
        their sequence log-probability with the end (``<EOT>`` or the line's end)."""
        k = LINE_CANDIDATES if (req.temperature <= 0 and not req.refine and not req.multiline) else 1
        if k <= 1:
            base_len = session.length
            for _ in range(1 + (MULTILINE_RETRIES if req.multiline else 0)):
                text, reason = self._decode_code(session, logits, new_rule(), req, gen,
                                                 deadline, cancel, timings, mixer,
                                                 ban_first=self._first_bans)
                why = gate.withhold_reason(text, req.text, req.offset, None, 0.0) \
                    if req.multiline and reason != "cancelled" else None
                if not (why or "").startswith("repeats") or self._last_word is None or \
                        time.monotonic() > deadline:
                    break
                # It starts by writing the line above (or below) again -- the loop header
                # it is in, say: once more, without that first word.
                self._first_bans.append(self._last_word)
                self._truncate(session, base_len)
            return text, reason
        base_len = session.length
        mixed = mixer.mix(logits, []) if mixer is not None else logits
        allowed = self._allowed("")
        first = _keep_only(torch.log_softmax(mixed.float(), -1), allowed)
        for t in (*self.special_ids, *self._banned.tolist()):
            first[t] = float("-inf")
        starts = [int(t) for t in torch.topk(first, k).indices if torch.isfinite(first[t])]
        # A candidate's score (a sum of log-probabilities, none above 0) is at most its first
        # token's: once a candidate that would be shown scores that much, the later ones
        # (their first tokens are less likely still) cannot win and are not decoded.
        bound = torch.log_softmax(_keep_only(mixed.float(), allowed), -1)
        scored = []
        for i, t in enumerate(starts):
            if i and (cancel.cancelled or time.monotonic() > deadline):
                break
            if PRUNE_CANDIDATES and LINE_SCORE == "sum" and any(
                    sc >= float(bound[t]) and (not PICK_SHOWN or self._shown(req, c[0]))
                    for sc, c in scored):
                break
            self._truncate(session, base_len)
            text, reason = self._decode_code(session, logits, new_rule(), req, gen, deadline,
                                             cancel, timings, mixer, first=t)
            if reason == "cancelled":
                return text, reason
            if not text.strip():  # a first token that only ends the line offers nothing
                continue
            lp = self._last_logp + [self._end_logp]
            scored.append((sum(lp) / len(lp) if LINE_SCORE == "mean" else sum(lp), (text, reason)))
        best = self._pick(req, scored, lambda c: c[0])
        if best is None:
            return self._decode_code(session, logits, new_rule(), req, gen, deadline, cancel,
                                     timings, mixer)
        return best[1]

    def _code_first_bans(self) -> torch.Tensor:
        """Special ids and the pieces that start (after blanks) with a closing bracket or
        a ``/`` (a comment)."""
        if self._code_first is None:
            ids = [i for i, p in enumerate(self._pieces()) if i in self.special_ids or
                   p.lstrip(" \t\r\n")[:1] in ("}", ")", "]", "/")]
            self._code_first = torch.tensor(ids, dtype=torch.long)
        return self._code_first

    _code_first: torch.Tensor | None = None

    # What the latest _decode_code chose: its tokens' log-probabilities, and that of the
    # <EOT> that ended it (0 when a line's end, inside its last token, ended it).
    _last_logp: list[float] = []
    _end_logp = 0.0
    _last_word: int | None = None  # multi-line: its first token with more than blanks in it

    def _decode_code(self, session, logits, rule: StopRule, req, gen, deadline, cancel,
                     timings, mixer: _Mixer | None = None,
                     first: int | None = None,
                     ban_first: list[int] | None = None) -> tuple[str, str]:
        """Decode code tokens after the session's ids; return (text, stop reason).

        With a ``mixer`` each step's distribution is the model's mixed with the index's
        estimate for the document text before the cursor plus the code so far. The chosen
        tokens' probabilities give the candidate's confidence (``self._confidence``)."""
        out: list[int] = []
        logp: list[float] = []
        text = ""
        reason = "max_tokens"
        ta = time.monotonic()
        start_len, n_run = session.length, 0  # out[:n_run] are in the session
        # Speculative decoding: the index drafts what follows, the model checks the draft in
        # one forward pass, and the tokens greedy decoding would have chosen anyway are
        # taken from it (the output is plain greedy's). Only where a forward of several
        # tokens costs less than one each (the torch runner), and only for greedy decoding.
        speculate = (mixer is not None and req.temperature <= 0.0 and SPECULATE_TOKENS > 0
                     and getattr(session.runner, "batched", False))
        pending: list[tuple[int, torch.Tensor]] = []  # drafted ids run after out, with logits
        # Asked for code in an empty block: an answer that only closes the block or ends at
        # once is no answer, and one that opens with a comment is, from the small model, a
        # license header (docs/inference.md, "Multi-line"). Until some code is written
        # those tokens are not chosen.
        no_close = self._code_first_bans() if req.multiline and rule.in_block and \
            rule.suffix.lstrip(" \t\r\n").startswith("}") else None
        if ban_first:  # first words that made an earlier try repeat a neighbouring line
            extra = torch.tensor(ban_first, dtype=torch.long)
            no_close = extra if no_close is None else torch.cat([no_close, extra])
        while True:
            if cancel.cancelled:
                reason = "cancelled"
                break
            if len(out) >= req.max_tokens:
                reason = "max_tokens"
                break
            if time.monotonic() > deadline:
                reason = "time"
                break
            if session.length + 2 >= self.capacity:  # keep room for <VALIDATE>
                reason = "context"
                break
            if req.multiline:  # the model's scores; the index's counts are what they are
                logits = repeat_penalized(logits, out, REPEAT_PENALTY)
            if mixer is not None:
                tm = time.monotonic()
                logits = mixer.mix(logits, out)
                timings.index_ms += (time.monotonic() - tm) * 1000
            allowed = self._allowed(text)
            if allowed is not None and not len(allowed):
                reason = "eot"
                break
            logits = _keep_only(logits, allowed)
            if no_close is not None and not text.strip():
                logits = logits.index_fill(0, no_close, float("-inf"))
            nxt = first if first is not None and not out else \
                sample_next(logits, req.temperature, req.top_p, gen, self._banned)
            if nxt in self.special_ids:
                self._end_logp = float(torch.log_softmax(logits.float(), -1)[nxt])
                reason = "eot"
                break
            out.append(nxt)
            logp.append(float(torch.log_softmax(logits.float(), -1)[nxt]))
            text = self.tok.decode(out)
            cut = rule.check(text)
            if cut is not None:
                text = text[:cut]
                reason = rule.reason or ("line" if not req.multiline else "block")
                break
            if pending and pending[0][0] == nxt:  # the draft was right: no forward needed
                logits = pending.pop(0)[1]
                n_run = len(out)
                timings.accepted_tokens += 1
                continue
            if len(out) >= req.max_tokens and not req.refine:
                # Nothing follows this candidate (no <VALIDATE> round): its last token need not
                # run. One forward fewer per budget-limited completion (1 of 9 for 8 tokens).
                reason = "max_tokens"
                break
            if pending:  # the draft went wrong here: forget the rest of it
                self._truncate(session, start_len + len(out) - 1)
                pending = []
            draft = self._draft(mixer, out, req, session.length) if speculate else []
            if draft:
                all_logits = session.extend_all([nxt, *draft])
                timings.drafted_tokens += len(draft)
                logits, pending = all_logits[0], list(zip(draft, all_logits[1:], strict=True))
            else:
                logits, _ = session.extend([nxt])
            n_run = len(out)
        # The session holds the prompt and out[:n_run] (never a draft that was not taken).
        self._truncate(session, start_len + n_run)
        settled = False
        if req.multiline and reason != "cancelled":  # whole Go where a budget or loop cut it
            whole = rule.settle(text)
            settled, text = whole != text, whole
        if reason in ("line", "block", "repeat") or settled:
            # The stop token was not run; the session ends with the kept code's tokens
            # (re-encoded, so the next <VALIDATE> follows exactly the code that is returned).
            if self.tok.decode(out[:-1]) != text or n_run == len(out):
                self._truncate(session, start_len)
                kept = self.tok.encode(text)[:max(0, self.capacity - 2 - start_len)]
                if kept:
                    session.extend(kept)
        if reason != "eot":
            self._end_logp = 0.0  # the line's end is in its last token
        self._last_logp = logp
        self._last_word = next((t for t in out if self._pieces()[t].strip()), None) \
            if req.multiline else None  # only the multi-line retry asks for it
        if logp:
            self._confidence[text] = math.exp(sum(logp) / len(logp))
        timings.decode_ms += (time.monotonic() - ta) * 1000
        timings.decode_tokens += len(out)
        return text, reason

    # -----------------------------------------------------------------------------------
    # Code actions

    def refine_function(self, text: str, offset: int, path: str | None = None,
                        cancel: Any = None, progress: Callable[..., None] | None = None,
                        **options: Any) -> Edit | None:
        """Regenerate the body of the function at ``offset`` from the plan in its doc comment
        (the server's "Refine this function"). None when the cursor is in no function with a
        body, or no candidate passed the syntax gate."""
        from hrm_lsp.validators.treesitter import enclosing_function

        fn = enclosing_function(text, offset)
        if fn is None or fn.body_start is None or fn.body_end is None:
            return None
        report = progress or (lambda *a: None)
        report(f"refining {fn.name}", 0)
        intent = "ADD" if not text[fn.body_start + 1: fn.body_end - 1].strip() else "FIX"
        plan = plan_from_comment(fn.doc, intent=intent) if fn.doc.strip() else Plan(intent, "func")
        body_open = fn.body_start + 1
        body_close = fn.body_end - 1  # the closing brace
        inner = "\n\t"
        doc = text[:body_open] + inner + "\n" + text[body_close:]
        req = CompletionRequest(
            text=doc, offset=body_open + len(inner), path=path, multiline=True,
            max_tokens=int(options.get("max_tokens", 256)),
            temperature=float(options.get("temperature", 0.0)),
            time_budget_ms=float(options.get("time_budget_ms", 10000.0)),
            refine=True, max_refinement_iterations=int(options.get("max_refinement_iterations", 5)),
            refinement_threshold=float(options.get("refinement_threshold", 0.9)),
            stages=tuple(options.get("stages", ("syntax", "gofmt", "vet"))), plan=False)
        comp = self.complete_with_plan(req, plan, cancel=cancel)
        report(f"{fn.name}: {comp.iterations} candidate(s), "
               f"{'passed' if comp.validation is not None and comp.validation.ok else 'best kept'}", 100)
        if comp.cancelled or comp.validation is None:
            return None
        from hrm_lsp.validators import syntax_errors

        new_body = inner + comp.text.strip("\n") + "\n"
        edit = Edit(body_open, body_close, new_body, title=f"Refine {fn.name}", plan=plan,
                    validation=comp.validation)
        if syntax_errors(edit.apply(text)):
            return None
        return edit

    def generate_from_comment(self, text: str, offset: int, path: str | None = None,
                              cancel: Any = None, progress: Callable[..., None] | None = None,
                              **options: Any) -> Edit | None:
        """Write the declaration a comment block describes, inserted after the comment."""
        line_end = text.find("\n", offset)
        line_end = len(text) if line_end < 0 else line_end
        # The comment block: contiguous // lines around the cursor.
        lines_start = text.rfind("\n", 0, offset) + 1
        start = lines_start
        while start > 0:
            prev = text.rfind("\n", 0, start - 1) + 1
            if not text[prev:start].lstrip().startswith("//"):
                break
            start = prev
        comment = text[start:line_end]
        if not comment.lstrip().startswith("//"):
            return None
        plan = plan_from_comment(comment)
        insert = line_end
        doc = text[:insert] + "\n" + text[insert:]
        req = CompletionRequest(
            text=doc, offset=insert + 1, path=path, multiline=True,
            max_tokens=int(options.get("max_tokens", 256)),
            time_budget_ms=float(options.get("time_budget_ms", 10000.0)),
            refine=True, stages=tuple(options.get("stages", ("syntax", "gofmt", "vet"))),
            plan=False)
        comp = self.complete_with_plan(req, plan, cancel=cancel)
        if comp.cancelled or not comp.text.strip():
            return None
        return Edit(insert, insert, "\n" + comp.text.rstrip("\n"), title="Generate from comment",
                    plan=plan, validation=comp.validation)

    def complete_with_plan(self, req: CompletionRequest, plan: Plan, cancel: Any = None,
                           session_key: str | None = None) -> Completion:
        """Like ``complete`` but with a given plan instead of one the model writes."""
        req.validate()
        cancel = cancel or _NEVER_CANCELLED
        with self._lock, torch_threads(self._torch_threads):
            self._forced_plan = plan
            try:
                comp = self._complete(replace(req, plan=False), cancel, session_key)
            finally:
                self._forced_plan = None
        return replace(comp, plan=plan)

    _forced_plan: Plan | None = None

    def plan_ids(self, plan: Plan) -> list[int]:
        """Token ids of a plan (``<PLAN>`` … ``</PLAN>``)."""
        return self.tok.encode_parts(plan_parts(plan))

    def _middle_head(self, plan_ids: list[int] | None) -> list[int]:
        """What follows ``<FIM_MIDDLE>`` before the code, in the model's own layout: a model
        trained before layout 2 (``ModelConfig.fim_layout``) expects an empty plan pair."""
        if not plan_ids and self.cfg.fim_layout < 2:
            return [self.id_plan, self.id_end_plan]
        return middle_head(plan_ids)

    def middle_logprobs(self, text: str, offset: int, middle: list[int]) -> torch.Tensor:
        """log-probabilities [len(middle), vocab] of the model at each token of ``middle``
        written at ``offset`` (teacher forcing), in the layout of a completion without a
        plan: what benchmarks/index_mix.py fits the mixing weights on."""
        budget = max(self.capacity // 2, self.capacity - len(middle) - 12)
        prompt = fim_prompt(self.tok, text[:offset], text[offset:], budget)
        ids = list(prompt.ids) + self._middle_head(None) + list(middle)
        ids = ids[-self.capacity:]
        with self._lock, torch_threads(self._torch_threads), torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=self.device)
            out = self.model(x)
        logits = out.logits[0, len(ids) - len(middle) - 1: len(ids) - 1].float()
        return torch.log_softmax(logits, -1)
