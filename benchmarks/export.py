"""Export: file size and logit error of the float type for embeddings and the output head.

    .venv/bin/python benchmarks/export.py --presets small,default

For each preset a random-init 4-bit-QAT model is exported with ``--float-type`` f32, f16 and
q8_0; each file is loaded back and its logits on 256 random byte ids are compared with the
f32 file's (block linears are 4-bit in all three, so only the float type differs). A byte
tokenizer padded to the preset's vocabulary stands in for a trained one: weight precision
does not depend on which tokenizer produced the ids. Results: docs/export.md and
docs/benchmarks.md ("Export").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference import padded_byte_tokenizer  # noqa: E402

import hrm_lsp.tokenizer as tokenizer_pkg  # noqa: E402
from hrm_lsp.export.gguf import FLOAT_TYPES, load_model, model_to_gguf  # noqa: E402
from hrm_lsp.model import build_model, preset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="small,default")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.presets.split(","):
        cfg = preset(name, qat_bits=4, dropout=0.0)
        tok = padded_byte_tokenizer(cfg.vocab_size)
        # The embedded tokenizer reads back as the plain byte tokenizer; hand the loader the
        # padded one instead (see the module docstring).
        tokenizer_pkg.load_tokenizer = lambda data, _t=tok: _t
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        ids = torch.randint(1, 256, (1, 256))
        logits, sizes = {}, {}
        with tempfile.TemporaryDirectory() as d:
            for ft in FLOAT_TYPES:
                path = Path(d) / f"{ft}.gguf"
                model_to_gguf(model, tok, path, float_type=ft)
                sizes[ft] = os.path.getsize(path)
                loaded, _, _ = load_model(path)
                with torch.no_grad():
                    logits[ft] = loaded(ids).logits
        ref = logits["f32"]
        for ft in FLOAT_TYPES:
            diff = (logits[ft] - ref).abs()
            print(json.dumps({
                "preset": name, "float_type": ft, "file_MB": round(sizes[ft] / 1e6, 2),
                "max_abs_dlogit": round(float(diff.max()), 5),
                "mean_abs_dlogit": round(float(diff.mean()), 6),
                "logit_scale": round(float(ref.abs().max()), 3),
                "argmax_agree": round(float((logits[ft].argmax(-1) == ref.argmax(-1)).float().mean()), 4),
            }))


if __name__ == "__main__":
    main()
