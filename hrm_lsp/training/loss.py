"""The multi-task loss and the targets it needs, derived from token ids alone.

Shards store only ids (docs/architecture.md, "data -> training"), so everything the loss
needs beyond next-token targets is recomputed from them here, once, in numpy, and shared by
the torch and MLX backends:

- plan tokens: from ``<PLAN>`` to ``</PLAN>`` inclusive. A window may start inside a plan;
  then the positions before the first ``</PLAN>`` (with no ``<PLAN>`` before it) are plan.
- refinement targets: at every input position holding ``<VALIDATE>``, 1 when the next token is
  ``<SYNTAX_OK>`` (the code before it passed the validators), else 0. The refinement head
  reads z_H at that position, i.e. after it has seen the code and the ``<VALIDATE>`` marker.
- code tokens: every other non-pad target. Pad (id 0) is never a target.

``multitask`` loss = (plan_weight + code_weight) * token-weighted mean CE
+ refine_weight * mean BCE(refinement), where the token-weighted mean gives each plan target
weight ``plan_weight`` and each code target ``code_weight``:
``(pw·ΣCE(plan) + cw·ΣCE(code)) / (pw·n_plan + cw·n_code)``. With seed 004's 0.4/0.4 a plan
token counts exactly as much as a code token (per-group means gave the 3% of targets that are
plan tokens as much weight as all code tokens together, ~30x each: issue 14). A refinement
term with no positions contributes 0. ``lm`` loss = mean CE over all non-pad targets (seed 000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hrm_lsp.training.recipe import LossSection


@dataclass(frozen=True)
class SymbolIds:
    """Ids of the symbols the loss looks at, taken from the tokenizer."""

    pad: int
    plan_open: int
    plan_close: int
    validate: int
    syntax_ok: int

    @classmethod
    def from_tokenizer(cls, tok) -> SymbolIds:
        return cls(
            pad=tok.pad_id,
            plan_open=tok.id_of("<PLAN>"),
            plan_close=tok.id_of("</PLAN>"),
            validate=tok.id_of("<VALIDATE>"),
            syntax_ok=tok.id_of("<SYNTAX_OK>"),
        )


@dataclass(frozen=True)
class Targets:
    """Inputs and loss targets for one micro-batch, all numpy, shapes [B, T]."""

    inputs: np.ndarray  # int64 ids fed to the model
    targets: np.ndarray  # int64 next-token ids
    plan_mask: np.ndarray  # bool: target is a plan token
    code_mask: np.ndarray  # bool: target is a non-pad, non-plan token
    refine_mask: np.ndarray  # bool: input position holds <VALIDATE>
    refine_target: np.ndarray  # float32 0/1 at refine_mask positions

    @property
    def n_tokens(self) -> int:
        """Number of non-pad targets (what tokens/s and bits/byte count)."""
        return int(self.plan_mask.sum() + self.code_mask.sum())


def plan_mask(ids: np.ndarray, plan_open: int, plan_close: int) -> np.ndarray:
    """Bool mask [B, T] of positions inside ``<PLAN> ... </PLAN>`` (markers included)."""
    ids = np.asarray(ids)
    _, T = ids.shape
    is_open = ids == plan_open
    is_close = ids == plan_close
    marker = is_open | is_close
    pos = np.arange(T)
    # Index of the last marker at or before t (-1: none yet) ...
    last = np.maximum.accumulate(np.where(marker, pos, -1), axis=1)
    last_is_open = (last >= 0) & np.take_along_axis(is_open, np.maximum(last, 0), axis=1)
    # ... and of the first marker at or after t (T: none), for windows that start mid-plan.
    nxt = np.minimum.accumulate(np.where(marker, pos, T)[:, ::-1], axis=1)[:, ::-1]
    next_is_close = (nxt < T) & np.take_along_axis(is_close, np.minimum(nxt, T - 1), axis=1)
    return last_is_open | is_close | ((last < 0) & next_is_close)


def make_targets(ids: np.ndarray, sym: SymbolIds) -> Targets:
    """Split a batch window ``ids`` [B, T+1] into model inputs and every loss target."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"batch ids must be [B, T+1] with T >= 1, got shape {ids.shape}")
    inputs, targets = ids[:, :-1], ids[:, 1:]
    in_plan = plan_mask(ids, sym.plan_open, sym.plan_close)[:, 1:]
    real = targets != sym.pad
    refine_mask = inputs == sym.validate
    refine_target = (refine_mask & (targets == sym.syntax_ok)).astype(np.float32)
    return Targets(
        inputs=np.ascontiguousarray(inputs),
        targets=np.ascontiguousarray(targets),
        plan_mask=in_plan & real,
        code_mask=~in_plan & real,
        refine_mask=refine_mask,
        refine_target=refine_target,
    )


# --- torch --------------------------------------------------------------------------------

HEAD_CHUNK = 1024  # rows of the output head computed at once by the fused loss


def token_weights(batch: dict, cfg: LossSection):
    """Per-target weights [B, T] of the LM part of the loss: it is ``Σ w · CE``.

    ``lm``: ``1/n`` on every non-pad target. ``multitask``: ``(pw + cw) · w_t / Σ w_t`` with
    ``w_t = pw`` on plan targets and ``cw`` on code targets (module docstring)."""
    plan_m, code_m = batch["plan_mask"], batch["code_mask"]
    if cfg.mode == "lm":
        all_m = (plan_m | code_m).float()
        return all_m / all_m.sum().clamp(min=1)
    pw, cw = cfg.plan_weight, cfg.code_weight
    w = pw * plan_m.float() + cw * code_m.float()
    return (pw + cw) * w / w.sum().clamp(min=1e-9)


class _FusedLinearCE:
    """Output head + cross-entropy in chunks of rows, gradients computed in the forward.

    The [N, V] logits never exist whole: each chunk's logits are made in fp32, reduced to
    its CE and turned into its gradient at once, ``(softmax - onehot) · w``, which is where
    the loss's weights come in (known before the forward, ``token_weights``). Backward only
    scales the stored gradients by the upstream scalar. Saves the log-softmax, its backward
    and the [N, V] fills and copies of the unfused loss (docs/training.md, "Throughput")."""

    @staticmethod
    def run(z, weight, targets, w, chunk: int, need_grad: bool):
        import torch

        N = z.shape[0]
        ce = torch.empty(N, dtype=torch.float32, device=z.device)
        zf, wf = z.float(), weight.float()
        gz = torch.empty_like(zf) if need_grad else None
        gw = torch.zeros_like(wf) if need_grad else None
        for a in range(0, N, chunk):
            b = min(N, a + chunk)
            logits = zf[a:b] @ wf.T  # [n, V]
            t = targets[a:b]
            lse = torch.logsumexp(logits, dim=-1)
            ce[a:b] = lse - logits.gather(1, t[:, None]).squeeze(1)
            if need_grad:
                p = torch.exp_(logits.sub_(lse[:, None]))  # softmax, in place
                p[torch.arange(b - a, device=z.device), t] -= 1.0
                p.mul_(w[a:b, None])
                gz[a:b] = p @ wf
                gw.addmm_(p.T, zf[a:b])
        return ce, gz, gw


def _fused_fn():
    import torch

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, weight, targets, w, chunk):
            ce, gz, gw = _FusedLinearCE.run(z, weight, targets, w, chunk, need_grad=True)
            ctx.save_for_backward(gz.to(z.dtype), gw.to(weight.dtype))
            ctx.mark_non_differentiable(ce)
            return (ce * w).sum(), ce

        @staticmethod
        def backward(ctx, grad_loss, _grad_ce):
            gz, gw = ctx.saved_tensors
            return gz * grad_loss, gw * grad_loss, None, None, None

    return Fused


_FUSED = None


def fused_linear_ce(z, weight, targets, w, chunk: int = HEAD_CHUNK):
    """(Σ w·CE, CE per row) of ``z @ weight.T`` against ``targets``; z [N, D], weight [V, D],
    targets [N], w [N]. Differentiable in z and weight (only through the weighted sum)."""
    import torch

    global _FUSED
    if not (torch.is_grad_enabled() and (z.requires_grad or weight.requires_grad)):
        with torch.no_grad():
            ce = _FusedLinearCE.run(z, weight, targets, w, chunk, need_grad=False)[0]
        return (ce * w).sum(), ce
    if _FUSED is None:
        _FUSED = _fused_fn()
    return _FUSED.apply(z, weight, targets, w.float(), chunk)


def torch_loss(logits, refine_logit, batch: dict, cfg: LossSection, head_weight=None):
    """Training loss for one micro-batch on torch; returns (loss, parts).

    ``parts`` are detached 0-d tensors (plan, code, refine or lm, and nats: the summed CE
    over non-pad targets), left on the device so that a step needs no host sync.

    ``batch`` holds the Targets fields as tensors on the model's device. With
    ``head_weight`` (the output head's [V, D] weight), ``logits`` is instead the hidden state
    [B, T, D] the head reads (``model(..., lm_head=False).hidden``), and the head and the CE
    run fused and chunked (``fused_linear_ce``): the same loss, without the [B, T, V] logits.
    """
    import torch.nn.functional as F

    w = token_weights(batch, cfg)
    plan_m, code_m = batch["plan_mask"], batch["code_mask"]
    B, T = plan_m.shape
    if head_weight is not None:
        lm, ce = fused_linear_ce(logits.reshape(B * T, -1), head_weight,
                                 batch["targets"].reshape(-1), w.reshape(-1))
    else:
        V = logits.shape[-1]
        # fp32 for the softmax even under bf16 autocast: the CE of a 50k vocabulary in bf16
        # is noticeably coarser.
        ce = F.cross_entropy(logits.float().reshape(B * T, V), batch["targets"].reshape(-1),
                             reduction="none")
        lm = (ce * w.reshape(-1)).sum()
    ce = ce.reshape(B, T).detach()
    parts: dict = {}
    if cfg.mode == "lm":
        loss = lm
        parts["lm"] = lm.detach()
        # The refinement head takes no part in an LM loss; a zero-weighted term keeps it in the
        # graph so DDP, which expects a gradient for every parameter, does not stall.
        loss = loss + 0.0 * refine_logit.float().sum()
    else:
        plan = (ce * plan_m).sum() / plan_m.sum().clamp(min=1)
        code = (ce * code_m).sum() / code_m.sum().clamp(min=1)
        ref_m = batch["refine_mask"]
        # Always touch refine_logit so DDP sees the refinement head used on every rank.
        bce = F.binary_cross_entropy_with_logits(
            refine_logit.float(), batch["refine_target"], reduction="none"
        )
        refine = (bce * ref_m).sum() / ref_m.sum().clamp(min=1)
        loss = lm + cfg.refine_weight * refine
        parts.update(plan=plan, code=code, refine=refine)
    out = {k: v.detach() for k, v in parts.items()}
    out["nats"] = (ce * (plan_m | code_m)).sum()
    return loss, out


def to_torch_batch(t: Targets, device) -> dict:
    """Targets -> dict of tensors on ``device`` (non-blocking copies from pinned CPU)."""
    import torch

    def put(a, dtype):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype, non_blocking=True)

    return {
        "inputs": put(t.inputs, torch.long),
        "targets": put(t.targets, torch.long),
        "plan_mask": put(t.plan_mask, torch.bool),
        "code_mask": put(t.code_mask, torch.bool),
        "refine_mask": put(t.refine_mask, torch.bool),
        "refine_target": put(t.refine_target, torch.float32),
    }
