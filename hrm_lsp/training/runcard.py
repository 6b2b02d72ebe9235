"""``run_card.md``: what a run was (recipe, data, hardware) and what it measured."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from hrm_lsp.training.metrics import format_duration
from hrm_lsp.training.recipe import Recipe


def hardware_summary(backend: str, device_description: str) -> str:
    """One line naming the machine: device, framework build (CUDA/HIP), CPU, OS."""
    parts = [device_description]
    if backend == "torch":
        import torch

        build = f"torch {torch.__version__}"
        if getattr(torch.version, "hip", None):
            build += f" (HIP {torch.version.hip})"
        elif torch.version.cuda:
            build += f" (CUDA {torch.version.cuda})"
        parts.append(build)
    else:
        import mlx.core as mx

        parts.append(f"mlx {getattr(mx, '__version__', '?')} ({mx.default_device()})")
    parts.append(f"{platform.machine()} {platform.system()} {platform.release()}")
    parts.append(f"Python {sys.version.split()[0]}")
    return "; ".join(parts)


def write_run_card(
    run_dir: Path,
    recipe: Recipe,
    *,
    model_config: dict[str, Any],
    num_params: int,
    data_path: str,
    manifest_sha256: str,
    tokenizer: str,
    steps: int,
    tokens: int,
    elapsed_s: float,
    hardware: str,
    world_size: int,
    final_eval: dict[str, float],
    command: str,
    init_from: str | None = None,
    before_eval: dict[str, float] | None = None,
    after_eval: dict[str, float] | None = None,
    heldout_split: str = "",
) -> Path:
    """Write ``RUN_DIR/run_card.md`` (replacing an older one) and return its path."""
    src = recipe.source
    lines = [
        f"# Run card: {src.name}",
        "",
        src.description,
        "",
        "| | |",
        "|---|---|",
        f"| recipe | `{src.name}` (source: {src.source or 'ours'}) |",
        f"| command | `{command}` |",
        f"| model | {model_config.get('arch')} `{recipe.model.preset}`, {num_params:,} parameters, "
        f"d_model {model_config.get('d_model')}, H/L layers {model_config.get('H_layers')}/"
        f"{model_config.get('L_layers')}, cycles {model_config.get('H_cycles')}x{model_config.get('L_cycles')}, "
        f"QAT {model_config.get('qat_bits') or 'off'} |",
        f"| tokenizer | {tokenizer} |",
        f"| data | `{data_path}`, manifest sha256 `{manifest_sha256}` |",
        f"| steps | {steps:,} (batch {recipe.data.batch_size} x seq {recipe.data.seq_len} x accum "
        f"{recipe.optim.grad_accum} x {world_size} rank{'s' if world_size > 1 else ''}) |",
        f"| tokens | {tokens:,} |",
        f"| training time | {format_duration(elapsed_s)} ({tokens / max(elapsed_s, 1e-9):,.0f} tokens/s) |",
        f"| hardware | {hardware} |",
    ]
    if init_from:
        lines.append(f"| initialised from | `{init_from}` |")
    lines += ["", "## Final evaluation (validation split)", ""]
    if final_eval:
        lines += [
            "| metric | value |",
            "|---|---|",
            f"| loss (nats/token) | {final_eval['val_loss']:.4f} |",
            f"| bits per UTF-8 byte | {final_eval['val_bpb']:.4f} |",
            f"| perplexity | {final_eval['val_ppl']:.2f} |",
            f"| tokens / bytes evaluated | {final_eval['val_tokens']:,} / {final_eval['val_bytes']:,} |",
        ]
    else:
        lines.append("(no evaluation ran)")
    if before_eval and after_eval:
        lines += [
            "",
            f"## Fine-tuning: held-out `{heldout_split}` split of your code, before -> after",
            "",
            "| metric | before | after |",
            "|---|---|---|",
            f"| loss (nats/token) | {before_eval['val_loss']:.4f} | {after_eval['val_loss']:.4f} |",
            f"| bits per UTF-8 byte | {before_eval['val_bpb']:.4f} | {after_eval['val_bpb']:.4f} |",
            f"| perplexity | {before_eval['val_ppl']:.2f} | {after_eval['val_ppl']:.2f} |",
        ]
    if src.claims:
        lines += ["", "## The source's claims (not measured by this run)", ""]
        lines += [f"- {c}" for c in src.claims]
    if src.ours:
        lines += ["", "## Ours", ""]
        lines += [f"- {c}" for c in src.ours]
    path = Path(run_dir) / "run_card.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
