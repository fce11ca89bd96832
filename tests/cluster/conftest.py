"""Shared fixtures of the cluster tests (real processes on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import remove_tree, short_tmpdir


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short temp folder (Ray's Unix socket paths must stay short), removed afterwards."""
    folder = short_tmpdir("gs")
    yield folder
    remove_tree(folder)
