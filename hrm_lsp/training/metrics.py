"""Metrics log (JSONL), console progress, and model-FLOPs utilisation (MFU).

MFU = achieved model FLOPs per second / the device's peak dense FLOPs for the precision in
use. The model package counts FLOPs per token; the peaks below are vendor spec sheets (dense,
no sparsity), matched by a substring of the device name.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

# (substring of torch.cuda.get_device_name, bf16/fp16 dense peak, fp32 peak) in FLOP/s.
# Sources: NVIDIA H100/H200/A100/L4/A10 and AMD Instinct/Radeon product spec sheets.
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989e12, 67e12),
    ("H100 PCIe", 756e12, 51e12),
    ("H100", 989e12, 67e12),  # SXM
    ("A100", 312e12, 19.5e12),
    ("L40S", 362e12, 91.6e12),
    ("L4", 121e12, 30.3e12),
    ("A10", 125e12, 31.2e12),
    ("RTX 4090", 165e12, 82.6e12),
    ("RTX 3090", 71e12, 35.6e12),
    ("MI300X", 1307e12, 163.4e12),
    ("MI250X", 383e12, 47.9e12),
    ("6700 XT", 26.4e12, 13.2e12),  # seed 004's card: RDNA2, fp16 2x fp32
)


def peak_flops(device_name: str, bf16: bool) -> float | None:
    """Spec peak FLOP/s for a GPU name, or None when unknown (MFU is then not shown)."""
    for key, half, single in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return half if bf16 else single
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None without a known peak."""
    if not peak or not flops_per_token or tokens_per_s <= 0:
        return None
    from hrm_lsp.model.flops import mfu as model_mfu

    return model_mfu(tokens_per_s, flops_per_token, peak)


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """Tokenizer-independent compression: total nats / UTF-8 bytes / ln 2."""
    return nats / max(1, n_bytes) / math.log(2)


class MetricsLog:
    """Append-only ``metrics.jsonl``; one JSON object per line, flushed per record."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written by a run that died before its next checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (skipping a torn last line)."""
    out = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """``[########------------]  40%`` for ``done`` of ``total``."""
    frac = min(1.0, done / max(1, total))
    filled = int(round(frac * width))
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * frac:3.0f}%"


class Progress:
    """One console line per logged step: a bar, loss, lr, tokens/s, ETA, and MFU when known."""

    def __init__(self, total_steps: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total_steps
        self.stream = stream or sys.stderr
        self.enabled = enabled

    def step(self, step: int, loss: float, lr: float, tok_s: float, eta_s: float, mfu_value: float | None, extra: str = "") -> None:
        if not self.enabled:
            return
        parts = [
            f"{progress_bar(step, self.total)} step {step}/{self.total}",
            f"loss {loss:.4f}",
            f"lr {lr:.2e}",
            f"{tok_s:,.0f} tok/s",
            f"ETA {format_duration(eta_s)}",
        ]
        if mfu_value is not None:
            parts.append(f"MFU {100 * mfu_value:.1f}%")
        if extra:
            parts.append(extra)
        print(" | ".join(parts), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)
