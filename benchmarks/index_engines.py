"""The index's suffix-array engine against the infini-gram wheel's, on one static tier
(docs/index.md, "Why this engine"; results in docs/benchmarks.md, "Index").

    .venv/bin/python benchmarks/index_engines.py                 # the Go standard library
    .venv/bin/python benchmarks/index_engines.py --queries 500

Both index the same token ids (the standard library in the shipped model's tokenizer):

- ours: ``hrm_lsp.index.SuffixIndex`` (reversed corpus, libdivsufsort through pydivsufsort);
- infini-gram: its v4 on-disk layout (``tokenized.0``: u16 ids with ``\\xff\\xff`` document
  separators; ``table.0``: the suffix array as byte pointers; ``offset.0``: document starts),
  written here with the same libdivsufsort over the little-endian bytes (the engine compares
  raw bytes), then queried with its C++ engine's ``infgram_ntd``.

Reported: build seconds, bytes on disk, peak RSS growth, query latency (p50/p95) of "the
longest suffix of this context and what follows it" for contexts cut from files that are not
in the tier, and whether both engines agree on the match length and the most frequent next
token.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))
from quality_cases import percentile  # noqa: E402

from hrm_lsp.index import SuffixIndex  # noqa: E402
from hrm_lsp.index import files as gofiles  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_infinigram(docs: list[np.ndarray], out: Path) -> None:
    """infini-gram's v4 files for ``docs`` (u16 ids), suffix array by libdivsufsort."""
    import pydivsufsort

    parts, offsets, pos = [], [], 0
    sep = np.array([0xFFFF], dtype="<u2")
    for d in docs:
        offsets.append(pos)
        chunk = np.concatenate([sep, d.astype("<u2")])
        parts.append(chunk)
        pos += chunk.nbytes
    data = np.concatenate(parts).view(np.uint8)
    (out / "tokenized.0").write_bytes(data.tobytes())
    (out / "offset.0").write_bytes(np.asarray(offsets, dtype="<u8").tobytes())
    sa = pydivsufsort.divsufsort(data)
    sa = sa[sa % 2 == 0].astype(np.int64)
    ratio = int(np.ceil(np.log2(data.size) / 8))
    table = np.zeros((sa.size, 8), dtype=np.uint8)
    table[:] = sa.astype("<u8").view(np.uint8).reshape(-1, 8)
    (out / "table.0").write_bytes(table[:, :ratio].tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from hrm_lsp.export.gguf import load_model
    from hrm_lsp.paths import default_model_path
    from hrm_lsp.validators.go import find_go

    _, tok, _ = load_model(args.model or default_model_path())
    root = find_go().goroot
    files = list(gofiles.stdlib_files(root))
    rng = random.Random(args.seed)
    rng.shuffle(files)
    probe_files, tier_files = files[:60], files[60:]
    t = time.time()
    docs = []
    for f in tier_files:
        text, _ = gofiles.read_go_file(f)
        if text is not None:
            docs.append(np.asarray(tok.encode(text), dtype=np.uint16))
    tokenize_s = time.time() - t
    n_tokens = int(sum(d.size for d in docs))
    print(f"{len(docs)} files, {n_tokens} tokens, tokenized in {tokenize_s:.1f} s", flush=True)

    r0 = rss_mb()
    t = time.time()
    ours = SuffixIndex.build(docs, tok.vocab_size)
    ours_build = time.time() - t
    ours_rss = rss_mb() - r0
    ours_bytes = ours.rev.nbytes + ours.sa.nbytes + ours.doc_starts.nbytes

    work = Path(tempfile.mkdtemp(prefix="ig-"))
    r0 = rss_mb()
    t = time.time()
    write_infinigram(docs, work)
    ig_build = time.time() - t
    ig_rss = rss_mb() - r0
    ig_bytes = sum(p.stat().st_size for p in work.iterdir())
    from infini_gram.engine import InfiniGramEngine

    t = time.time()
    engine = InfiniGramEngine(index_dir=str(work), eos_token_id=tok.eot_id,
                              vocab_size=tok.vocab_size, version=4, token_dtype="u16")
    ig_load = time.time() - t

    contexts = []
    for f in probe_files:
        text, _ = gofiles.read_go_file(f)
        if not text or len(text) < 200:
            continue
        ids = tok.encode(text)
        for _ in range(max(1, args.queries // len(probe_files))):
            cut = rng.randrange(16, len(ids))
            contexts.append(ids[max(0, cut - 256):cut])
    contexts = contexts[: args.queries]
    lat_ours, lat_ig, same_len, same_top = [], [], 0, 0
    for ctx in contexts:
        t = time.perf_counter()
        m = ours.longest_match(ctx, 256)
        toks, counts = ours.next_counts(m, max_support=1000)
        lat_ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        res = engine.infgram_ntd(prompt_ids=list(map(int, ctx)), max_support=1000)
        lat_ig.append((time.perf_counter() - t) * 1000)
        same_len += int(res.get("suffix_len", -1) == m.length)
        if toks.size and res.get("result_by_token_id"):
            ig_top = max(res["result_by_token_id"].items(), key=lambda kv: kv[1]["cont_cnt"])[0]
            same_top += int(ig_top == int(toks[np.argmax(counts)]))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"date {time.strftime('%Y-%m-%d')}")
    print(f"ours:        build {ours_build:.2f} s, {ours_bytes / 1e6:.1f} MB, RSS +{ours_rss:.0f} MB, "
          f"query p50 {statistics.median(lat_ours):.3f} ms p95 {percentile(lat_ours, .95):.3f} ms")
    print(f"infini-gram: build {ig_build:.2f} s (same libdivsufsort) + load {ig_load:.2f} s, "
          f"{ig_bytes / 1e6:.1f} MB, RSS +{ig_rss:.0f} MB, query p50 "
          f"{statistics.median(lat_ig):.3f} ms p95 {percentile(lat_ig, .95):.3f} ms")
    print(f"agreement over {len(contexts)} contexts: match length {same_len}, "
          f"top next token {same_top}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
