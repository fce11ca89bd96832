"""BuiltDataset: the splits of one built data set, as uint8 tensors ready to move to a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gitlib.data.spec import DatasetSpec


@dataclass
class BuiltDataset:
    """Train / val / test splits of a DatasetSpec (images uint8 (N, C, H, W), labels int64 (N,)).

    `test_x` are the untransformed test images (eKLD applies fresh transforms to them); `test_tx` are
    `spec.test_copies` transformed copies of each, with labels `test_ty`, for accuracy. `train_base_x`
    are the untransformed base images of the training examples (same order as `train_x`): the oracle
    draws a fresh nuisance on these, not on `train_x`, which already carries one. None when unknown.
    """

    spec: DatasetSpec
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_tx: torch.Tensor
    test_ty: torch.Tensor
    digest: str = ""  # content address of the build (spec + builder version)
    path: Path | None = None  # folder holding the Parquet files and manifest.json
    train_base_x: torch.Tensor | None = None  # uint8 (N, C, H, W), train_x before its nuisance

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def class_counts(self) -> np.ndarray:
        """Training images per class label, (num_classes,) int64."""
        return np.bincount(self.train_y.numpy(), minlength=self.num_classes).astype(np.int64)
