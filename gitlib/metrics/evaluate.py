"""Evaluation of a trained classifier: validation accuracy per epoch, and the final test metrics with
per-class invariance (eKLD, consistency) and the per-class table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from gitlib.augmenter import Augmenter
from gitlib.data.dataset import BuiltDataset
from gitlib.device import Precision
from gitlib.metrics import accuracy as acc
from gitlib.metrics.invariance import invariance_per_class, per_class_subset
from gitlib.metrics.table import per_class_table
from gitlib.models.inference import predict_labels

EKLD_SEED_OFFSET = 7919  # eKLD's transforms draw from seed + this, apart from the training stream


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, device: torch.device,
             precision: Precision | None = None) -> dict[str, Any]:
    """acc, balanced_acc and per_class ((num_classes,), NaN for absent classes) of `model` on a labelled set."""
    if labels.numel() == 0:
        return {"acc": math.nan, "balanced_acc": math.nan, "per_class": np.full(num_classes, math.nan)}
    preds = predict_labels(model, images, device, precision).cpu()
    per_class = acc.per_class_accuracy(preds, labels, num_classes)
    return {"acc": float((preds == labels.cpu()).float().mean()), "balanced_acc": acc.balanced_accuracy(per_class),
            "per_class": per_class}


def validation_metrics(model: nn.Module, data: BuiltDataset, device: torch.device,
                       precision: Precision | None = None) -> dict[str, float]:
    res = accuracy(model, data.val_x, data.val_y, data.num_classes, device, precision)
    return {"val/acc": res["acc"], "val/balanced_acc": res["balanced_acc"]}


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def final_metrics(model: nn.Module, data: BuiltDataset, transform: Augmenter | None, ekld_samples: int,
                  ekld_per_class: int | None, seed: int, device: torch.device,
                  precision: Precision | None = None) -> tuple[dict[str, float], pa.Table]:
    """Test accuracy groups on the transformed test copies, eKLD summaries under `transform` (None: no
    eKLD), and the per-class table (class, train_count, accuracy, ekld, consistency). eKLD uses
    `ekld_per_class` untransformed test images per class with `ekld_samples` fresh transforms each."""
    counts = data.class_counts
    res = accuracy(model, data.test_tx, data.test_ty, data.num_classes, device, precision)
    shots = acc.shot_accuracies(res["per_class"], counts)
    metrics = {"test/acc": res["acc"], "test/balanced_acc": res["balanced_acc"],
               **{f"test/{k}_acc": v for k, v in shots.items()}}
    ekld = consistency = np.full(data.num_classes, math.nan)
    if transform is not None and data.test_y.numel():
        idx = per_class_subset(data.test_y, ekld_per_class)
        inv = invariance_per_class(model, data.test_x[idx], data.test_y[idx], transform, ekld_samples,
                                   seed=seed + EKLD_SEED_OFFSET, num_classes=data.num_classes, device=device)
        ekld, consistency = inv.ekld, inv.consistency
    head, tail = acc.head_tail(ekld, counts)
    metrics.update({"ekld/mean": _nanmean(ekld), "ekld/head": head, "ekld/tail": tail,
                    "ekld/size_spearman": acc.size_spearman(ekld, counts), "consistency/mean": _nanmean(consistency)})
    return metrics, per_class_table(counts, res["per_class"], ekld, consistency)
