"""hrm_lsp.training (see docs/architecture.md)."""
