"""The refinement loop: candidate -> validators -> feedback -> new candidate.

Each candidate is spliced into the document and judged by the validators (syntax gate,
gofmt, go vet, and the package's tests only when the user enabled that stage). On failure
the model reads ``<VALIDATE> <DIAG> diagnostics </DIAG> <REFINE>`` and writes the code
again. The loop stops

- as soon as a candidate passes,
- when the refinement head (probability that the code passes, read at ``<VALIDATE>``) is at
  least ``refinement_threshold`` and the syntax gate passed (the model is confident and the
  remaining failures are ones it cannot act on),
- after ``max_refinement_iterations`` candidates, when the next one would not fit in the
  time budget, when the context is full, or on cancellation.

The best candidate wins (passing first, then the one that got furthest through the stages
with the fewest failing diagnostics). When gofmt's only complaint is formatting, the
formatted code is what is returned.

This module knows nothing about the model: the engine passes in how to generate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STAGE_ORDER = {"syntax": 0, "gofmt": 1, "vet": 2, "test": 3}
FAILING = ("error", "warning")


@dataclass
class Candidate:
    text: str
    validation: Any  # ValidationResult
    refine_probability: float | None
    iteration: int
    stop_reason: str = ""

    def rank(self) -> tuple:
        v = self.validation
        failing = sum(1 for d in v.diagnostics if d.severity in FAILING)
        return (bool(v.ok), STAGE_ORDER.get(v.stage, 0), -failing, -self.iteration)


@dataclass
class RefineOutcome:
    best: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    stop: str = ""  # pass | confident | cap | time | context | cancelled

    @property
    def iterations(self) -> int:
        return len(self.candidates)


def splice(text: str, offset: int, middle: str) -> str:
    """The document with ``middle`` inserted at ``offset``."""
    return text[:offset] + middle + text[offset:]


def format_diagnostics(diagnostics) -> str:
    """The text inside ``<DIAG> … </DIAG>``: ``line:col: message`` per failing finding, in
    the data pipeline's layout for refinement documents (one place: hrm_lsp.data.refine)."""
    from hrm_lsp.data.refine import format_diagnostics as layout

    return layout([d for d in diagnostics if d.severity in FAILING])


def formatted_middle(text: str, offset: int, middle: str, validation) -> str | None:
    """gofmt's version of ``middle`` when gofmt reformatted only the inserted part, else None."""
    formatted = getattr(validation, "formatted", None)
    if not formatted or not getattr(validation, "changed", False):
        return None
    prefix, suffix = text[:offset], text[offset:]
    if len(formatted) < len(prefix) + len(suffix):
        return None
    if formatted.startswith(prefix) and formatted.endswith(suffix):
        return formatted[len(prefix): len(formatted) - len(suffix)]
    return None


def syntax_ok(validation) -> bool:
    """True when no syntax-stage error was reported."""
    return not any(d.stage == "syntax" and d.severity in FAILING for d in validation.diagnostics)


def refine_loop(first: tuple[str, float | None, str],
                regenerate: Callable[[str], tuple[str, float | None, str] | None],
                check: Callable[[str], Any], *,
                max_iterations: int, threshold: float, deadline: float,
                cancelled: Callable[[], bool] = lambda: False) -> RefineOutcome:
    """Run the loop from the first candidate.

    ``first`` and ``regenerate(diagnostics_text)`` give ``(code, refine_probability,
    stop_reason)`` (regenerate returns None when it cannot run: context full, cancelled).
    ``check(code)`` validates the document with ``code`` spliced in. ``deadline`` is a
    ``time.monotonic()`` value.
    """
    candidates: list[Candidate] = []
    current = first
    stop = "cap"
    started = time.monotonic()
    for it in range(1, max_iterations + 1):
        code, prob, reason = current
        cand = Candidate(code, check(code), prob, it, reason)
        candidates.append(cand)
        v = cand.validation
        if v.ok:
            stop = "pass"
            break
        if prob is not None and prob >= threshold and syntax_ok(v):
            stop = "confident"
            break
        if it == max_iterations:
            stop = "cap"
            break
        if cancelled():
            stop = "cancelled"
            break
        # Deadline-aware: another round costs about what a round has cost so far.
        now = time.monotonic()
        if reason == "time" or now + (now - started) / it > deadline:
            stop = "time"
            break
        nxt = regenerate(format_diagnostics(v.diagnostics))
        if nxt is None:
            stop = "cancelled" if cancelled() else "context"
            break
        current = nxt
    best = max(candidates, key=Candidate.rank)
    return RefineOutcome(best, candidates, stop)
