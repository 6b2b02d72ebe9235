"""A per-document decoding session: the token ids the model has seen and their KV cache.

A new request ``sync``s the session to its prompt: the longest common prefix of the old and
new ids stays in the cache (``KVCache.truncate``) and only the rest runs. Results do not
depend on what was cached before (warm == cold; tested).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch


class Session:
    """Token ids + KV cache of one document (batch 1)."""

    def __init__(self, model, tokenizer, capacity: int):
        self.model = model
        self.tok = tokenizer
        self.capacity = capacity
        self.cache = model.new_cache(batch=1, max_len=capacity)
        self.ids: list[int] = []
        window = getattr(getattr(tokenizer, "table", None), "window", None)
        # Byte mode: features of a position depend on the last `window` ids (docs/tokenizers.md).
        self._feature_context = (window + 2) if (model.cfg.byte_features and window) else None
        self.device = next(model.parameters()).device

    @property
    def length(self) -> int:
        return len(self.ids)

    def reset(self) -> None:
        self.ids = []
        self.cache.reset()

    def common_prefix(self, ids: list[int]) -> int:
        """Length of the longest common prefix of the cached ids and ``ids``."""
        n = min(len(self.ids), len(ids), self.cache.length)
        old = self.ids
        i = 0
        # Compare in blocks first: prompts are long and mostly equal.
        while i + 256 <= n and old[i:i + 256] == ids[i:i + 256]:
            i += 256
        while i < n and old[i] == ids[i]:
            i += 1
        return i

    def sync(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Make the session hold exactly ``ids``; return (logits [V], refine_logit, reused)."""
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) > self.capacity:
            raise ValueError(f"prompt of {len(ids)} tokens exceeds the context ({self.capacity})")
        keep = min(self.common_prefix(ids), len(ids) - 1)  # run at least one token for logits
        self.cache.truncate(keep)
        del self.ids[keep:]
        logits, refine = self.extend(ids[keep:])
        return logits, refine, keep

    @torch.inference_mode()
    def extend(self, new: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``new`` ids after the cached ones; return the last position's outputs."""
        if self.length + len(new) > self.capacity:
            raise ValueError(f"{self.length + len(new)} tokens exceed the context ({self.capacity})")
        x = torch.tensor([new], dtype=torch.long, device=self.device)
        kwargs = {}
        if self._feature_context is not None:
            start = max(0, self.length - self._feature_context)
            window = np.asarray(self.ids[start:] + list(new), dtype=np.int64)
            feats = self.tok.features(window)
            kwargs = {k: torch.from_numpy(np.ascontiguousarray(v[-len(new):]))[None].to(self.device)
                      for k, v in feats.items()}
        try:
            out = self.model(x, cache=self.cache, last_only=True, **kwargs)
        except Exception:
            self.reset()  # the cache may hold a half-written step
            raise
        self.ids.extend(new)
        return out.logits[0, -1], out.refine_logit[0, -1]


class SessionPool:
    """At most ``size`` sessions, least recently used dropped first (each holds a KV cache)."""

    def __init__(self, model, tokenizer, capacity: int, size: int = 4):
        self.model, self.tok, self.capacity, self.size = model, tokenizer, capacity, size
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.last_used = time.monotonic()

    def get(self, key: str | None) -> Session:
        """The session for ``key`` (None: a shared scratch session)."""
        key = "\0scratch" if key is None else key
        s = self._sessions.pop(key, None)
        if s is None:
            s = Session(self.model, self.tok, self.capacity)
            while len(self._sessions) >= self.size:
                self._sessions.popitem(last=False)
        self._sessions[key] = s
        return s

    def drop(self, key: str) -> None:
        self._sessions.pop(key, None)
