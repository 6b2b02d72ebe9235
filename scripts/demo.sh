#!/usr/bin/env bash
# The README's main-job command: set up .venv (idempotent) and run hrm-lsp on the example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh runtime
export GOTOOLCHAIN=local GOPROXY=off
.venv/bin/hrm-lsp check examples/wordcount/wordcount.go
