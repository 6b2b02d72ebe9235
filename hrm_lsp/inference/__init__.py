"""hrm_lsp.inference (see docs/architecture.md)."""
