"""hrm_lsp.validators (see docs/architecture.md)."""
