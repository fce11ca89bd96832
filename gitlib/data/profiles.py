"""Long-tailed class-size profiles: exact integer counts per class, in a per-instance class order.

Sizes are computed by rank (largest first) and then handed to classes in the order given by
`class_order(num_classes, instance)`:

- exponential (CIFAR-LT, Cao et al.): n_k = int(n_max * rho^(-k / (C - 1))), k = 0..C-1;
- zipf (K49-LT): n_k = int(n_max * pmf(k) / pmf(1)) = int(n_max * k^-alpha), k = 1..C, with alpha either
  given (paper: 2.0) or alpha = ln(rho) / ln(C) so that n_1 / n_C = rho.

Both are clipped below at `min_per_class` (paper K49-LT: 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gitlib.registry import Registry

# name -> sizes by rank, largest first: f(num_classes, max_per_class, imbalance_ratio, zipf_alpha)
SizeProfile = Callable[[int, int, float, "float | None"], np.ndarray]
PROFILES: Registry[SizeProfile] = Registry("dataset.profile")

# int() of a product that is mathematically an integer (e.g. 500 * 100^-1) must not fall one short
# because of rounding in the power: nudge by a relative 1e-9 before flooring.
_EPS = 1e-9


def _floor(values: np.ndarray) -> np.ndarray:
    return np.floor(values * (1.0 + _EPS)).astype(np.int64)


def exponential_sizes(num_classes: int, max_per_class: int, imbalance_ratio: float) -> np.ndarray:
    """Sizes by rank, largest first: int(n_max * rho^(-k/(C-1))) for k = 0..C-1."""
    if num_classes == 1:
        return np.array([max_per_class], dtype=np.int64)
    k = np.arange(num_classes, dtype=np.float64)
    return _floor(max_per_class * imbalance_ratio ** (-k / (num_classes - 1)))


def zipf_alpha_for(num_classes: int, imbalance_ratio: float) -> float:
    """The Zipf exponent whose first / last size ratio is `imbalance_ratio` over `num_classes` ranks."""
    return math.log(imbalance_ratio) / math.log(num_classes) if num_classes > 1 else 0.0


def zipf_sizes(num_classes: int, max_per_class: int, alpha: float) -> np.ndarray:
    """Sizes by rank, largest first: int(n_max * k^-alpha) for k = 1..C (Zipf pmf(k) / pmf(1))."""
    k = np.arange(1, num_classes + 1, dtype=np.float64)
    return _floor(max_per_class * k ** (-alpha))


@PROFILES.register("exponential")
def _exponential(num_classes: int, max_per_class: int, imbalance_ratio: float, zipf_alpha: float | None) -> np.ndarray:
    return exponential_sizes(num_classes, max_per_class, imbalance_ratio)


@PROFILES.register("zipf")
def _zipf(num_classes: int, max_per_class: int, imbalance_ratio: float, zipf_alpha: float | None) -> np.ndarray:
    alpha = zipf_alpha if zipf_alpha is not None else zipf_alpha_for(num_classes, imbalance_ratio)
    return zipf_sizes(num_classes, max_per_class, alpha)


def class_order(num_classes: int, instance: int) -> np.ndarray:
    """Class label receiving the k-th largest size. Instance 0 is the identity (class 0 largest, the
    CIFAR-LT convention); instance i > 0 is a permutation seeded by i alone, so an instance means the
    same class order whatever the other settings."""
    if instance == 0:
        return np.arange(num_classes, dtype=np.int64)
    return np.random.default_rng([instance, num_classes]).permutation(num_classes).astype(np.int64)


def class_counts(
    profile: str,
    num_classes: int,
    max_per_class: int,
    imbalance_ratio: float,
    zipf_alpha: float | None = None,
    min_per_class: int = 1,
    instance: int = 0,
) -> np.ndarray:
    """Training images per class label, (num_classes,) int64, for one profile and class order."""
    sizes = np.maximum(PROFILES.get(profile)(num_classes, max_per_class, imbalance_ratio, zipf_alpha), min_per_class)
    counts = np.empty(num_classes, dtype=np.int64)
    counts[class_order(num_classes, instance)] = sizes
    return counts
