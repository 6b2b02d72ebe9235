"""What a run will cost before it starts: parameters, memory against the budget, FLOPs.

The numbers come from the model package (``hrm_lsp.model.memory``, ``hrm_lsp.model.flops``);
this module only applies the recipe's batch shape and budget, and refuses runs that will not
fit (``--dry-run`` prints the same report without data).
"""

from __future__ import annotations

from dataclasses import dataclass

from hrm_lsp.training.recipe import Recipe


class BudgetError(ValueError):
    """The run would not fit the recipe's memory budget; the message says what to change."""


@dataclass(frozen=True)
class BudgetReport:
    recipe: str
    num_params: int
    memory_bytes: int | None  # None: the model package offers no estimator for this config
    breakdown: dict[str, int]
    budget_gb: float
    hardware: str
    flops_per_token: float  # training FLOPs (forward + backward) per token
    tokens_per_step: int

    @property
    def memory_gb(self) -> float | None:
        return None if self.memory_bytes is None else self.memory_bytes / 2**30

    @property
    def fits(self) -> bool:
        return self.budget_gb <= 0 or self.memory_gb is None or self.memory_gb <= self.budget_gb

    def _memory_text(self) -> str:
        return "unknown (no estimator)" if self.memory_gb is None else f"{self.memory_gb:.2f} GiB"

    def summary(self) -> str:
        budget = (f"budget {self.budget_gb:.1f} GiB ({self.hardware})" if self.budget_gb > 0
                  else "no budget set")
        return (f"recipe {self.recipe}: {self.num_params:,} parameters; estimated peak memory "
                f"{self._memory_text()} vs {budget}; {self.flops_per_token / 1e6:,.1f} MFLOP/token "
                f"(training); {self.tokens_per_step:,} tokens/step")

    def lines(self) -> list[str]:
        """The dry-run report, one fact per line."""
        out = [
            f"recipe            {self.recipe}",
            f"parameters        {self.num_params:,}",
            f"memory estimate   {self._memory_text()} "
            + (f"of {self.budget_gb:.1f} GiB budget ({self.hardware}): {'fits' if self.fits else 'DOES NOT FIT'}"
               if self.budget_gb > 0 else "(no budget in the recipe)"),
        ]
        out += [f"  {k:<16}{v / 2**30:.3f} GiB" for k, v in self.breakdown.items()]
        out += [
            f"FLOPs per token   {self.flops_per_token:,.0f} (forward + backward)",
            f"tokens per step   {self.tokens_per_step:,} (batch x seq x grad_accum, per process)",
        ]
        return out


def estimate(recipe: Recipe, cfg) -> BudgetReport:
    """The report for ``recipe`` with model config ``cfg`` (no data, no weights allocated)."""
    total, breakdown, flops = None, {}, 0.0
    try:
        from hrm_lsp.model.memory import estimate_memory
    except ImportError:
        estimate_memory = None
    try:
        from hrm_lsp.model.flops import flops_per_token
    except ImportError:
        flops_per_token = None
    if estimate_memory is not None:
        # bf16 autocast keeps fp32 weights and stores activations in bf16 (GPU runs only; the
        # budget is for the recipe's target hardware, so it is applied whenever bf16 is on).
        act = "bfloat16" if (recipe.run.bf16 and recipe.run.backend == "torch") else "float32"
        est = estimate_memory(cfg, recipe.data.batch_size, recipe.data.seq_len,
                              param_dtype="float32", act_dtype=act, training=True, optimizer="adamw")
        d = est.as_dict()
        total = int(d.pop("total"))
        breakdown = {k: int(v) for k, v in d.items()}
    if flops_per_token is not None:
        flops = float(flops_per_token(cfg, recipe.data.seq_len, training=True).total)
    return BudgetReport(
        recipe=recipe.source.name,
        num_params=_count_params(cfg),
        memory_bytes=total,
        breakdown=breakdown,
        budget_gb=recipe.budget.memory_gb,
        hardware=recipe.budget.hardware,
        flops_per_token=flops,
        tokens_per_step=recipe.tokens_per_step,
    )


def _count_params(cfg) -> int:
    """Exact parameter count; the model is built on the meta device (no memory, no init)."""
    import torch

    from hrm_lsp.model import build_model

    with torch.device("meta"):
        return build_model(cfg).num_params()


def check(recipe: Recipe, cfg) -> BudgetReport:
    """The report, or BudgetError when the estimate exceeds the recipe's budget."""
    rep = estimate(recipe, cfg)
    if not rep.fits:
        raise BudgetError(
            f"recipe {recipe.source.name}: estimated peak memory {rep.memory_gb:.2f} GiB exceeds the "
            f"budget of {rep.budget_gb:.1f} GiB ({rep.hardware}); lower data.batch_size (now "
            f"{recipe.data.batch_size}) and raise optim.grad_accum, lower data.seq_len, switch on "
            "run.grad_checkpointing, or raise budget.memory_gb if the hardware has more"
        )
    return rep
