"""lsp_* builders: inference results -> lsprotocol types. No I/O, no model calls.

Kept apart from the handlers (as conversions are in jedi-language-server's utils) so
that the shapes clients see are easy to read and to test.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from hrm_lsp.server.positions import LineIndex

_MARK = {True: "✓", False: "✗"}


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` without surrounding whitespace."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def validation_summary(validation: Any, requested: tuple[str, ...], iterations: int) -> str:
    """'gofmt ✓ vet ✓, refined 2×' from a ValidationResult and the stages asked for.

    A stage passed if validation got beyond it, or reached it with everything ok; it
    failed if validation stopped there with errors; skipped stages say why in brief.
    """
    if validation is None:
        return "not validated"
    order = [s for s in ("syntax", "gofmt", "vet", "test") if s in requested]
    skipped = dict(getattr(validation, "skipped", None) or {})
    last = getattr(validation, "stage", None)
    ok = bool(getattr(validation, "ok", False))
    parts = []
    for stage in order:
        if stage in skipped:
            parts.append(f"{stage} –")
        elif last in order and order.index(stage) < order.index(last):
            parts.append(f"{stage} {_MARK[True]}")
        elif stage == last:
            parts.append(f"{stage} {_MARK[ok]}")
    if getattr(validation, "unavailable", None):
        parts.append("vet unavailable")
    text = " ".join(parts) if parts else "not validated"
    if iterations:
        text += f", refined {iterations}×"
    return text


def plan_markdown(plan: Any) -> str:
    """The plan as a Markdown block: intent and target, then numbered steps."""
    if plan is None:
        return ""
    intent = getattr(plan, "intent", "") or ""
    target = getattr(plan, "target", "") or ""
    lines = [f"**Plan** {intent} {target}".rstrip()]
    for i, step in enumerate(getattr(plan, "steps", None) or [], 1):
        lines.append(f"{i}. {step}")
    return "\n".join(lines)


def plan_one_line(plan: Any) -> str:
    """'ADD func · parse config, validate' (the plan's own one_line when it has one)."""
    if plan is None:
        return ""
    one_line = getattr(plan, "one_line", None)
    if callable(one_line):
        return str(one_line())
    steps = ", ".join(getattr(plan, "steps", None) or [])
    head = f"{getattr(plan, 'intent', '')} {getattr(plan, 'target', '')}".strip()
    return f"{head} · {steps}" if steps else head


def completion_documentation(comp: Any, requested: tuple[str, ...]) -> str:
    """Markdown shown beside a completion item: plan, validation status, the code."""
    parts = []
    plan_md = plan_markdown(getattr(comp, "plan", None))
    if plan_md:
        parts.append(plan_md)
    summary = validation_summary(getattr(comp, "validation", None), requested,
                                 int(getattr(comp, "iterations", 0) or 0))
    parts.append(f"**Validation** {summary}")
    parts.append("```go\n" + comp.text.rstrip("\n") + "\n```")
    return "\n\n".join(parts)


def word_start(index: LineIndex, offset: int) -> int:
    """Offset where the identifier ending at ``offset`` starts (clients filter on it)."""
    text = index.text
    i = offset
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    return i


def lsp_range(index: LineIndex, start: int, end: int, encoding: str) -> types.Range:
    """A Range for ``str`` offsets [start, end) in the client's encoding."""
    a = index.position(start, encoding)
    b = index.position(end, encoding)
    return types.Range(types.Position(a.line, a.character), types.Position(b.line, b.character))


def lsp_completion_item(comp: Any, index: LineIndex, offset: int, encoding: str,
                        requested: tuple[str, ...]) -> types.CompletionItem | None:
    """One item: label = first line, textEdit from the word start to the cursor."""
    if not comp.text.strip():
        return None
    start = word_start(index, offset)
    typed = index.text[start:offset]
    label = first_line(typed + comp.text)
    return types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Snippet if "\n" in comp.text.strip("\n") else types.CompletionItemKind.Text,
        detail=plan_one_line(getattr(comp, "plan", None)) or None,
        documentation=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                          value=completion_documentation(comp, requested)),
        filter_text=typed + first_line(comp.text) if typed else None,
        sort_text="0",
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=lsp_range(index, start, offset, encoding),
                                 new_text=typed + comp.text),
    )


def lsp_inline_item(comp: Any, index: LineIndex, offset: int, encoding: str) -> types.InlineCompletionItem | None:
    """Ghost text inserted at the cursor."""
    if not comp.text.strip():
        return None
    return types.InlineCompletionItem(insert_text=comp.text,
                                      range=lsp_range(index, offset, offset, encoding))


def lsp_workspace_edit(uri: str, version: int, index: LineIndex, start: int, end: int,
                       new_text: str, encoding: str, versioned: bool) -> types.WorkspaceEdit:
    """A one-edit WorkspaceEdit; versioned (documentChanges) when the client supports it."""
    edit = types.TextEdit(range=lsp_range(index, start, end, encoding), new_text=new_text)
    if versioned:
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
            edits=[edit])])
    return types.WorkspaceEdit(changes={uri: [edit]})
