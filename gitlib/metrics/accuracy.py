"""Accuracy per class and by class-size group, and how invariance relates to class size.

Many / medium / few shot: more than 100, 20 to 100, fewer than 20 training images (the convention of
CIFAR-100-LT / ImageNet-LT). The thresholds were defined for a largest class of 500 images (CIFAR-100-LT);
sets whose largest class is smaller scale both thresholds by max_count / 500, so the groups stay
non-empty on small CPU sets (digits with max 500 and ratio 100 uses them unchanged: 4 / 3 / 3 classes).
Larger sets keep 100 / 20, as the paper reports them for K49 and CIFAR-10-LT.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

MANY_SHOT = 100  # more than this many training images
FEW_SHOT = 20  # fewer than this
REFERENCE_MAX = 500  # largest class of the set the thresholds were defined on (CIFAR-100-LT)


def per_class_accuracy(preds: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                       num_classes: int) -> np.ndarray:
    """(num_classes,) share of correct predictions per true class; NaN for classes absent from `labels`."""
    p = np.asarray(preds.cpu() if isinstance(preds, torch.Tensor) else preds).astype(np.int64)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    total = np.bincount(y, minlength=num_classes).astype(np.float64)
    correct = np.bincount(y[p == y], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct / total


def balanced_accuracy(per_class: np.ndarray) -> float:
    """Mean of the per-class accuracies over the classes present."""
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else math.nan


def shot_thresholds(max_count: int) -> tuple[float, float]:
    """(many, few): a class is many-shot if n > many, few-shot if n < few, medium otherwise."""
    scale = min(1.0, max_count / REFERENCE_MAX)
    return MANY_SHOT * scale, FEW_SHOT * scale


def shot_groups(train_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over classes: 'many', 'medium', 'few'."""
    counts = np.asarray(train_counts)
    many, few = shot_thresholds(int(counts.max()))
    return {"many": counts > many, "medium": (counts >= few) & (counts <= many), "few": counts < few}


def shot_accuracies(per_class: np.ndarray, train_counts: np.ndarray) -> dict[str, float]:
    """Mean per-class accuracy within each group; NaN for an empty group."""
    out = {}
    for name, mask in shot_groups(train_counts).items():
        vals = per_class[mask]
        out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    return out


def size_spearman(values: np.ndarray, train_counts: np.ndarray) -> float:
    """Spearman rank correlation of a per-class value (eKLD) with class size, over classes with a value."""
    v = np.asarray(values, dtype=np.float64)
    n = np.asarray(train_counts, dtype=np.float64)
    ok = np.isfinite(v)
    if ok.sum() < 3 or np.unique(v[ok]).size < 2 or np.unique(n[ok]).size < 2:
        return math.nan
    return float(stats.spearmanr(n[ok], v[ok]).statistic)


def head_tail(values: np.ndarray, train_counts: np.ndarray) -> tuple[float, float]:
    """Mean of `values` over the largest third and the smallest third of classes by training count."""
    counts = np.asarray(train_counts)
    order = np.argsort(-counts, kind="stable")  # largest first; ties keep class order
    third = max(1, len(counts) // 3)
    v = np.asarray(values, dtype=np.float64)

    def mean(idx: np.ndarray) -> float:
        vals = v[idx]
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan

    return mean(order[:third]), mean(order[-third:])
