#!/usr/bin/env bash
# The README's main-job command: set up .venv (idempotent) and run hrm-lsp on the example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh runtime
export GOTOOLCHAIN=local GOPROXY=off
# A real completion with the shipped model (hrm_lsp/assets/hrgc-default.gguf): plan, code,
# and the validators' verdict, at the empty line of the loop in Title (line 10, column 3).
.venv/bin/hrm-lsp complete examples/textutil/textutil.go:10:3 --multiline
