"""A tiny HRGC trained for a few seconds on real Go (stdlib files), shared by the inference
and export tests: enough to write ASCII Go-looking bytes, newlines, braces and plans, so
the decoding tests exercise real behaviour rather than random bytes.

Documents use the training layout (``hrm_lsp.tokenizer.layout``: SPM fill-in-the-middle, a
plan after ``<FIM_MIDDLE>`` only before multi-line middles), built here directly from files
to keep the fixture fast.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

FILES = ("strings/compare.go", "errors/errors.go", "sort/search.go", "unicode/utf8/utf8.go",
         "bytes/reader.go", "math/abs.go", "io/multi.go")
SEQ = 128
STEPS = 60


def go_texts(stdlib_src: Path) -> list[str]:
    return [(stdlib_src / f).read_text(encoding="utf-8") for f in FILES]


@functools.lru_cache(maxsize=2)
def trained_tiny(stdlib_src: Path, qat: int = 4):
    """(model, tokenizer): tiny preset, byte tokenizer, 4-bit QAT, trained on FIM documents."""
    import torch

    from hrm_lsp.model import build_model, preset
    from hrm_lsp.tokenizer.byte import ByteTokenizer
    from hrm_lsp.tokenizer.layout import FIM_LAYOUT, fim_example

    torch.manual_seed(0)
    rng = random.Random(0)
    tok = ByteTokenizer()
    cfg = preset("tiny", vocab_size=tok.vocab_size, max_seq_len=512, qat_bits=qat,
                 fim_layout=FIM_LAYOUT)
    model = build_model(cfg)
    texts = go_texts(stdlib_src)
    sp = tok.special_ids
    plan = [sp["<PLAN>"], sp["<INTENT:ADD>"], sp["<TARGET:func>"], sp["</PLAN>"]]

    def doc() -> list[int]:
        text = rng.choice(texts)
        a = rng.randrange(0, max(1, len(text) - 120))
        mid_len = rng.randrange(1, 40)
        pre = text[max(0, a - 60):a]
        mid = text[a:a + mid_len]
        suf = text[a + mid_len:a + mid_len + 30]
        # The training layout (tokenizer/layout.py): a plan only before multi-line middles.
        ids = fim_example(tok, tok.encode(pre), tok.encode(mid), tok.encode(suf),
                          plan if "\n" in mid else None)
        return ids[:SEQ + 1]

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread of a busy CPU
    for _ in range(STEPS):
        batch = [doc() for _ in range(8)]
        width = max(len(b) for b in batch)
        x = torch.zeros(8, width, dtype=torch.long)
        for i, b in enumerate(batch):
            x[i, :len(b)] = torch.tensor(b)
        out = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]),
                                                 x[:, 1:].reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    return model, tok


def run_dir(model, tok, root: Path) -> Path:
    """A run directory in the training layout: checkpoint + latest, config.json with the
    model config, and a copy of the tokenizer."""
    import json

    import torch

    from hrm_lsp.model.weights import state_dict_for_export
    from hrm_lsp.tokenizer import tokenizer_filename
    from hrm_lsp.training.checkpoint import save_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    save_checkpoint(root, 10, {k: v.clone() for k, v in state_dict_for_export(model).items()},
                    {"step": torch.zeros(1)}, {"note": "test"})
    (root / "config.json").write_text(json.dumps({"model_config": model.cfg.to_dict()}))
    (root / tokenizer_filename(tok.kind)).write_bytes(tok.to_bytes())
    return root
