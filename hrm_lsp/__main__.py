"""``python -m hrm_lsp`` is the same as the ``hrm-lsp`` command."""

from hrm_lsp.cli import main

main()
