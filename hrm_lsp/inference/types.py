"""The inference API's value types: requests, results, plans, edits and cancellation.

These are what the server and the CLI hold; they import nothing heavy (no torch), so the
server can build requests before the model has loaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from hrm_lsp.validators import ValidationResult

STAGES = ("syntax", "gofmt", "vet", "test")
SOURCES = ("both", "model", "index")  # where suggestions come from (docs/index.md)


class InferenceError(ValueError):
    """A request cannot be served as given (bad offset, unknown stage, ...)."""


@dataclass(frozen=True)
class Plan:
    """The plan the model wrote before the code: intent (FIX/ADD/REFACTOR), target
    (func/type) and short steps. Empty strings/list when the model wrote no plan."""

    intent: str = ""
    target: str = ""
    steps: tuple[str, ...] = ()

    def one_line(self) -> str:
        """Readable one-line form, e.g. ``ADD func · parse config, validate``."""
        head = " ".join(p for p in (self.intent, self.target) if p)
        steps = ", ".join(s for s in self.steps if s)
        if head and steps:
            return f"{head} · {steps}"
        return head or steps

    @property
    def empty(self) -> bool:
        return not (self.intent or self.target or self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "target": self.target, "steps": list(self.steps),
                "text": self.one_line()}


@dataclass(frozen=True)
class CompletionRequest:
    """One completion at ``offset`` (a Python ``str`` index into ``text``).

    ``stages`` are the validator stages for the refinement loop (``test`` only when the
    user opted in: it runs code). ``plan`` turns plan-first decoding off when False (the
    model then starts with an empty plan, which is cheaper for keystroke completions).
    """

    text: str
    offset: int
    path: str | None = None
    multiline: bool = False
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    time_budget_ms: float = 1000.0
    refine: bool = True
    max_refinement_iterations: int = 5
    refinement_threshold: float = 0.9
    stages: tuple[str, ...] = ("syntax", "gofmt", "vet")
    plan: bool = True
    max_plan_tokens: int = 48
    seed: int = 0
    # both: the model's distribution mixed with the repository index's; model: the model
    # alone; index: the index alone (no model run). Without an index, both == model.
    sources: str = "both"
    # Completions whose confidence (geometric mean of the chosen tokens' probabilities) is
    # below this are withheld (Completion.withheld says why); 0 shows everything that parses.
    min_confidence: float = 0.0

    def validate(self) -> None:
        """Raise InferenceError naming the first bad field."""
        if not isinstance(self.text, str):
            raise InferenceError("text must be a str")
        if not 0 <= self.offset <= len(self.text):
            raise InferenceError(f"offset {self.offset} is outside the document (0..{len(self.text)})")
        if self.max_tokens < 1:
            raise InferenceError("max_tokens must be >= 1")
        if self.temperature < 0:
            raise InferenceError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise InferenceError("top_p must be in (0, 1]")
        if self.time_budget_ms <= 0:
            raise InferenceError("time_budget_ms must be > 0")
        if self.max_refinement_iterations < 1:
            raise InferenceError("max_refinement_iterations must be >= 1")
        if self.sources not in SOURCES:
            raise InferenceError(f"sources must be one of {', '.join(SOURCES)}, got {self.sources!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise InferenceError("min_confidence must be in [0, 1]")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise InferenceError(f"unknown validator stage(s) {unknown}; known: {', '.join(STAGES)}")


class CancelToken:
    """Cooperative cancellation: generation checks ``cancelled`` between tokens."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class Timings:
    """Milliseconds spent per phase of one completion (summed over refinement iterations)."""

    tokenize_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    validate_ms: float = 0.0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    decode_tokens: int = 0
    index_ms: float = 0.0  # building the request's index query and looking tokens up
    drafted_tokens: int = 0  # tokens the index drafted for speculative decoding
    accepted_tokens: int = 0  # drafted tokens the model agreed with

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass
class Completion:
    """The result of ``Engine.complete``.

    ``text`` is inserted at the cursor; ``validation`` judged the document with ``text``
    spliced in (None when no validation ran, e.g. cancelled before the first candidate).
    ``stop_reason`` is one of ``eot``, ``line``, ``block``, ``repeat``, ``max_tokens``, ``time``,
    ``cancelled``, ``context``, or ``sibling`` (a sibling function's body that go vet accepts,
    nothing decoded: ``Engine._sibling_body``).
    """

    text: str
    plan: Plan
    validation: ValidationResult | None
    iterations: int
    elapsed_ms: float
    timings: Timings = field(default_factory=Timings)
    stop_reason: str = ""
    refine_probability: float | None = None
    notes: tuple[str, ...] = ()
    # One entry per refinement candidate: {"ok", "stage", "diagnostics", "refine_probability"}.
    history: tuple[dict[str, Any], ...] = ()
    # Geometric mean of the chosen tokens' probabilities (under the distribution that chose
    # them); None when nothing was decoded.
    confidence: float | None = None
    # Why the suggestion should not be shown (inference/gate.py), or None to show it.
    withheld: str | None = None
    sources: str = ""  # which sources produced it: model | index | both (+ tiers used)

    @property
    def cancelled(self) -> bool:
        return self.stop_reason == "cancelled"

    def to_json(self) -> dict[str, Any]:
        """The ``hrm-lsp complete --json`` shape."""
        v = self.validation
        validation = (
            {"ok": v.ok, "stage": v.stage,
             "diagnostics": [_diag_dict(d) for d in v.diagnostics],
             "skipped": dict(getattr(v, "skipped", {}) or {})}
            if v is not None else {"ok": False, "stage": None, "diagnostics": [], "skipped": {}}
        )
        return {
            "plan": self.plan.to_dict(),
            "text": self.text,
            "validation": validation,
            "iterations": self.iterations,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "timings": {k: (round(v, 3) if isinstance(v, float) else v)
                        for k, v in self.timings.to_dict().items()},
            "stop_reason": self.stop_reason,
            "refine_probability": self.refine_probability,
            "notes": list(self.notes),
            "history": list(self.history),
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "withheld": self.withheld,
            "sources": self.sources,
        }


def _diag_dict(d: Any) -> dict[str, Any]:
    keys = ("line", "column", "end_line", "end_column", "severity", "message", "stage")
    return {k: getattr(d, k, None) for k in keys}


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` (Python ``str`` offsets) with ``new_text``."""

    start: int
    end: int
    new_text: str
    title: str = ""
    plan: Plan = field(default_factory=Plan)
    validation: ValidationResult | None = None

    def apply(self, text: str) -> str:
        return text[: self.start] + self.new_text + text[self.end :]
