"""Parameter counts of every preset, HRGC next to its parameter-matched GPT baseline.

``python -m hrm_lsp.model.params [--vocab N]`` prints a table: parameters in blocks and in
embeddings/heads, compute per token (forward FLOPs, every recurrence step counted) and the
KV cache size per position, so the comparison the baseline exists for is explicit: same
parameters, HRGC spends ``H_cycles * (L_cycles * L_layers + H_layers) / (H_layers + L_layers)``
times the block compute per token.
"""

from __future__ import annotations

import argparse

from hrm_lsp.model.config import PRESETS, preset
from hrm_lsp.model.flops import flops_per_token
from hrm_lsp.model.memory import count_params


def rows(vocab_size: int | None = None) -> list[dict]:
    """One dict per (preset, arch): params, embedding params, forward GFLOPs/token, cache bytes/pos."""
    out = []
    for name in PRESETS:
        for arch in ("hrgc", "gpt"):
            cfg = preset(name, vocab_size=vocab_size, arch=arch)
            emb = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
            total = count_params(cfg)
            out.append(dict(preset=name, arch=arch, vocab=cfg.vocab_size, params=total,
                            embed_head=emb, blocks=total - emb,
                            gflops=flops_per_token(cfg, cfg.max_seq_len, training=False).forward / 1e9,
                            cache_kib=cfg.n_cache_slots * 2 * cfg.d_model * 4 / 1024))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: each preset's)")
    args = ap.parse_args(argv)
    print(f"{'preset':8s} {'arch':5s} {'vocab':>6s} {'params':>11s} {'emb+head':>11s} "
          f"{'blocks':>10s} {'GFLOP/tok':>9s} {'KV KiB/pos':>10s}")
    for r in rows(args.vocab):
        print(f"{r['preset']:8s} {r['arch']:5s} {r['vocab']:6d} {r['params']:11,d} "
              f"{r['embed_head']:11,d} {r['blocks']:10,d} {r['gflops']:9.4f} {r['cache_kib']:10.1f}")


if __name__ == "__main__":
    main()
