"""A tiny real model for the server tests: SentencePiece trained on a few Go stdlib files,
the ``tiny`` HRGC preset, exported to GGUF through the real exporter.

``teach`` trains the model (Adam on CPU, seconds) to answer given requests with given
code: a "Refine this function" body, a completion with its plan. The token sequences it
learns are the ones the engine itself builds for those requests (read back from the
engine's session after a first run), so the tests exercise the real pipeline end to end:
engine prompt, plan, decoding, validators, the server's gate, items and WorkspaceEdits.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

STDLIB_FILES = ("strings/strings.go", "strings/builder.go", "sort/sort.go", "errors/errors.go",
                "bytes/buffer.go")


def train_tokenizer(stdlib_src: Path, vocab_size: int = 400):
    """A small SentencePiece tokenizer with the project's special symbols."""
    from hrm_lsp.tokenizer.spm import train_spm

    texts = [(stdlib_src / f).read_text(encoding="utf-8") for f in STDLIB_FILES]
    return train_spm(texts, vocab_size)


def build_model(tok, seed: int = 0):
    """The tiny preset with a 1024-token window (room for multi-line code actions)."""
    from hrm_lsp.model import build_model as build
    from hrm_lsp.model import preset

    torch.manual_seed(seed)
    return build(preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024))


def refine_example(engine, text: str, offset: int, body: str) -> tuple[list[int], list[int]]:
    """(context, target) ids for "Refine this function" at ``offset`` writing ``body``."""
    engine.refine_function(text, offset, max_tokens=2, time_budget_ms=60_000,
                           max_refinement_iterations=1, stages=("syntax",))
    seen = list(engine.sessions.get(None).ids)
    context = seen[: len(seen) - seen[::-1].index(engine.id_end_plan)]  # through </PLAN>
    return context, engine.tok.encode(body) + [engine.id_eot]


def completion_example(engine, text: str, offset: int, plan, code: str
                       ) -> tuple[list[int], list[int]]:
    """(context, target) ids for a completion at ``offset``: the plan, then ``code``."""
    from hrm_lsp.inference import CompletionRequest

    engine.complete(CompletionRequest(text=text, offset=offset, multiline=True, max_tokens=2,
                                      max_plan_tokens=2, refine=False, stages=("syntax",),
                                      time_budget_ms=60_000), session_key="\0teach")
    seen = list(engine.sessions.get("\0teach").ids)
    context = seen[: seen.index(engine.id_plan) + 1]  # the prompt through <PLAN>
    return context, engine.plan_ids(plan)[1:] + engine.tok.encode(code) + [engine.id_eot]


def teach(model, examples: list[tuple[list[int], list[int]]], steps: int = 300) -> int:
    """Train until greedy decoding reproduces every example's target; returns steps used."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = [(torch.tensor([c + t], dtype=torch.long), len(c)) for c, t in examples]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread of a busy CPU
    step = 0
    for step in range(steps):  # noqa: B007 - the count is the return value
        losses, learned = [], True
        for ids, n in batch:
            logits = model(ids[:, :-1]).logits[0, n - 1:]
            # Learned once each target is the argmax by a clear margin (greedy decoding).
            top2 = logits.detach().topk(2, dim=-1)
            ok = bool((top2.indices[:, 0] == ids[0, n:]).all()) and \
                float((top2.values[:, 0] - top2.values[:, 1]).min()) > 2.0
            learned = learned and ok
            losses.append(F.cross_entropy(logits, ids[0, n:]))
        if learned:
            break
        opt.zero_grad()
        torch.stack(losses).sum().backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    return step


def write_model(model, tok, out: Path) -> Path:
    """Export through the real GGUF writer (f32, unquantized: the taught answer is exact)."""
    from hrm_lsp.export.gguf import model_to_gguf

    model_to_gguf(model, tok, out, float_type="f32", quantize=False)
    return out
