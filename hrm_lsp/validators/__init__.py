"""Go validators: tree-sitter syntax gate, gofmt, go vet, opt-in go test (docs/validators.md).

Public API (the "validators → everyone" contract in docs/architecture.md)::

    from hrm_lsp.validators import validate, syntax_errors, Diagnostic, ValidationResult, find_go
"""

from hrm_lsp.validators.go import GoNotFoundError, GoTimeoutError, GoToolchain, find_go
from hrm_lsp.validators.pipeline import DEFAULT_STAGES, validate, validate_file
from hrm_lsp.validators.treesitter import syntax_errors
from hrm_lsp.validators.types import Diagnostic, InvalidSourceError, ValidationResult

__all__ = [
    "DEFAULT_STAGES",
    "Diagnostic",
    "GoNotFoundError",
    "GoTimeoutError",
    "GoToolchain",
    "InvalidSourceError",
    "ValidationResult",
    "find_go",
    "syntax_errors",
    "validate",
    "validate_file",
]
