"""Checkpoints: safetensors weights + optimizer state + a JSON state, written atomically.

Layout (docs/architecture.md, "training -> export")::

    RUN_DIR/checkpoints/step-0000100/{model.safetensors, optimizer.safetensors, state.json}
    RUN_DIR/latest            text file naming the newest complete checkpoint

A checkpoint is written into ``checkpoints/.tmp-...``, each file flushed to disk, then the
directory is renamed into place and only then is ``latest`` replaced (write + rename). A
process killed at any point leaves ``latest`` naming a complete checkpoint; the half-written
temporary directory is removed by the next save. No pickle anywhere: tensors go to
safetensors, everything else to JSON.

``HRM_LSP_FAULT`` injects real process kills for the crash tests:
``kill-during-save:STEP`` SIGKILLs the process after the files of step STEP are written but
before they are published; ``kill-after-save:STEP`` right after step STEP is published.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrm_lsp.log import get_logger

log = get_logger(__name__)

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
_STEP_RE = re.compile(r"^step-(\d{7,})$")


class CheckpointError(RuntimeError):
    """A run directory or checkpoint cannot be used; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fault(kind: str, step: int) -> None:
    spec = os.environ.get("HRM_LSP_FAULT", "")
    if spec == f"{kind}:{step}":
        log.warning("HRM_LSP_FAULT=%s: killing this process", spec)
        os.kill(os.getpid(), signal.SIGKILL)


def _save_tensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write torch tensors or numpy arrays to safetensors (framework picked from the values)."""
    first = next(iter(tensors.values()), None)
    if first is not None and type(first).__module__.startswith("torch"):
        from safetensors.torch import save_file

        # clone(): tied weights share storage, which safetensors refuses to write twice.
        seen: set[int] = set()
        out = {}
        for k, v in tensors.items():
            v = v.detach().cpu().contiguous()
            if v.data_ptr() in seen and v.numel() > 0:
                v = v.clone()
            seen.add(v.data_ptr())
            out[k] = v
        save_file(out, str(path), metadata=metadata)
    else:
        import numpy as np
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path: Path, framework: str = "pt") -> dict[str, Any]:
    """Read a safetensors file as torch tensors (``pt``) or numpy arrays (``np``)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        if framework == "pt":
            from safetensors.torch import load_file
        else:
            from safetensors.numpy import load_file
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_tensors: dict[str, Any],
    optim_tensors: dict[str, Any],
    state: dict[str, Any],
    keep_last: int = 3,
    model_metadata: dict[str, str] | None = None,
) -> Checkpoint:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, prune to ``keep_last``."""
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    for stale in ckdir.glob(".tmp-*"):  # left by a process killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    final = ckdir / step_dir_name(step)
    tmp = ckdir / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    tmp.mkdir()
    # The model file carries its config in the metadata (hrm_lsp.model.weights), so export and
    # inference can rebuild the model from the file alone.
    _save_tensors(model_tensors, tmp / MODEL_FILE, model_metadata)
    _save_tensors(optim_tensors, tmp / OPTIM_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1), encoding="utf-8")
    for name in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
        _fsync_file(tmp / name)
    _fault("kill-during-save", step)
    if final.exists():  # re-saving a step (e.g. the final step after a resume at that step)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(ckdir)
    _write_latest(Path(run_dir), final)
    _prune(ckdir, keep_last, keep=final)
    _fault("kill-after-save", step)
    return Checkpoint(final, step)


def _write_latest(run_dir: Path, target: Path) -> None:
    tmp = run_dir / "latest.tmp"
    tmp.write_text(str(target.relative_to(run_dir)) + "\n", encoding="utf-8")
    _fsync_file(tmp)
    os.replace(tmp, run_dir / "latest")
    _fsync_dir(run_dir)


def _prune(ckdir: Path, keep_last: int, keep: Path) -> None:
    steps = sorted(list_checkpoints(ckdir.parent), key=lambda c: c.step)
    for c in steps[: max(0, len(steps) - keep_last)]:
        if c.path != keep:
            shutil.rmtree(c.path, ignore_errors=True)


def is_complete(path: Path) -> bool:
    return all((path / n).is_file() for n in (MODEL_FILE, OPTIM_FILE, STATE_FILE))


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    out = []
    if ckdir.is_dir():
        for p in ckdir.iterdir():
            m = _STEP_RE.match(p.name)
            if m and p.is_dir() and is_complete(p):
                out.append(Checkpoint(p, int(m.group(1))))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``latest`` names, or the newest complete one if that is unusable."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    if pointer.is_file():
        target = run_dir / pointer.read_text(encoding="utf-8").strip()
        m = _STEP_RE.match(target.name)
        if m and is_complete(target):
            return Checkpoint(target, int(m.group(1)))
        log.warning("%s names %s, which is not a complete checkpoint; using the newest one", pointer, target)
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_state(ckpt: Checkpoint) -> dict[str, Any]:
    """The JSON state of a checkpoint, with a clear error if it is damaged."""
    p = ckpt.path / STATE_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p}: unreadable checkpoint state ({e})") from None


def resolve_checkpoint(path: Path) -> Checkpoint:
    """A run directory (-> its latest checkpoint) or a checkpoint directory -> Checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint directory")
    if is_complete(path):
        m = _STEP_RE.match(path.name)
        return Checkpoint(path, int(m.group(1)) if m else int(read_state(Checkpoint(path, 0)).get("step", 0)))
    ck = latest_checkpoint(path)
    if ck is None:
        raise CheckpointError(f"{path}: no complete checkpoint in this run directory")
    return ck
