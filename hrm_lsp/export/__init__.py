"""hrm_lsp.export (see docs/architecture.md)."""
