"""Choosing the single line to show among every candidate a request has: a linear reranker.

A single-line request gathers candidates from three places: the mixture's greedy lines
after its likeliest first tokens (``LINE_CANDIDATES``), the index's greedy ∞-gram lines
(``INDEX_CANDIDATES``), and lines copied whole from where the context occurs in the user's
file, package and workspace (``Query.copies``). Each candidate is described by the
``FEATURES`` below and scored ``w · f``; the best that the gate would show wins.

The weights ``w`` are fitted (``fit``: a conditional logit, i.e. a softmax over one
request's candidates, the one equal to the original line as the target) on holes cut from
training-corpus repositories that the dev split does not use, never on ``shared/heldout``
(``benchmarks/line_rerank.py --fit``), and shipped as ``rerank_weights.json`` next to this
file, one vector per source (``both`` uses the model's features, ``index`` has none).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

FEATURES = (
    "idx_mean",  # mean log-probability the index gives the candidate's tokens
    "idx_sum",  # their sum / 10
    "suffix",  # mean log-probability the index gives the text after the hole, after it
    "mix_first",  # log-probability of its first token under the mixture (the model's say)
    "mix_mean",  # mean mixture log-probability, for the mixture's own lines (else 0)
    "is_mix",  # one of the mixture's greedy lines
    "is_greedy",  # one of the index's greedy lines
    "is_copy",  # copied whole from an occurrence of the context
    "copy_count",  # log(1 + occurrences it was copied from)
    "copy_len",  # log(1 + the longest context match it was copied after) / 4
    "copy_local",  # copied from the open document or its package
    "in_doc",  # the whole line occurs elsewhere in the document
    "tokens",  # log(1 + its length in tokens)
    "shown",  # the gate would show it
    "model_mean",  # mean mixture log-probability of its tokens, where the engine scored it
    "has_model",  # ... and whether it did
    "near",  # 1 / log(2 + tokens from its nearest copied occurrence above the cursor), else 0
)
WEIGHTS_FILE = Path(__file__).with_name("rerank_weights.json")


@dataclass
class LineCandidate:
    """One single-line candidate and what is known about it."""

    text: str
    reason: str
    ids: list[int]
    idx_logp: list[float] = field(default_factory=list)
    mix_logp: list[float] | None = None  # only for the mixture's lines
    greedy: bool = False
    copies: int = 0
    copy_len: int = 0
    copy_local: bool = False
    suffix: float = 0.0
    mix_first: float = 0.0
    in_doc: bool = False
    shown: bool = True
    model_logp: list[float] | None = None  # the mixture's log-probabilities, when scored
    distance: int = -1  # tokens from the nearest occurrence it was copied after (-1: none above)

    def features(self) -> np.ndarray:
        idx = self.idx_logp or [0.0]
        mix = self.mix_logp
        return np.array([
            sum(idx) / len(idx), sum(idx) / 10.0, self.suffix, self.mix_first,
            (sum(mix) / len(mix)) if mix else 0.0, float(mix is not None), float(self.greedy),
            float(self.copies > 0), math.log1p(self.copies), math.log1p(self.copy_len) / 4.0,
            float(self.copy_local), float(self.in_doc), math.log1p(len(self.ids)),
            float(self.shown), _mean(self.model_logp), float(self.model_logp is not None),
            1.0 / math.log(2 + self.distance) if self.distance >= 0 else 0.0],
            dtype=np.float64)


def _mean(xs: list[float] | None) -> float:
    return sum(xs) / len(xs) if xs else 0.0


@dataclass(frozen=True)
class Reranker:
    weights: dict[str, np.ndarray]  # source -> [len(FEATURES)]
    source: str = ""

    def scores(self, sources: str, cands: list[LineCandidate]) -> np.ndarray:
        w = self.weights.get(sources)
        if w is None:
            w = self.weights.get("both", np.zeros(len(FEATURES)))
        return np.array([float(c.features() @ w) for c in cands])

    def to_json(self) -> dict:
        return {"format": 1, "features": list(FEATURES), "source": self.source,
                "weights": {k: np.round(v, 4).tolist() for k, v in self.weights.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Reranker:
        if data.get("format") != 1 or list(data.get("features", [])) != list(FEATURES):
            raise ValueError("rerank weights were fitted for other features")
        weights = {str(k): np.asarray(v, dtype=np.float64) for k, v in data["weights"].items()}
        if any(v.shape != (len(FEATURES),) or not np.all(np.isfinite(v)) for v in weights.values()):
            raise ValueError(f"rerank weights must be {len(FEATURES)} finite numbers per source")
        return cls(weights, str(data.get("source", "")))

    @classmethod
    def prior(cls) -> Reranker:
        """Before fitting: the engine's earlier rule (suffix consistency plus mean
        log-probability), copies ranked by how often they occur."""
        w = np.zeros(len(FEATURES))
        for name, v in (("suffix", 1.0), ("idx_mean", 1.0), ("copy_count", 0.1), ("shown", 5.0)):
            w[FEATURES.index(name)] = v
        return cls({"both": w, "index": w.copy()}, "prior")


@lru_cache(maxsize=1)
def default_reranker() -> Reranker:
    """The shipped weights (``rerank_weights.json``), else the prior."""
    try:
        return Reranker.from_json(json.loads(WEIGHTS_FILE.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return Reranker.prior()


def fit(groups: list[tuple[np.ndarray, np.ndarray]], l2: float = 1e-3, steps: int = 3000,
        lr: float = 0.05) -> np.ndarray:
    """Weights of a conditional logit: for each group (features [n, F], labels [n] with at
    least one 1) maximise the log of the softmax mass on its positive candidates. Adam on the
    mean loss plus ``l2`` · |w|²; deterministic."""
    groups = [(x, y.astype(bool)) for x, y in groups if y.any() and len(y) > 1]
    if not groups:
        raise ValueError("no request has both a right and a wrong candidate to learn from")
    f = groups[0][0].shape[1]
    w, m, v = np.zeros(f), np.zeros(f), np.zeros(f)
    for t in range(1, steps + 1):
        g = 2 * l2 * w
        for x, y in groups:
            s = x @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            q = p * y / max(1e-300, float(p[y].sum()))
            g += (p - q) @ x / len(groups)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return w


def loss(groups: list[tuple[np.ndarray, np.ndarray]], w: np.ndarray) -> float:
    """Mean negative log softmax mass on the positives (the groups ``fit`` learns from)."""
    total, n = 0.0, 0
    for x, y in groups:
        y = y.astype(bool)
        if not y.any() or len(y) < 2:
            continue
        s = x @ w
        lse = s.max() + math.log(float(np.exp(s - s.max()).sum()))
        pos = s[y].max() + math.log(float(np.exp(s[y] - s[y].max()).sum()))
        total += lse - pos
        n += 1
    return total / max(1, n)
