"""Export: trained runs -> one GGUF file (our ``hrgc`` architecture on the standard
container) or a Core ML package. See docs/export.md.

``ModelFileError`` is importable without torch; the writers/loaders import it lazily.
"""

from hrm_lsp.export.errors import ModelFileError

__all__ = ["ModelFileError"]
