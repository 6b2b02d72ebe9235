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

    def __init__(self, model, tokenizer, capacity: int, runner: Runner | None = None):
        self.model = model
        self.tok = tokenizer
        self.capacity = capacity
        self.runner = runner or TorchRunner(model)
        self.cache = self.runner.new_cache(capacity)
        self.ids: list[int] = []
        window = getattr(getattr(tokenizer, "table", None), "window", None)
        # Byte mode: features of a position depend on the last `window` ids (docs/tokenizers.md).
        self._feature_context = (window + 2) if (model.cfg.byte_features and window) else None

    @property
    def length(self) -> int:
        return len(self.ids)

    def reset(self) -> None:
        self.ids = []
        self.cache.truncate(0)

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

    def extend_all(self, new: list[int]) -> list[torch.Tensor]:
        """Run ``new`` ids; return the logits after each of them (speculative decoding)."""
        if self.length + len(new) > self.capacity:
            raise ValueError(f"{self.length + len(new)} tokens exceed the context ({self.capacity})")
        if self._feature_context is not None or not getattr(self.runner, "batched", False):
            return [self.extend([t])[0] for t in new]
        try:
            logits = self.runner.forward_all(new, self.cache)
        except Exception:
            self.reset()
            raise
        self.ids.extend(new)
        return list(logits)

    def extend(self, new: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``new`` ids after the cached ones; return the last position's outputs."""
        if self.length + len(new) > self.capacity:
            raise ValueError(f"{self.length + len(new)} tokens exceed the context ({self.capacity})")
        feats = {}
        if self._feature_context is not None:
            start = max(0, self.length - self._feature_context)
            window = np.asarray(self.ids[start:] + list(new), dtype=np.int64)
            feats = {k: np.ascontiguousarray(v[-len(new):]) for k, v in self.tok.features(window).items()}
        try:
            logits, refine = self.runner.forward(new, feats, self.cache)
        except Exception:
            self.reset()  # the cache may hold a half-written step
            raise
        self.ids.extend(new)
        return logits, refine


class Runner:
    """How a session runs the model: ``forward(ids, features, cache)`` returns the last
    position's logits (a torch tensor [vocab], for sampling) and refinement logit."""

    def new_cache(self, capacity: int):
        raise NotImplementedError

    def forward(self, ids: list[int], feats: dict, cache):
        raise NotImplementedError


class TorchRunner(Runner):
    """PyTorch on the model's device (CPU, CUDA/ROCm, MPS)."""

    batched = True  # a forward of several new tokens returns each one's logits cheaply

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device

    def new_cache(self, capacity: int):
        return self.model.new_cache(batch=1, max_len=capacity)

    @torch.inference_mode()
    def forward(self, ids, feats, cache):
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        kwargs = {k: torch.from_numpy(v)[None].to(self.device) for k, v in feats.items()}
        out = self.model(x, cache=cache, last_only=True, **kwargs)
        return out.logits[0, -1], out.refine_logit[0, -1]

    @torch.inference_mode()
    def forward_all(self, ids, cache):
        """Logits [len(ids), vocab] after each of ``ids`` (no byte features)."""
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        return self.model(x, cache=cache).logits[0]


class MLXRunner(Runner):
    """The model package's MLX twin (same weights, same math); logits come back as torch
    tensors so sampling and stop rules are shared with the torch path."""

    def __init__(self, torch_model):
        import mlx.core as mx

        from hrm_lsp.model import mlx_hrgc
        from hrm_lsp.model.hrgc import Linear

        self.mx = mx
        cfg = torch_model.cfg
        # Weights already baked to their 4-bit values need no fake quantization in MLX.
        baked = not any(isinstance(m, Linear) and m.qat_bits for m in torch_model.modules())
        if baked and cfg.qat_bits:
            cfg = cfg.replace(qat_bits=0)
        self.model = mlx_hrgc.build_model_mlx(cfg)
        from hrm_lsp.model.weights import state_dict_for_export

        mlx_hrgc.load_arrays_mlx(self.model, {
            k: mx.array(v.detach().float().cpu().numpy())
            for k, v in state_dict_for_export(torch_model).items()})

    def new_cache(self, capacity: int):
        return self.model.new_cache(batch=1, max_len=capacity)

    def forward(self, ids, feats, cache):
        mx = self.mx
        x = mx.array([ids], dtype=mx.int32)
        kwargs = {k: mx.array(v[None].astype(np.int32)) for k, v in feats.items()}
        out = self.model(x, cache=cache, last_only=True, **kwargs)
        logits = np.array(out.logits[0, -1].astype(mx.float32))
        refine = np.array(out.refine_logit[0, -1].astype(mx.float32))
        return torch.from_numpy(logits), torch.from_numpy(refine)


class SessionPool:
    """At most ``size`` sessions, least recently used dropped first (each holds a KV cache)."""

    def __init__(self, model, tokenizer, capacity: int, size: int = 4,
                 runner: Runner | None = None):
        self.model, self.tok, self.capacity, self.size = model, tokenizer, capacity, size
        self.runner = runner or TorchRunner(model)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.last_used = time.monotonic()

    def get(self, key: str | None) -> Session:
        """The session for ``key`` (None: a shared scratch session)."""
        key = "\0scratch" if key is None else key
        s = self._sessions.pop(key, None)
        if s is None:
            s = Session(self.model, self.tok, self.capacity, self.runner)
            while len(self._sessions) >= self.size:
                self._sessions.popitem(last=False)
        self._sessions[key] = s
        return s

    def drop(self, key: str) -> None:
        self._sessions.pop(key, None)
