"""Next-token choice: greedy by default, temperature + nucleus (top-p) when asked; a
repetition penalty for multi-line code."""

from __future__ import annotations

import torch


def repeat_penalized(logits: torch.Tensor, seen: list[int], theta: float) -> torch.Tensor:
    """``logits`` with the ``seen`` ids' scores pushed down by ``theta`` (divided where
    positive, multiplied where negative); unchanged for ``theta`` 1 or nothing seen."""
    if theta == 1.0 or not seen:
        return logits
    ids = torch.tensor(sorted(set(seen)), dtype=torch.long, device=logits.device)
    lg = logits[ids]
    out = logits.clone()
    out[ids] = torch.where(lg > 0, lg / theta, lg * theta)
    return out


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
                generator: torch.Generator | None = None,
                banned: torch.Tensor | None = None) -> int:
    """Pick one id from ``logits`` [vocab]. ``banned`` ids (e.g. pad) are never chosen."""
    if banned is not None:
        logits = logits.index_fill(0, banned.to(logits.device), float("-inf"))
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cut = cum - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(cut, 0.0)
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))
