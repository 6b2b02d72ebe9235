"""hrm_lsp.data (see docs/architecture.md)."""
