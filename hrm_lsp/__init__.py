"""hrm-lsp: a local Go coding assistant built around HRGC, a small hierarchical recurrent model.

Sub-packages follow the design's data flow: data -> tokenizer -> model -> training ->
export -> inference (+ validators) -> server. See docs/architecture.md.
"""

__version__ = "0.1.0"
