"""hrm_lsp.training: ``hrm-lsp train`` on PyTorch or MLX (docs/training.md).

Modules, in the order a run uses them:

- ``recipe``      TOML recipes (``recipes/*.toml``) -> frozen dataclasses, ``--set`` overrides;
- ``data``        prepared data or sources prepared first; batches -> loss targets;
- ``budget``      parameters, memory estimate vs the recipe's budget, FLOPs (``--dry-run``);
- ``loss``        plan / code / refinement targets derived from ids; the multi-task loss;
- ``schedule``    warm-up + cosine learning-rate multiplier;
- ``torch_backend``, ``mlx_backend``  one optimiser step each, checkpoint state;
- ``loop``        log / evaluate / checkpoint cadence, shared by both backends;
- ``checkpoint``  atomic safetensors checkpoints, ``latest``, keep-last-N;
- ``distributed`` DDP under torchrun;
- ``metrics``, ``runcard``  metrics.jsonl, console progress, MFU, run_card.md;
- ``run``         the command: ``train(TrainOptions(...))``; ``finetune``: ``train --init``.

Nothing heavy is imported here so that ``import hrm_lsp.training`` stays cheap.
"""
