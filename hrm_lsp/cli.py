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


# -- server ------------------------------------------------------------------------------
@main.command()
@click.option("--model", "model", type=click.Path(dir_okay=False), default=None,
              help="Model file (.gguf); default: the client's hrmLsp.modelPath, else the shipped model.")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Write the server log here (default: stderr; stdout carries LSP).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--tcp", "tcp_port", type=click.IntRange(1, 65535), default=None,
              help="Listen on 127.0.0.1:PORT instead of stdio (for debugging).")
def serve(model: str | None, log_file: str | None, log_level: str, tcp_port: int | None) -> None:
    """Run the language server (stdio by default)."""
    from hrm_lsp.log import configure
    from hrm_lsp.server.server import serve as run_server

    configure(log_level, log_file)
    run_server(model_path=model, tcp_port=tcp_port)


if __name__ == "__main__":  # `python -m hrm_lsp.cli` (torchrun uses this form)
    sys.exit(main())
