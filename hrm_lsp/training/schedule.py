"""Learning-rate schedule shared by both backends: linear warm-up, then cosine decay.

Expressed as a multiplier of each parameter group's peak rate so that the per-module rates
(planner, generator, refinement head) keep their ratios through the whole run.
"""

from __future__ import annotations

import math

from hrm_lsp.training.recipe import ScheduleSection


def lr_scale(step: int, sched: ScheduleSection) -> float:
    """Multiplier of the peak learning rate for optimiser step ``step`` (0-based)."""
    if sched.warmup_steps > 0 and step < sched.warmup_steps:
        # (step + 1) so that the very first update is not a wasted zero-lr step.
        return (step + 1) / sched.warmup_steps
    if sched.kind == "constant":
        return 1.0
    span = max(1, sched.steps - sched.warmup_steps)
    progress = min(1.0, (step - sched.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return sched.min_lr_ratio + (1.0 - sched.min_lr_ratio) * cosine
