"""The errors of the training boundary, in one tuple for the CLI to turn into messages."""

from __future__ import annotations

from hrm_lsp.device import DeviceError
from hrm_lsp.training.budget import BudgetError
from hrm_lsp.training.checkpoint import CheckpointError
from hrm_lsp.training.data import DataError
from hrm_lsp.training.loop import TrainingError
from hrm_lsp.training.run import RunError

# Every error a user can fix by changing inputs; ConfigError (bad recipe / --set) is a usage
# error and handled on its own.
USER_ERRORS: tuple[type[Exception], ...] = (
    BudgetError, CheckpointError, DataError, DeviceError, RunError, TrainingError,
)
