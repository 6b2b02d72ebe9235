"""Single-line candidates copied from the user's code (``Query.copies``, checked against a
brute-force reading of real Go) and the reranker that chooses among them (its fit, its
weights file, and the engine's choice on a real tiny model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrm_lsp.index import RepoIndex
from hrm_lsp.inference import rerank
from hrm_lsp.inference.rerank import FEATURES, LineCandidate, Reranker, fit, loss
from hrm_lsp.tokenizer.byte import ByteTokenizer


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer()


def brute_copies(docs: list[list[int]], ctx: list[int], tok, max_tokens: int) -> dict:
    """What follows every occurrence of the context's last token that has a continuation,
    up to and including a newline: {continuation: (occurrences, longest context match)}."""
    found: dict[str, tuple[int, int]] = {}
    for d in docs:
        for end in range(len(d) - 1):
            n = 0
            while n < min(len(ctx), end + 1, 128) and d[end - n] == ctx[-1 - n]:
                n += 1
            if not n:
                continue
            seg = []
            for t in d[end + 1:end + 1 + max_tokens]:
                seg.append(t)
                if tok.decode([t]) == "\n":
                    break
            count, length = found.get(tok.decode(seg), (0, 0))
            found[tok.decode(seg)] = (count + 1, max(length, n))
    return found


def test_copies_are_what_follows_each_occurrence_in_real_go(tok, stdlib_src):
    src = (stdlib_src / "strings/compare.go").read_text(encoding="utf-8")
    idx = RepoIndex(tok, stdlib=False, modcache=False, background=False)
    ends = np.array([tok.decode([i]) == "\n" for i in range(tok.vocab_size)])
    checked = 0
    for at in range(200, len(src), 97):
        cut = src.rfind("\n", 0, at) + 1
        q = idx.query(src, cut, None)
        docs = [tok.encode(src[:cut]), tok.encode(src[cut:])]
        want = brute_copies(docs, q.prefix_ids, tok, 40)
        got = q.copies(q.prefix_ids, 100_000, 40, ends, tiers=("document",), per_match=100_000)
        assert {tok.decode(c.ids): (c.count, c.length) for c in got} == want
        assert [c.length for c in got] == sorted((c.length for c in got), reverse=True)
        assert all(c.tier == "document" for c in got)
        assert len({tuple(c.ids) for c in got}) == len(got)  # distinct
        checked += len(want) > 1
    assert checked >= 5


def test_copies_stop_at_k_and_never_cross_the_hole(tok):
    text = "a := 1\nb := 2\na := 1\nb := 3\na := 1\n"
    idx = RepoIndex(tok, stdlib=False, modcache=False, background=False)
    ends = np.array([tok.decode([i]) == "\n" for i in range(tok.vocab_size)])
    q = idx.query(text + "b := 9\n", len(text), None)  # "b := 9" is after the cursor
    got = {tok.decode(c.ids): c.count for c in q.copies(q.prefix_ids, 8, 40, ends)}
    assert got["b := 2\n"] == 1 and got["b := 3\n"] == 1 and "b := 9\n" not in got
    assert len(q.copies(q.prefix_ids, 1, 40, ends)) == 1


def test_fit_learns_which_feature_marks_the_right_line():
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(200):
        x = rng.normal(size=(6, len(FEATURES)))
        y = np.zeros(6, dtype=bool)
        y[int(np.argmax(x[:, 2] + 0.3 * rng.normal(size=6)))] = True  # "suffix" decides
        groups.append((x, y))
    w = fit(groups, steps=400)
    assert int(np.argmax(np.abs(w))) == 2 and w[2] > 0
    assert loss(groups, w) < loss(groups, np.zeros(len(FEATURES))) - 0.5
    with pytest.raises(ValueError, match="no request"):
        fit([(np.zeros((3, len(FEATURES))), np.zeros(3))])


def test_weights_file_round_trips_and_refuses_other_features(tmp_path):
    r = Reranker({"both": np.arange(len(FEATURES), dtype=float)}, "test")
    back = Reranker.from_json(json.loads(json.dumps(r.to_json())))
    assert np.allclose(back.weights["both"], r.weights["both"]) and back.source == "test"
    bad = r.to_json() | {"features": ["idx_mean"]}
    with pytest.raises(ValueError, match="other features"):
        Reranker.from_json(bad)
    short = r.to_json() | {"weights": {"both": [1.0, 2.0]}}
    with pytest.raises(ValueError, match="finite numbers"):
        Reranker.from_json(short)
    shipped = rerank.default_reranker()  # the shipped file loads (not the prior)
    assert shipped.source != "prior" and set(shipped.weights) >= {"both", "index"}


def test_scores_are_the_weighted_features():
    w = np.zeros(len(FEATURES))
    w[FEATURES.index("copy_count")] = 1.0
    r = Reranker({"both": w, "index": -w})
    a = LineCandidate("x := 1", "line", [1, 2], copies=3)
    b = LineCandidate("y := 2", "line", [3], copies=0)
    s = r.scores("both", [a, b])
    assert s[0] == pytest.approx(np.log1p(3)) and s[1] == 0.0
    assert r.scores("index", [a, b])[0] < 0
