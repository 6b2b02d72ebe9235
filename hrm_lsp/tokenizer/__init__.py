"""hrm_lsp.tokenizer (see docs/architecture.md)."""
