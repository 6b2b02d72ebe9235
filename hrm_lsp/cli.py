"""The ``hrm-lsp`` command line: thin click commands over the library.

Each command imports what it needs inside its body so that ``hrm-lsp --help`` and
``hrm-lsp serve`` start without importing torch/MLX. Library errors that users can fix
are raised as ``click.ClickException`` (exit 1) or ``UsageError`` (exit 2) here, at the
boundary; commands with their own exit-code contract (``check``) say so.
"""

from __future__ import annotations

import sys

import click

from hrm_lsp import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hrm-lsp")
def main() -> None:
    """hrm-lsp: a local Go coding assistant (HRGC model + Go validators + LSP server)."""


# Commands are registered below, one section per sub-package. Keep each body thin.


if __name__ == "__main__":  # `python -m hrm_lsp.cli` (torchrun uses this form)
    sys.exit(main())
