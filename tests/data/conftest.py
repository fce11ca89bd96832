"""Fixtures of the data tests; the file writers live in source_files.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from source_files import write_k49


@pytest.fixture
def k49_root(tmp_path: Path) -> Path:
    root = tmp_path / "k49"
    write_k49(root, per_class=6, test_per_class=3)
    return root
