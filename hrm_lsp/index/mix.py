"""Interpolating the model's next-token distribution with the index's ∞-gram estimate.

``p(t) = (1 - λ) · p_model(t) + λ · count(t) / total``, with ``λ`` looked up by the
estimate's tier group (local: document and package; repo: workspace; lib: stdlib and module
cache), its match length and its occurrence count (nested cache / infini-gram interpolation:
a long match seen several times in the user's own code is worth more than a short one in
the standard library). The table is fitted by EM on a dev split cut from the training
corpora (``benchmarks/index_mix.py``; never on ``shared/heldout``) and shipped as
``mix_weights.json`` next to this file. ``index_only`` estimates use a second table that
mixes the ∞-gram with a unigram instead of the model (for the ``index`` source's scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

GROUPS = {"document": 0, "package": 0, "workspace": 1, "stdlib": 2, "modcache": 2}
GROUP_NAMES = ("local", "repo", "lib")
LENGTH_EDGES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)  # bucket b: EDGES[b] <= length < EDGES[b+1]
COUNT_EDGES = (1, 2, 4, 16)
WEIGHTS_FILE = Path(__file__).with_name("mix_weights.json")


def bucket(value: int, edges: tuple[int, ...]) -> int:
    b = 0
    while b + 1 < len(edges) and value >= edges[b + 1]:
        b += 1
    return b


def cell(tier: str, length: int, count: int) -> tuple[int, int, int]:
    return GROUPS.get(tier, 2), bucket(length, LENGTH_EDGES), bucket(count, COUNT_EDGES)


@dataclass(frozen=True)
class MixWeights:
    """λ per (tier group, length bucket, count bucket)."""

    model: np.ndarray  # [3, L, C]: weight of the ∞-gram against the model
    unigram: np.ndarray  # [3, L, C]: weight of the ∞-gram against a unigram (index alone)
    source: str = "default"
    # Tokens of match length each tier is worth on top of its match (Query.estimate).
    tier_bonus: dict = field(default_factory=dict)

    def lam(self, tier: str, length: int, count: int, against: str = "model") -> float:
        g, lb, cb = cell(tier, length, count)
        table = self.model if against == "model" else self.unigram
        return float(table[g, lb, cb])

    def to_json(self) -> dict:
        return {"format": 1, "groups": list(GROUP_NAMES), "length_edges": list(LENGTH_EDGES),
                "count_edges": list(COUNT_EDGES), "model": self.model.round(4).tolist(),
                "unigram": self.unigram.round(4).tolist(), "source": self.source,
                "tier_bonus": dict(self.tier_bonus)}

    @classmethod
    def from_json(cls, data: dict) -> MixWeights:
        shape = (len(GROUP_NAMES), len(LENGTH_EDGES), len(COUNT_EDGES))
        if (data.get("format") != 1 or list(data.get("length_edges", [])) != list(LENGTH_EDGES)
                or list(data.get("count_edges", [])) != list(COUNT_EDGES)):
            raise ValueError("mix weights were fitted for other buckets")
        model = np.asarray(data["model"], dtype=np.float64)
        uni = np.asarray(data["unigram"], dtype=np.float64)
        if model.shape != shape or uni.shape != shape:
            raise ValueError(f"mix weights must have shape {shape}")
        if not (np.all((model >= 0) & (model <= 1)) and np.all((uni >= 0) & (uni <= 1))):
            raise ValueError("mix weights must lie in [0, 1]")
        bonus = {str(k): float(v) for k, v in dict(data.get("tier_bonus", {})).items()}
        return cls(model, uni, str(data.get("source", "")), bonus)

    @classmethod
    def prior(cls) -> MixWeights:
        """Before fitting: trust grows with match length (used only without a weights file)."""
        shape = (len(GROUP_NAMES), len(LENGTH_EDGES), len(COUNT_EDGES))
        lengths = np.asarray(LENGTH_EDGES, dtype=np.float64)[None, :, None]
        lam = np.broadcast_to(lengths / (lengths + 6.0), shape).copy()
        return cls(lam, np.maximum(lam, 0.5), "prior",
                   {"document": 3.0, "package": 2.0, "workspace": 1.0})


@lru_cache(maxsize=1)
def default_weights() -> MixWeights:
    """The shipped table (``mix_weights.json``), else the prior."""
    try:
        return MixWeights.from_json(json.loads(WEIGHTS_FILE.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return MixWeights.prior()

