"""Figures: the eKLD-vs-class-size plot and the generator's sample grid (sources, then random styles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gitlib.data.builds import get_dataset
from gitlib.data.dataset import BuiltDataset
from gitlib.data.spec import DatasetSpec
from gitlib.device import seeded_rng
from gitlib.models.arch import MunitArch
from gitlib.models.munit import build_munit
from gitlib.plots import grid_sources, sample_grid, save_sample_grid

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> BuiltDataset:
    spec = DatasetSpec(source="digits", nuisance="background", imbalance_ratio=20, max_per_class=100)
    return get_dataset(spec, tmp_path_factory.mktemp("store"))


def test_sample_grid(tmp_path, data: BuiltDataset) -> None:
    idx, labels = grid_sources(data.train_y, data.class_counts, n_large=2, n_small=2)
    counts = data.class_counts
    order = np.argsort(-counts, kind="stable")
    assert data.train_y[idx].tolist() == [*order[:2], *order[-2:]]  # largest first, then the smallest
    assert labels[0] == f"class {order[0]} (n={counts[order[0]]})"
    torch.manual_seed(0)
    model, _ = build_munit(1, data.image_size, MunitArch(dim=4, mlp_dim=8, n_res=1))
    grid = sample_grid(model, data.train_x[idx], seeded_rng(0, CPU), styles=3)
    assert grid.shape == (4, 4, 1, data.image_size, data.image_size)
    assert torch.equal(grid[:, 0], data.train_x[idx].float() / 255)  # first column: the sources
    path = save_sample_grid(tmp_path / "samples.png", model, data.train_x[idx], labels, seeded_rng(0, CPU))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
