"""The model behind the server: loaded once, in the background, replaceable at runtime.

Requests that arrive before the model is ready get an empty answer at once (the client
asks again on the next keystroke), so loading never blocks the editor. A missing or
corrupt model file leaves the server up with completions off; validation-based features
keep working.
"""

from __future__ import annotations

import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrm_lsp.log import get_logger
from hrm_lsp.paths import default_model_path

log = get_logger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    """What the server can say about its model at any moment."""

    state: str  # "idle" (nothing requested) | "loading" | "ready" | "failed"
    path: str = ""
    message: str = ""


def resolve_model_path(setting: str) -> Path:
    """The model for a ``modelPath`` setting ("" = the shipped model): a .gguf file, or a run
    directory: its exported ``model.gguf`` (what a fine-tune writes) when it has one, else the
    directory (its latest checkpoint)."""
    if not setting:
        return default_model_path()
    path = Path(setting).expanduser()
    return path / "model.gguf" if path.is_dir() and (path / "model.gguf").is_file() else path


def model_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold a model (None for a regular file or a directory).

    Checked with ``stat`` before anything opens it: opening a FIFO would block the load
    forever, and "does not exist" would be wrong for a device or a socket.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"model file {path} does not exist"
    except OSError as e:
        return f"model path {path} cannot be read ({e.strerror or e})"
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return None
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    return f"model path {path} is {kind}, not a model file"


class ModelHost:
    """Holds the Engine and its load state; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None
        self._status = ModelStatus("idle")
        self._generation = 0  # bumps on every load so a stale load cannot win

    @property
    def status(self) -> ModelStatus:
        """Current state, path and message."""
        with self._lock:
            return self._status

    @property
    def engine(self) -> Any:
        """The loaded Engine, or None when not ready."""
        with self._lock:
            return self._engine if self._status.state == "ready" else None

    def begin_load(self, path: Path) -> int:
        """Mark a load of ``path`` as started; returns its ticket for ``load``."""
        with self._lock:
            self._generation += 1
            self._engine = None
            self._status = ModelStatus("loading", str(path))
            return self._generation

    def load(self, path: Path, device: str) -> tuple[Any, ModelStatus]:
        """Load ``path`` (blocking; run it in a thread): (engine or None, status). Never raises.

        Nothing changes until ``commit``: the server commits on its event loop, right before
        it tells the user, so a client never sees the state change before the message.
        """
        try:
            problem = model_path_problem(path)
            if problem is not None:
                raise FileNotFoundError(f"{problem}; set hrmLsp.modelPath to a .gguf file "
                                        "made by `hrm-lsp export` or to a training run directory")
            from hrm_lsp.inference import Engine

            engine = Engine.load(path, device=device)
            return engine, ModelStatus("ready", str(path), f"model {path.name} loaded")
        except Exception as e:  # boundary: any failure becomes a message, not a crash
            from hrm_lsp.export.errors import ModelFileError

            expected = isinstance(e, (FileNotFoundError, ModelFileError))  # said in the message
            log.warning("model load failed: %s", e, exc_info=not expected)
            return None, ModelStatus("failed", str(path), f"could not load model {path}: {e}")

    def commit(self, ticket: int, engine: Any, status: ModelStatus) -> bool:
        """Adopt a finished load unless a newer one started meanwhile (then drop it)."""
        with self._lock:
            if ticket != self._generation:
                return False
            self._engine = engine
            self._status = status
            return True
