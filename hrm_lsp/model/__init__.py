"""hrm_lsp.model (see docs/architecture.md)."""
