"""Plan extraction (seed 004's plan extractor): intent, target and steps for each document.

* History and PRs: intent from the message (keywords in several languages, conventional-commit
  prefixes), else from the diff's shape; target from the changed top-level declarations;
  steps from the message body (bullets, else sentences), else from the changed names.
* Snapshots: ADD plans from doc comments ("// Parse reads ..." above a func), else the names
  of the declarations in the chunk.

Layout of a plan in a document (the same as ``hrm_lsp.inference.plan.plan_parts``):
``<PLAN> <INTENT:X> <TARGET:y> (<STEP> " step text")* </PLAN>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hrm_lsp.data.goparse import Decl, DeclChange
from hrm_lsp.tokenizer.base import Special

MAX_STEPS = 4
MAX_STEP_CHARS = 160


@dataclass(frozen=True)
class Plan:
    """intent in symbols.INTENTS, target in symbols.TARGETS, short one-line steps."""

    intent: str
    target: str
    steps: tuple[str, ...]

    def parts(self) -> list[str]:
        """Tokenizer parts: specials as ``Special`` markers, each step as " text"."""
        out: list[str] = [Special("<PLAN>"), Special(f"<INTENT:{self.intent}>"),
                          Special(f"<TARGET:{self.target}>")]
        for s in self.steps:
            out += [Special("<STEP>"), " " + s]
        out.append(Special("</PLAN>"))
        return out

    def to_json(self) -> list:
        return [self.intent, self.target, list(self.steps)]

    @classmethod
    def from_json(cls, v: list) -> Plan:
        return cls(v[0], v[1], tuple(v[2]))


# Keywords per intent; the earliest match in the subject wins. Lower-case, word-prefix match
# for Latin scripts, substring match for CJK/Cyrillic stems.
_KEYWORDS = {
    "FIX": ("fix", "bug", "repair", "correct", "resolve", "crash", "panic", "race", "leak",
            "typo", "regression", "revert", "prevent", "avoid", "handle", "workaround", "hotfix",
            "corrige", "arregl", "behoben", "behebt", "korrigiert", "repara"),
    "REFACTOR": ("refactor", "rename", "move", "clean", "simplif", "restructur", "reorganiz",
                 "extract", "inline", "split", "tidy", "deprecat", "unexport", "rewrite",
                 "consolidat", "dedup", "reduce", "replace", "use ", "umbenannt", "refactoriz",
                 "refactoris", "renomm", "chore", "style", "lint", "gofmt", "format"),
    "ADD": ("add", "implement", "introduc", "support", "new", "create", "feat", "allow",
            "enable", "expose", "provide", "initial", "ajout", "agreg", "añad", "adicion",
            "hinzu", "füge", "neu"),
}
_STEMS = {
    "FIX": ("修复", "修正", "修改bug", "исправ", "починить"),
    "REFACTOR": ("重构", "重命名", "рефактор", "переимен"),
    "ADD": ("添加", "新增", "增加", "实现", "добав", "реализ"),
}
_CONVENTIONAL = re.compile(r"^(\w+)(\([^)]*\))?!?:\s")
_CONVENTIONAL_INTENT = {"fix": "FIX", "bugfix": "FIX", "hotfix": "FIX", "feat": "ADD",
                        "feature": "ADD", "refactor": "REFACTOR", "perf": "REFACTOR",
                        "style": "REFACTOR", "chore": "REFACTOR", "cleanup": "REFACTOR"}
_GO_PREFIX = re.compile(r"^[\w./{},*-]+:\s+")  # "net/http: fix ..." (Go's own convention)
_TRAILER = re.compile(r"^(signed-off-by|co-authored-by|change-id|reviewed-on|reviewed-by|"
                      r"run-trybot|trybot-result|tryBot-result|auto-submit|commit-queue|"
                      r"cc|acked-by|tested-by|reported-by|git-svn-id|updates|fixes|closes)\b.*:",
                      re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?;。])\s+")
_URL = re.compile(r"https?://\S+")


def classify_message(message: str) -> str | None:
    """Intent named by a commit message or PR title, or None when it names none."""
    subject = message.strip().splitlines()[0] if message.strip() else ""
    if not subject:
        return None
    m = _CONVENTIONAL.match(subject)
    if m and m.group(1).lower() in _CONVENTIONAL_INTENT:
        return _CONVENTIONAL_INTENT[m.group(1).lower()]
    text = _GO_PREFIX.sub("", subject).lower()
    best: tuple[int, str] | None = None
    for intent, words in _KEYWORDS.items():
        for w in words:
            for hit in re.finditer(r"(?<![\w])" + re.escape(w), text):
                if best is None or hit.start() < best[0]:
                    best = (hit.start(), intent)
                break
    for intent, stems in _STEMS.items():
        for s in stems:
            i = text.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, intent)
    return best[1] if best else None


def classify_change(change: DeclChange, changed_lines: int) -> str:
    """Intent from the diff's shape when the message says nothing."""
    moved = len(change.renamed) + len(change.moved_in)
    if moved and moved >= len(change.added):
        return "REFACTOR"
    if change.added and not change.modified and not change.removed:
        return "ADD"
    if change.removed and not change.added and not change.modified:
        return "REFACTOR"
    if change.added and len(change.added) >= len(change.modified):
        return "ADD"
    return "FIX" if changed_lines <= 12 else "REFACTOR"


def target_of(decls: list[Decl] | tuple[Decl, ...]) -> str:
    """``type`` when type declarations dominate the changed set, else ``func``."""
    types = sum(d.kind == "type" for d in decls)
    funcs = sum(d.kind == "func" for d in decls)
    return "type" if types > funcs else "func"


def _clean_step(s: str) -> str:
    s = " ".join(_URL.sub("", s).split())
    s = s.strip(" -*•:")
    if len(s) > MAX_STEP_CHARS:
        s = s[: MAX_STEP_CHARS].rsplit(" ", 1)[0] + " …"
    return s


def _message_lines(message: str) -> list[str]:
    out = []
    for line in message.strip().splitlines():
        if _TRAILER.match(line.strip()):
            continue
        out.append(line.rstrip())
    return out


def steps_from_message(message: str, max_steps: int = MAX_STEPS) -> list[str]:
    """Steps: the subject, then bullet items of the body, else its first sentences."""
    lines = _message_lines(message)
    if not lines:
        return []
    steps = [_clean_step(_GO_PREFIX.sub("", lines[0]))]
    body = lines[1:]
    bullets = [m.group(1) for m in (_BULLET.match(line) for line in body) if m]
    if bullets:
        steps += [_clean_step(b) for b in bullets]
    else:
        para: list[str] = []
        for line in body:
            if not line.strip():
                if para:
                    break
                continue
            if line.startswith(("    ", "\t")):  # code or output quoted in the message
                continue
            para.append(line.strip())
        steps += [_clean_step(s) for s in _SENTENCE_END.split(" ".join(para)) if s.strip()]
    return [s for s in steps if s][:max_steps]


def _name_step(verb: str, d: Decl) -> str:
    return f"{verb} {d.kind} {d.name}"


def steps_from_change(change: DeclChange, max_steps: int = MAX_STEPS) -> list[str]:
    """Steps from what the diff did to declarations, e.g. "change func (*T).Close"."""
    steps = [_name_step("add", d) for d in change.added]
    steps += [f"rename {o.kind} {o.name} to {n.name}" for o, n in change.renamed]
    steps += [f"move {d.kind} {d.name} from {src}" for d, src in change.moved_in]
    steps += [_name_step("change", a) for _, a in change.modified]
    steps += [_name_step("remove", d) for d in change.removed]
    return steps[:max_steps]


def plan_for_change(message: str, change: DeclChange, changed_lines: int) -> Plan:
    """Plan for a commit or PR file change."""
    intent = classify_message(message) or classify_change(change, changed_lines)
    touched = change.after_decls() or list(change.removed)
    steps = steps_from_message(message) or steps_from_change(change)
    if not steps:
        steps = ["update the file"]
    return Plan(intent, target_of(touched), tuple(steps))


_DOC_LINK = re.compile(r"\[(\*?[\w.]+)\]")  # Go doc links: "[io.Reader]" reads as "io.Reader"


def _first_sentence(doc: str) -> str:
    text = _DOC_LINK.sub(r"\1", " ".join(doc.split()))
    m = _SENTENCE_END.search(text)
    return _clean_step(text[: m.start()] if m else text)


def plan_for_snapshot(decls: tuple[Decl, ...] | list[Decl], package_doc: str = "",
                      max_steps: int = MAX_STEPS) -> Plan:
    """ADD plan for a chunk of a file: first sentences of doc comments, else declaration names."""
    main = [d for d in decls if d.kind in ("func", "type")] or list(decls)
    steps = [_first_sentence(d.doc) for d in main if d.doc]
    if not steps and package_doc:
        steps = [_first_sentence(package_doc)]
    if not steps:
        steps = [f"define {d.kind} {d.name}" for d in main]
    if not steps:
        steps = ["declare package"]
    return Plan("ADD", target_of(main), tuple(s for s in steps if s)[:max_steps])
