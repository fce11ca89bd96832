"""Shared by every test: one torch thread (2 cores shared by several test runs, and small tensor ops are far
slower with 2 threads than with 1), a storage folder per test. The helpers every test file may import
(the one CLI runner, tiny configs, MLflow reads) live in support.py next to this file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch
except ImportError:  # the torch-free checks run in subprocesses with torch hidden; this process has it
    pass
else:
    torch.set_num_threads(1)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "store"
