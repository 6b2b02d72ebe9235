"""hrm_lsp.server (see docs/architecture.md)."""
