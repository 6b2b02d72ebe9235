"""GPT baseline: the same embeddings, heads, cache and interface as HRGC, no recurrence.

``H_layers + L_layers`` pre-norm blocks applied once each, so a GPT built from an HRGC preset
has the same parameters (within the ``d_model``-sized final norm vs HRGC's two initial-state
buffers) and every quality or speed claim about HRGC has a side-by-side baseline. The final
RMSNorm is needed because pre-norm leaves the residual stream unnormalised.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from hrm_lsp.model.cache import KVCache
from hrm_lsp.model.config import ModelConfig
from hrm_lsp.model.hrgc import Block, LMBase, ModelOutput, RMSNorm


class GPT(LMBase):
    def __init__(self, cfg: ModelConfig, init: bool = True):
        super().__init__(cfg)
        self.layers = nn.ModuleList(Block(cfg, prenorm=True) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self._init_or_tie(init)

    def forward(self, ids, nibble=None, acc=None, cache: KVCache | None = None,
                last_only: bool = False, lm_head: bool = True) -> ModelOutput:
        """Logits [B, T, V] and refine_logit [B, T] for ids [B, T] (positions after cache);
        ``lm_head=False`` as in HRGC (``hidden`` instead of logits)."""
        pos = self.check_inputs(ids, cache)
        T = ids.shape[1]
        cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        x = self.embed_inputs(ids, nibble, acc)  # [B, T, D]
        ckpt = self.cfg.grad_checkpointing and cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if ckpt:
                x = checkpoint(layer, x, cos, sin, pos, None, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, pos, cache, i)
        if cache is not None:
            cache.advance(T)
        z = self.norm(x)
        logits, refine_logit = self.heads(z, last_only, lm_head)
        return ModelOutput(logits, refine_logit, None, None if lm_head else z)
