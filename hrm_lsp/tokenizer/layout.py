"""The sequence layout of fill-in-the-middle examples, one place for training and inference.

Training (``hrm_lsp.data.dataset``) builds its FIM rows with ``fim_example``; inference builds
its prompts with ``fim_context`` (``hrm_lsp.inference.prompt``) and puts a plan after it only
as ``middle_head`` says (``hrm_lsp.inference.engine``). Layout (docs/data.md, "Sequence
layout"), SPM order (suffix first, what the server sends) and PSM order::

    <FIM_SUFFIX> suffix <FIM_PREFIX> prefix <FIM_MIDDLE> [<PLAN> … </PLAN>] middle <EOT>
    <FIM_PREFIX> prefix <FIM_SUFFIX> suffix <FIM_MIDDLE> [<PLAN> … </PLAN>] middle <EOT>

The plan is there only when the middle has a real one (the function's doc comment, or the
commit message that changed the function); a middle without one follows ``<FIM_MIDDLE>``
directly -- no ``<PLAN></PLAN>`` pair. A request that wants the model to write a plan
continues the prompt with ``<PLAN>``; one with a given plan appends its ids; any other
request starts the code right after ``<FIM_MIDDLE>``.
"""

from __future__ import annotations

from collections.abc import Sequence

FIM_ORDERS = ("spm", "psm")
FIM_LAYOUT = 2  # ModelConfig.fim_layout of models trained on this layout


def fim_context(tok, prefix_ids: Sequence[int], suffix_ids: Sequence[int],
                order: str = "spm") -> list[int]:
    """The ids before the middle, ending with ``<FIM_MIDDLE>``."""
    fp, fs, fm = tok.id_of("<FIM_PREFIX>"), tok.id_of("<FIM_SUFFIX>"), tok.id_of("<FIM_MIDDLE>")
    if order == "spm":
        return [fs, *suffix_ids, fp, *prefix_ids, fm]
    if order == "psm":
        return [fp, *prefix_ids, fs, *suffix_ids, fm]
    raise ValueError(f"FIM order must be one of {FIM_ORDERS}, got {order!r}")


def middle_head(plan_ids: Sequence[int] | None) -> list[int]:
    """What comes between ``<FIM_MIDDLE>`` and the middle's code: the plan's ids
    (``<PLAN> … </PLAN>``) when the middle has one, else nothing."""
    return list(plan_ids) if plan_ids else []


def fim_example(tok, prefix_ids: Sequence[int], middle_ids: Sequence[int],
                suffix_ids: Sequence[int], plan_ids: Sequence[int] | None = None,
                order: str = "spm") -> list[int]:
    """A whole training example: context, optional plan, middle, ``<EOT>``."""
    return [*fim_context(tok, prefix_ids, suffix_ids, order), *middle_head(plan_ids),
            *middle_ids, tok.eot_id]


def comment_plan_ids(tok, comment: str, intent: str = "ADD", target: str = "func") -> list[int]:
    """``<PLAN> … </PLAN>`` ids of the plan a doc comment states, built as inference builds
    it for "Refine this function" and "Generate from comment" (``plan_from_comment``)."""
    from hrm_lsp.inference.plan import plan_from_comment, plan_parts

    return tok.encode_parts(plan_parts(plan_from_comment(comment, intent=intent, target=target)))
