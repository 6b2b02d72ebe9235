#!/usr/bin/env bash
# Create .venv and install hrm-lsp into it. Idempotent: a stamp of the inputs skips work
# on later runs. Usage: scripts/bootstrap.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-runtime}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  # Run each candidate: a pyenv shim can exist on PATH for a version that is not selected.
  for cand in python3 python3.12 python3.11 python3.10; do
    if "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || { echo "error: Python 3.10+ not found; install it and re-run" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $py"
  "$py" -m venv .venv
fi
vpy=.venv/bin/python

extras="mlx,coreml"
[ "$mode" = "dev" ] && extras="dev,mlx,coreml"
stamp=".venv/.stamp-$mode"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing hrm-lsp[$extras] into .venv"
  "$vpy" -m pip install -q --upgrade pip
  # A CPU build of torch unless one is already there: plain `pip install torch` on Linux
  # pulls a multi-GB CUDA build. HRM_LSP_TORCH_SPEC overrides (e.g. a ROCm or CUDA build).
  if ! "$vpy" -c "import torch" >/dev/null 2>&1; then
    "$vpy" -m pip install -q "${HRM_LSP_TORCH_SPEC:-torch==2.13.0}"
  fi
  "$vpy" -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
fi

if [ "$mode" = "dev" ]; then
  # Headless Neovim is the real editor client in the test suite.
  if ! command -v nvim >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
      echo "==> installing neovim (Debian package) for the editor tests"
      $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq neovim >/dev/null
    else
      echo "warning: nvim not found and no apt-get; the Neovim client test will be skipped" >&2
    fi
  fi
  # The VS Code extension's build, lint and unit tests need its node modules.
  if [ -f editors/vscode/package-lock.json ] && command -v npm >/dev/null 2>&1; then
    lockhash="$(sha256sum editors/vscode/package-lock.json | cut -d' ' -f1)"
    if [ ! -d editors/vscode/node_modules ] || [ "$(cat editors/vscode/node_modules/.stamp 2>/dev/null)" != "$lockhash" ]; then
      echo "==> npm ci (editors/vscode)"
      (cd editors/vscode && npm ci --no-audit --no-fund --loglevel=error && echo "$lockhash" > node_modules/.stamp)
    fi
  fi
fi
