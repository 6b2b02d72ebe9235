"""Training and inference memory, estimated from the config (and measured, to check it).

The seeds' ``mem_estimate`` multiplies ``batch * seq * hidden * layers`` by 4 and calls it
done; it misses the parameters, gradients, optimizer state, the output head (for a 32k
vocabulary the logits dwarf everything else) and the recurrence. This estimator counts, in
bytes (docs/model.md, "Memory estimator", derives each term):

- weights ``P * w``; gradients ``P * w``; AdamW moments ``2 * P * w`` (``w``: bytes of the
  parameter dtype; torch keeps the moments in the parameter dtype);
- activations saved for backward, per block application with ``N = batch * seq`` tokens:
  ``N * ((11 d + 4 f) * a + (2 + heads) * 4)`` for post-norm HRGC blocks (``12 d`` for
  pre-norm GPT blocks), plus ``N * d * a`` for the input injection of each module
  application; ``a`` bytes per activation. Only the applications that keep a graph count:
  HRGC ``one_step`` keeps the last L and the last H application, ``full`` the whole last H
  cycle (``L_cycles`` L applications and one H); earlier cycles run without autograd;
- with gradient checkpointing only each application's inputs (``2 N d a``) are kept, plus
  one module application recomputed at a time during backward (after the head's tensors
  are freed, so the peak is the larger of the two, not their sum);
- the output head: logits, their log-softmax, and both gradients, ``4 * N * V * 4`` (the
  loss runs in fp32);
- the optimizer step's temporaries (foreach AdamW: about ``P * 4``, measured), which are the
  peak when activations are small.

    total = weights + moments + grads + max(saved + head, saved + recomputed, optimizer step)

``measure_training_peak`` runs real steps in a fresh process and reads the kernel's peak RSS
(VmHWM) so tests can hold the estimate to +-25 % of a measurement on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from hrm_lsp.model.config import ModelConfig

DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
GiB = 1024**3


class MemoryBudgetError(RuntimeError):
    """A run would not fit its memory budget; the message says by how much and what to change."""


def _bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}") from None


def count_params(cfg: ModelConfig) -> int:
    """Parameters of the model ``cfg`` builds (a tied head counted once), without building it."""
    D, F, V = cfg.d_model, cfg.ffn_hidden, cfg.vocab_size
    block = 4 * D * D + 3 * D * F + 2 * D  # qkv + proj, gate_up + down, two norms
    n = V * D + (0 if cfg.tie_embeddings else V * D) + D + 1  # embed, head, refine head
    if cfg.byte_features:
        n += (17 + 256) * D
    if cfg.arch == "gpt":
        return n + cfg.n_layers * block + D  # + final norm
    gates = 3 if cfg.recurrent_gates else 0  # gate_LL, gate_LH, gate_HH
    return n + (cfg.H_layers + cfg.L_layers) * block + gates


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by component; ``total`` is the estimated peak of one training (or forward) step."""

    params: int
    grads: int
    optimizer: int
    activations: int
    head: int
    optimizer_step: int
    total: int

    def fits(self, budget_bytes: int) -> bool:
        return self.total <= budget_bytes

    def require_fits(self, budget_bytes: int, what: str = "this run") -> None:
        """Raise MemoryBudgetError when the estimate exceeds ``budget_bytes``."""
        if not self.fits(budget_bytes):
            raise MemoryBudgetError(
                f"{what} needs about {self.total / GiB:.2f} GiB, over the budget of "
                f"{budget_bytes / GiB:.2f} GiB ({self.describe()}); lower batch size or sequence "
                "length, enable grad_checkpointing, or use grad_mode=one_step")

    def describe(self) -> str:
        parts = [("weights", self.params), ("grads", self.grads), ("optimizer", self.optimizer),
                 ("activations", self.activations), ("logits", self.head)]
        return ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in parts if v)

    def as_dict(self) -> dict[str, int]:
        return dict(params=self.params, grads=self.grads, optimizer=self.optimizer,
                    activations=self.activations, head=self.head,
                    optimizer_step=self.optimizer_step, total=self.total)


def activation_bytes(cfg: ModelConfig, batch: int, seq_len: int, act_bytes: int = 4,
                     grad_mode: str | None = None,
                     checkpointing: bool | None = None) -> tuple[int, int]:
    """(saved, recomputed) activation bytes of the blocks, the recurrence included.

    ``saved`` lives from the forward to the backward; ``recomputed`` (checkpointing only)
    is one module application rebuilt during backward, after the head's tensors are freed.
    """
    N, D, F = batch * seq_len, cfg.d_model, cfg.ffn_hidden
    grad_mode = grad_mode or cfg.grad_mode
    ckpt = cfg.grad_checkpointing if checkpointing is None else checkpointing
    small = (2 + cfg.n_heads) * 4  # two RMSNorm rstd + attention log-sum-exp, fp32
    if cfg.arch == "gpt":
        block = N * ((12 * D + 4 * F) * act_bytes + small)
        if ckpt:
            return cfg.n_layers * N * D * act_bytes, block
        return cfg.n_layers * block + N * D * act_bytes, 0
    block = N * ((11 * D + 4 * F) * act_bytes + small)
    L_app = cfg.L_layers * block + N * D * act_bytes
    H_app = cfg.H_layers * block + N * D * act_bytes
    n_L = cfg.L_cycles if grad_mode == "full" else 1
    # Recurrent gates save the fed-back states they scale (the previous z_L and z_H) for
    # their own gradients, outside any checkpointed module.
    gates = 2 * N * D * act_bytes if cfg.recurrent_gates else 0
    if ckpt:
        return (n_L + 1) * 2 * N * D * act_bytes + gates, max(L_app, H_app)
    return n_L * L_app + H_app + N * D * act_bytes + gates, 0  # + the final z_H read by the heads


def estimate_memory(cfg: ModelConfig, batch: int, seq_len: int, *, param_dtype: str = "float32",
                    act_dtype: str | None = None, training: bool = True,
                    grad_mode: str | None = None, checkpointing: bool | None = None,
                    optimizer: str = "adamw", fused_head: bool = False) -> MemoryEstimate:
    """Peak bytes of one training step (or, with ``training=False``, a no-grad forward).

    ``fused_head``: the training loss runs the output head fused and chunked
    (``training.loss.fused_linear_ce``, ``run.fused_loss``): no [N, V] logits, but two
    chunks of logits and the head's gradient ``[V, d]`` in fp32."""
    if batch < 1 or seq_len < 1:
        raise ValueError(f"batch and seq_len must be >= 1 (got {batch}, {seq_len})")
    P = count_params(cfg)
    w = _bytes(param_dtype)
    a = _bytes(act_dtype or param_dtype)
    N, D, F, V = batch * seq_len, cfg.d_model, cfg.ffn_hidden, cfg.vocab_size
    params = P * w
    if not training:
        # No graph: the largest live set is one block's working tensors plus the logits.
        work = N * (6 * D + 3 * F) * a
        head = N * V * 4
        return MemoryEstimate(params, 0, 0, work, head, 0, params + work + head)
    grads = P * w
    states = {"adamw": 2, "adam": 2, "sgd": 0}.get(optimizer)
    if states is None:
        raise ValueError(f"unknown optimizer {optimizer!r} (adamw, adam, sgd)")
    opt = states * P * w
    saved, recompute = activation_bytes(cfg, batch, seq_len, a, grad_mode, checkpointing)
    saved += N * 8 * (3 if cfg.byte_features else 1)  # int64 ids (and features) for embedding backward
    head = 4 * N * V * 4
    if fused_head:
        from hrm_lsp.training.loss import HEAD_CHUNK

        head = 2 * min(N, HEAD_CHUNK) * V * 4 + V * D * 4 + N * D * 4  # + the state's gradient
    opt_step = P * 4 if states else 0
    total = params + opt + grads + max(saved + head, saved + recompute, opt_step)
    return MemoryEstimate(params, grads, opt, saved + recompute, head, opt_step, total)


# ---------------------------------------------------------------------------------------
# Measurement (a fresh process, so the peak is this step's and nothing else's)

_MEASURE = r"""
import gc, json, sys, torch
import torch.nn.functional as F
from hrm_lsp.model import ModelConfig, build_model

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

def inputs(cfg, B, T):
    ids = torch.randint(0, cfg.vocab_size, (B, T + 1))
    kw = {}
    if cfg.byte_features:
        kw = dict(nibble=torch.randint(0, 17, (B, T)), acc=torch.randint(0, 256, (B, T)))
    return ids, kw

def step(model, opt, ids, kw):
    out = model(ids[:, :-1], **kw)
    loss = F.cross_entropy(out.logits.flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

args = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(args["threads"])
results = []
for case in args["cases"]:
    cfg = ModelConfig.from_dict(case["cfg"])
    B, T = case["batch"], case["seq_len"]
    # Warm up kernels, thread pools and the optimizer's code on a different small model,
    # so their one-off allocations land in the baseline, not in this model's peak.
    tiny = build_model(cfg.replace(d_model=32, n_heads=2, vocab_size=64, mlp_hidden=64, qat_bits=0))
    topt = torch.optim.AdamW(tiny.parameters(), lr=1e-4)
    for _ in range(2):
        step(tiny, topt, *inputs(tiny.cfg, B, min(T, 16)))
    del tiny, topt
    ids, kw = inputs(cfg, B, T)
    gc.collect()
    base = rss("VmRSS")
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(args["steps"]):
        gc.collect()
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the RSS now
        step(model, opt, ids, kw)
    results.append(rss("VmHWM") - base)
    del model, opt, ids, kw
    gc.collect()
print(json.dumps(results))
"""


def measure_training_peaks(cases: list[tuple[ModelConfig, int, int]], steps: int = 2,
                           threads: int = 1, timeout: float = 600.0) -> list[int]:
    """Peak resident bytes of a steady-state AdamW step (CPU, fp32) for each (cfg, batch, seq).

    Each peak is the last of ``steps`` steps, counted from the RSS before that model was
    built, so weights, gradients, optimizer state and activations are all in it. The cases
    run one after another in one fresh process. glibc would otherwise keep freed memory and
    hand it out again without touching RSS; a fixed mmap threshold makes every large tensor
    its own mapping, returned on free, so RSS follows the live tensors.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               OMP_NUM_THREADS=str(threads))
    args = json.dumps({"cases": [{"cfg": c.to_dict(), "batch": b, "seq_len": t} for c, b, t in cases],
                       "steps": steps, "threads": threads})
    proc = subprocess.run([sys.executable, "-c", _MEASURE, args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{proc.stderr[-2000:]}")
    return [int(x) for x in json.loads(proc.stdout.strip().splitlines()[-1])]


def measure_training_peak(cfg: ModelConfig, batch: int, seq_len: int, steps: int = 2) -> int:
    """``measure_training_peaks`` for one case."""
    return measure_training_peaks([(cfg, batch, seq_len)], steps)[0]


CHECK_CASES = (  # (label, preset, overrides, batch, seq): each stresses a different term
    ("tiny, activations + logits", "tiny", {}, 16, 256),
    ("tiny, full gradient", "tiny", {"grad_mode": "full"}, 16, 256),
    ("tiny, checkpointing", "tiny", {"grad_checkpointing": True}, 16, 256),
    ("tiny GPT", "tiny", {"arch": "gpt"}, 16, 256),
    ("small", "small", {}, 4, 256),
    ("small (vocab 256), full + checkpointing", "small",
     {"vocab_size": 256, "grad_mode": "full", "grad_checkpointing": True}, 8, 256),
    ("seed000, optimizer-dominated", "seed000", {}, 2, 128),
    ("seed000, full + checkpointing", "seed000", {"grad_mode": "full", "grad_checkpointing": True}, 2, 128),
    ("default, weights + AdamW", "default", {}, 1, 64),
)


def check() -> None:
    """Print estimate vs measured peak RSS for CHECK_CASES (a markdown table)."""
    from hrm_lsp.model.config import preset

    cases = [(preset(p, **o), b, t) for _, p, o, b, t in CHECK_CASES]
    measured = measure_training_peaks(cases)
    print("| case | batch x seq | estimated MiB | measured MiB | ratio |")
    print("|---|---|---:|---:|---:|")
    for (label, *_), (cfg, b, t), m in zip(CHECK_CASES, cases, measured, strict=True):
        e = estimate_memory(cfg, b, t).total
        print(f"| {label} | {b} x {t} | {e / 2**20:.1f} | {m / 2**20:.1f} | {e / m:.2f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m hrm_lsp.model.memory PRESET BATCH SEQ [BUDGET_GIB]`` or ``--check``."""
    from hrm_lsp.model.config import preset

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--check"]:
        check()
        return
    if len(argv) < 3:
        print("usage: python -m hrm_lsp.model.memory PRESET BATCH SEQ [BUDGET_GIB] | --check",
              file=sys.stderr)
        raise SystemExit(2)
    cfg = preset(argv[0])
    for mode in ("one_step", "full"):
        for ck in (False, True):
            e = estimate_memory(cfg, int(argv[1]), int(argv[2]), grad_mode=mode, checkpointing=ck)
            bf = estimate_memory(cfg, int(argv[1]), int(argv[2]), grad_mode=mode,
                                 checkpointing=ck, act_dtype="bfloat16")
            line = (f"{argv[0]} {mode:8s} ckpt={ck!s:5s} fp32 {e.total / GiB:6.2f} GiB  "
                    f"bf16-activations {bf.total / GiB:6.2f} GiB  ({e.describe()})")
            if len(argv) > 3:
                line += "  fits" if e.fits(int(float(argv[3]) * GiB)) else "  OVER BUDGET"
            print(line)


if __name__ == "__main__":
    main()
