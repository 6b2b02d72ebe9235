#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent) and run every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
export GOTOOLCHAIN=local GOPROXY=off
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
if [ -f editors/vscode/package.json ] && [ -d editors/vscode/node_modules ]; then
  echo "==> VS Code extension: typecheck, lint, unit tests, package"
  (cd editors/vscode && npm run --silent ci)
fi
