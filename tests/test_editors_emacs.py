"""The README's Emacs (eglot) configuration, run in a real batch Emacs against the real
server: eglot connects, `:initializationOptions` and `eglot-workspace-configuration` both
reach the server. Skipped where Emacs with eglot is not installed (Debian: emacs-nox and
elpa-eglot, or Emacs 29+, which ships eglot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_suffix(".el")
SERVER_EXE = Path(sys.executable).with_name("hrm-lsp")


def _has_eglot() -> bool:
    emacs = shutil.which("emacs")
    if emacs is None:
        return False
    proc = subprocess.run([emacs, "--batch", "-q", "--eval",
                           "(progn (package-initialize) (require 'eglot))"],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0


pytestmark = pytest.mark.skipif(not _has_eglot(), reason="needs emacs with eglot "
                                "(apt-get install emacs-nox elpa-eglot)")


def readme_snippet() -> str:
    """The elisp block of the README's "Emacs (eglot)" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Emacs (eglot)"):]
    return re.search(r"```elisp\n(.*?)```", section, re.S).group(1)


def test_readme_eglot_config_reaches_the_server(tmp_path):
    snippet = readme_snippet()
    assert '"hrm-lsp" "serve"' in snippet
    # Same configuration, with this checkout's server and no model (nothing to load).
    absent = tmp_path / "absent.gguf"
    runnable = snippet.replace('"hrm-lsp" "serve"', f'"{SERVER_EXE}" "serve" "--model" "{absent}"')
    (tmp_path / "snippet.el").write_text(runnable, encoding="utf-8")
    (tmp_path / "go.mod").write_text("module example.com/demo\n\ngo 1.21\n", encoding="utf-8")
    go_file = tmp_path / "demo.go"
    go_file.write_text("package demo\n\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
                       encoding="utf-8")
    env = {"HRM_TEST_SNIPPET": str(tmp_path / "snippet.el"), "HRM_TEST_FILE": str(go_file),
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["emacs", "--batch", "-q", "-l", str(DRIVER)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    status = json.loads(lines[-1][len("RESULT "):])
    assert status["settings"]["max_tokens"] == 64  # from :initializationOptions
    assert status["settings"]["inline_mode"] == "single"  # from eglot-workspace-configuration
    assert status["documents"] == [go_file.as_uri()]
