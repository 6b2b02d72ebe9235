"""Build the model's input for a cursor position: fill-in-the-middle, suffix first (SPM).

Layout (``hrm_lsp.tokenizer.layout``, shared with training; docs/inference.md)::

    <FIM_SUFFIX> suffix <FIM_PREFIX> prefix <FIM_MIDDLE> [<PLAN> … </PLAN>] code … <EOT>

Why suffix first: while the user types, the text after the cursor stays the same and the
text before it only grows at its end, so with the suffix first every keystroke keeps the
whole cached prompt but its last token or two (the session's longest common prefix). In the
PSM order (prefix, then suffix) each keystroke would shift the suffix and re-run all of it.

Context beyond the window is cut so that it stays stable while typing: the suffix keeps its
first lines; the prefix's start moves only in chunks of a quarter window (in characters), at
a line start, so consecutive requests share the same first tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from hrm_lsp.tokenizer.base import Tokenizer
from hrm_lsp.tokenizer.layout import fim_context

TOKEN_CHUNK = 64  # when still too long in tokens, the prefix loses this many at a time
SUFFIX_SHARE = 0.25  # share of the prompt budget the suffix may take


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    prefix: str  # the prefix text actually used (for logs/tests)
    suffix: str  # the suffix text actually used
    truncated: bool


def _chars_per_token(tok: Tokenizer) -> float:
    return 1.0 if tok.kind == "byte" else 4.0


def fim_prompt(tok: Tokenizer, prefix: str, suffix: str, budget: int) -> Prompt:
    """Prompt ids ending with ``<FIM_MIDDLE>``, at most ``budget`` tokens long."""
    if budget < 8:
        raise ValueError(f"prompt budget {budget} is too small")
    cpt = _chars_per_token(tok)
    inner = budget - 3  # the three FIM markers
    s_budget = max(1, int(inner * SUFFIX_SHARE))
    truncated = False

    # Suffix: its first lines (stable while typing before it).
    suf = suffix
    max_chars = int(s_budget * cpt * 1.5)
    if len(suf) > max_chars:
        cut = suf.rfind("\n", 0, max_chars)
        suf = suf[: cut + 1 if cut > 0 else max_chars]
        truncated = True
    s_ids = tok.encode(suf) if suf else []
    if len(s_ids) > s_budget:
        s_ids = s_ids[:s_budget]
        truncated = True

    # Prefix: its last part. The window's start moves in chunks of a quarter window (then to
    # the next line start), so it stays put while the user types and the cache stays valid.
    p_budget = inner - len(s_ids)
    pre = prefix
    target = int(p_budget * cpt)
    if len(pre) > target:
        chunk = max(64, target // 4)
        start = -(-(len(pre) - target) // chunk) * chunk
        nl = pre.find("\n", start)
        start = nl + 1 if 0 <= nl < len(pre) - 1 else start
        pre = pre[start:]
        truncated = True
    p_ids = tok.encode(pre) if pre else []
    if len(p_ids) > p_budget:
        drop = len(p_ids) - p_budget
        drop = -(-drop // TOKEN_CHUNK) * TOKEN_CHUNK
        p_ids = p_ids[drop:]
        truncated = True

    ids = fim_context(tok, p_ids, s_ids, "spm")  # the layout training uses (tokenizer/layout.py)
    return Prompt(ids, pre, suf, truncated)
