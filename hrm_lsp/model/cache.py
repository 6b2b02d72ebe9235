"""Preallocated KV cache for incremental decoding: one slot per (cycle, layer) application.

The HRGC recurrence applies the same weights several times per position; each application
attends over its own earlier outputs, so each needs its own keys and values. All slots live
in two tensors allocated once (``[slots, batch, heads, max_len, head_dim]``) and are written
in place: growing caches with ``torch.cat`` was 51% of decode time in the measured baseline
(../shared/DESIGN.md). ``truncate(n)`` keeps an unchanged document prefix for the next
request; positions past ``length`` are simply overwritten.
"""

from __future__ import annotations

import torch


class CacheError(ValueError):
    """The cache cannot take the requested positions (capacity, batch, truncation)."""


class KVCache:
    """Keys/values of every attention application for positions ``[0, length)``."""

    def __init__(self, n_slots: int, batch: int, n_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if batch < 1 or max_len < 1:
            raise CacheError(f"cache needs batch >= 1 and max_len >= 1 (got {batch}, {max_len})")
        shape = (n_slots, batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def n_slots(self) -> int:
        return self.k.shape[0]

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def check_append(self, batch: int, n_new: int) -> None:
        """Raise CacheError unless ``n_new`` positions of ``batch`` rows fit."""
        if batch != self.batch:
            raise CacheError(f"cache was made for batch {self.batch}, got batch {batch}")
        if self.length + n_new > self.capacity:
            raise CacheError(f"cache holds {self.capacity} positions; {self.length} used, "
                             f"{n_new} more requested (truncate it or make a larger one)")

    def write(self, slot: int, pos: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v [B, H, T, hd] at positions pos.. and return views of positions [0, pos+T)."""
        end = pos + k.shape[2]
        self.k[slot, :, :, pos:end] = k
        self.v[slot, :, :, pos:end] = v
        return self.k[slot, :, :, :end], self.v[slot, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` positions (a common prefix with the next request)."""
        if n < 0:
            raise CacheError(f"cannot truncate to {n} positions")
        self.length = min(self.length, n)

    def reset(self) -> None:
        self.length = 0
