from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import zipf

from gitlib.data.profiles import class_counts, class_order


def test_exponential_exact_counts() -> None:
    counts = class_counts("exponential", 10, 500, 100.0)
    # n_k = int(500 * 100^(-k/9)), worked out by hand: 500 * 0.5995 = 299.7 -> 299, ...
    assert counts.tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert counts.dtype == np.int64


def test_zipf_from_ratio_exact_counts() -> None:
    counts = class_counts("zipf", 10, 500, 100.0)
    # alpha = ln 100 / ln 10 = 2: n_k = int(500 / k^2), k = 1..10
    assert counts.tolist() == [500, 125, 55, 31, 20, 13, 10, 7, 6, 5]
    # the ratio is exactly the imbalance ratio
    assert counts[0] / counts[-1] == 100


def test_paper_k49_lt_counts() -> None:
    counts = class_counts("zipf", 49, 4800, 1.0, zipf_alpha=2.0, min_per_class=5)
    # the paper's formula with scipy's Zipf pmf, computed independently
    expected = [max(int(4800 * zipf.pmf(k, 2.0) / zipf.pmf(1, 2.0)), 5) for k in range(1, 50)]
    assert counts.tolist() == expected
    # "about 7,800 training images": exactly 7,822
    assert counts.sum() == 7822
    assert counts[:4].tolist() == [4800, 1200, 533, 300]
    # the clip at 5 binds from rank 29 on
    assert (counts == 5).sum() == 21


def test_min_per_class_clip() -> None:
    counts = class_counts("exponential", 10, 500, 1000.0, min_per_class=20)
    raw = [int(500 * 1000 ** (-k / 9)) for k in range(10)]
    assert counts.tolist() == [max(v, 20) for v in raw]
    assert counts.min() == 20


def test_ratio_one_is_balanced() -> None:
    assert class_counts("exponential", 7, 50, 1.0).tolist() == [50] * 7
    assert class_counts("zipf", 7, 50, 1.0).tolist() == [50] * 7


@pytest.mark.parametrize("profile", ["zipf", "exponential"])
def test_instances_permute_classes(profile: str) -> None:
    base = class_counts(profile, 20, 300, 50.0, instance=0)
    # instance 0: identity order, class 0 is the largest and sizes fall with the label
    assert (np.diff(base) <= 0).all() and class_order(20, 0).tolist() == list(range(20))
    a = class_counts(profile, 20, 300, 50.0, instance=3)
    b = class_counts(profile, 20, 300, 50.0, instance=4)
    # other instances hand the same multiset of sizes to a different class order
    assert sorted(a.tolist()) == sorted(base.tolist()) and not np.array_equal(a, base)
    assert not np.array_equal(a, b)
    # the order depends on the instance alone: deterministic
    assert np.array_equal(a, class_counts(profile, 20, 300, 50.0, instance=3))
    assert a[class_order(20, 3)[0]] == 300
