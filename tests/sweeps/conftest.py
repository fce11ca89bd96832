"""Fixtures of the sweep tests; the helpers live in sweep_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # 2 cores shared by several engineers' test runs


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "store"
