"""Plans: parse the model's ``<PLAN> … </PLAN>`` tokens, and build plan tokens from a doc
comment (for "generate from comment" and "refine this function")."""

from __future__ import annotations

import re

from hrm_lsp.inference.types import Plan
from hrm_lsp.tokenizer import symbols

_INTENT = re.compile(r"<INTENT:(\w+)>")
_TARGET = re.compile(r"<TARGET:(\w+)>")
_ANY_SPECIAL = re.compile("|".join(re.escape(s) for s in symbols.SPECIALS))


def parse_plan(text: str) -> Plan:
    """Plan from decoded plan text (special symbols rendered by name), tolerant of junk:
    unknown intents/targets are dropped, steps are the text between ``<STEP>`` markers."""
    body = text
    if "<PLAN>" in body:
        body = body.split("<PLAN>", 1)[1]
    body = body.split("</PLAN>", 1)[0]
    intent = next((m for m in _INTENT.findall(body) if m in symbols.INTENTS), "")
    target = next((m for m in _TARGET.findall(body) if m in symbols.TARGETS), "")
    steps: list[str] = []
    for chunk in body.split("<STEP>")[1:]:
        step = " ".join(_ANY_SPECIAL.sub(" ", chunk).split())
        if step:
            steps.append(step)
    return Plan(intent, target, tuple(steps))


def plan_parts(plan: Plan) -> list[str]:
    """The plan as tokenizer parts: ``<PLAN> <INTENT:…> <TARGET:…> <STEP> text … </PLAN>``
    (specials as ``Special`` markers), the layout the data pipeline writes."""
    from hrm_lsp.tokenizer.base import Special

    parts: list[str] = [Special("<PLAN>")]
    if plan.intent in symbols.INTENTS:
        parts.append(Special(f"<INTENT:{plan.intent}>"))
    if plan.target in symbols.TARGETS:
        parts.append(Special(f"<TARGET:{plan.target}>"))
    for step in plan.steps:
        parts += [Special("<STEP>"), " " + step.strip()]
    parts.append(Special("</PLAN>"))
    return parts


_SENTENCE = re.compile(r"(?<=[.;:])\s+|\n\s*[-*]\s+")


def plan_from_comment(comment: str, intent: str = "ADD", target: str = "func",
                      max_steps: int = 6) -> Plan:
    """A plan from a Go doc comment: each sentence (or bullet) becomes a step."""
    lines = []
    for line in comment.splitlines():
        s = line.strip()
        for marker in ("//", "/*", "*/"):
            s = s.removeprefix(marker) if marker != "*/" else s.removesuffix(marker)
        s = s.strip().lstrip("*").strip()
        if s:
            lines.append(s)
    text = " ".join(lines)
    steps = [p.strip().rstrip(".;:") for p in _SENTENCE.split(text) if p and p.strip()]
    return Plan(intent, target, tuple(s for s in steps if s)[:max_steps])
