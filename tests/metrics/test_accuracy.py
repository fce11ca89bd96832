"""Per-class accuracy, shot groups, head / tail, Spearman, the per-class table and its figure."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from gitlib.metrics import accuracy as acc
from gitlib.metrics.table import COLUMNS, format_table, per_class_table
from gitlib.plots import ekld_vs_class_size

DIGITS_COUNTS = np.array([int(500 * 100 ** (-k / 9)) for k in range(10)])  # 500 ... 5


def test_per_class_and_balanced_accuracy() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 3])
    preds = np.array([0, 0, 0, 1, 1, 0, 3])
    pc = acc.per_class_accuracy(preds, labels, 4)
    assert pc[:2].tolist() == [0.75, 0.5] and pc[3] == 1.0
    assert math.isnan(pc[2])  # no test images of class 2
    assert acc.balanced_accuracy(pc) == pytest.approx((0.75 + 0.5 + 1.0) / 3)  # mean over present classes


def test_shot_groups_non_empty_on_digits_and_scaled_for_small_sets() -> None:
    groups = acc.shot_groups(DIGITS_COUNTS)
    sizes = {k: int(v.sum()) for k, v in groups.items()}
    assert sizes == {"many": 4, "medium": 3, "few": 3}  # digits max 500, ratio 100 uses 100 / 20 as is
    assert acc.shot_thresholds(50) == (10.0, 2.0)  # max 50: both thresholds scaled by 50 / 500
    assert acc.shot_thresholds(4800) == (100.0, 20.0)  # large sets keep the paper's thresholds
    # every class is in exactly one group
    assert (sum(v.astype(int) for v in groups.values()) == 1).all()


def test_shot_accuracies_average_within_groups() -> None:
    pc = np.linspace(1.0, 0.1, 10)
    shots = acc.shot_accuracies(pc, DIGITS_COUNTS)
    assert shots["many"] == pytest.approx(pc[:4].mean())
    assert shots["few"] == pytest.approx(pc[7:].mean())


def test_head_tail_and_spearman() -> None:
    counts = np.array([5, 500, 50, 200, 20, 8])
    ekld = np.array([0.9, 0.1, 0.4, 0.2, 0.6, 0.8])  # falls as the class grows
    head, tail = acc.head_tail(ekld, counts)
    assert head == pytest.approx((0.1 + 0.2) / 2)  # two largest classes (500, 200)
    assert tail == pytest.approx((0.8 + 0.9) / 2)  # two smallest (8, 5)
    assert acc.size_spearman(ekld, counts) == pytest.approx(-1.0)
    with_nan = ekld.copy()
    with_nan[2] = np.nan
    assert acc.size_spearman(with_nan, counts) == pytest.approx(-1.0)  # NaN classes are left out
    assert math.isnan(acc.size_spearman(np.full(6, np.nan), counts))


def test_table_parquet_and_plot(tmp_path) -> None:
    counts = DIGITS_COUNTS
    ekld = np.linspace(0.5, 0.05, 10)
    table = per_class_table(counts, np.linspace(0.2, 0.9, 10), ekld, np.linspace(0.6, 0.95, 10))
    assert tuple(table.column_names) == COLUMNS
    pq.write_table(table, tmp_path / "per_class.parquet")
    back = pq.read_table(tmp_path / "per_class.parquet")
    assert back.equals(table)
    assert "train" in format_table(table).splitlines()[0]
    with pytest.raises(ValueError):
        per_class_table(counts, np.zeros(9), ekld, ekld)  # one value per class
    png = ekld_vs_class_size(table, tmp_path / "fig" / "ekld.png", spearman=-0.9, title="digits")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
