"""Group statistics (sweeps.groups, their one owner): means, t-intervals, the searcher's group value,
per-class alignment, paired contrasts, checked against numpy / scipy; and the one table printer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from sweeps.groups import Group, Repeat, format_groups, paired_contrast, per_class_summary, stats


def test_summary_is_mean_std_and_student_t_interval() -> None:
    values = [0.61, 0.70, 0.66, 0.58]
    s = stats(values)
    half = st.t.ppf(0.975, 3) * np.std(values, ddof=1) / math.sqrt(4)
    assert s.mean == pytest.approx(np.mean(values)) and s.std == pytest.approx(np.std(values, ddof=1))
    assert (s.ci95_low, s.ci95_high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    assert s.n == 4
    assert stats([0.5, math.nan]).n == 1 and math.isnan(stats([0.5]).ci95_low)  # one value: no interval
    assert stats([]).n == 0 and math.isnan(stats([]).mean)
    assert s.median == pytest.approx(np.median(values))


def test_group_value_mean_median_and_lower_confidence_bound() -> None:
    values = [0.2, 0.5, 0.3]
    sem = np.std(values, ddof=1) / math.sqrt(3)
    t = st.t.ppf(0.975, 2)
    assert stats(values).value("mean", "max") == pytest.approx(np.mean(values))
    assert stats(values).value("median", "max") == pytest.approx(0.3)
    # lcb: pessimistic in the direction of the objective
    assert stats(values).value("lcb", "max") == pytest.approx(np.mean(values) - t * sem)
    assert stats(values).value("lcb", "min") == pytest.approx(np.mean(values) + t * sem)
    assert stats([0.4]).value("lcb", "max") == 0.4  # a single repeat has no spread to subtract
    assert math.isnan(stats([math.nan]).value("mean", "max"))


def _group() -> Group:
    g = Group("g0000", {"classifier.gen_frac": 0.5})
    g.repeats = {0: Repeat("a", "TERMINATED", {"test/acc": 0.5, "ekld/tail": 0.1}), 1: Repeat("b", "ERROR"),
                 2: Repeat("c", "TERMINATED", {"test/acc": 0.7, "ekld/tail": 0.3}), 3: Repeat("d", "RUNNING")}
    return g


def test_group_metrics_are_over_its_finished_repeats() -> None:
    g = _group()
    m = g.metrics()
    assert m["group/n_finished"] == 2.0 and g.failed == 1  # the failed and the running repeat are left out
    assert m["test/acc"] == pytest.approx(0.6) and m["test/acc/std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert m["ekld/tail/ci95_high"] > m["ekld/tail"] > m["ekld/tail/ci95_low"]


def test_paired_contrast_matches_scipy() -> None:
    a = {0: 0.30, 1: 0.42, 2: 0.35, 3: 0.50, 4: 0.41}
    b = {0: 0.36, 1: 0.45, 2: 0.44, 3: 0.52, 4: 0.50, 5: 0.1}  # repeat 5 has no partner: left out
    c = paired_contrast(a, b)
    x, y = np.array([a[r] for r in range(5)]), np.array([b[r] for r in range(5)])
    assert c.n == 5 and c.mean == pytest.approx(np.mean(x - y))
    assert c.p_ttest == pytest.approx(st.ttest_rel(x, y).pvalue)  # the paired t-test
    assert c.p_wilcoxon == pytest.approx(st.wilcoxon(x - y).pvalue)  # the signed-rank test
    half = st.t.ppf(0.975, 4) * np.std(x - y, ddof=1) / math.sqrt(5)
    assert (c.ci95_low, c.ci95_high) == pytest.approx((c.mean - half, c.mean + half))


def _table(order: list[int], sizes: list[int], ekld: list[float]) -> pd.DataFrame:
    """A per-class table whose class order[k] has the k-th size (as an instance's class order does)."""
    counts = np.empty(len(order), dtype=np.int64)
    counts[order] = sizes
    e = np.empty(len(order))
    e[order] = ekld
    return pd.DataFrame({"class": np.arange(len(order)), "train_count": counts, "accuracy": 1 - e, "ekld": e,
                         "consistency": 1 - e / 2})


def test_instance_repeats_align_by_size_rank_seed_repeats_by_class() -> None:
    sizes = [100, 30, 10, 3]
    # two instances with different class orders; eKLD depends on the size rank, not the class id
    a = _table([2, 0, 3, 1], sizes, [0.1, 0.2, 0.3, 0.4])
    b = _table([1, 3, 0, 2], sizes, [0.3, 0.4, 0.5, 0.6])
    by_rank = per_class_summary([a, b], "rank")
    assert by_rank["rank"].tolist() == [1, 2, 3, 4]  # 1 = the largest class
    assert by_rank["train_count"].tolist() == sizes  # a rank has the same size in every instance
    assert by_rank["ekld"].tolist() == pytest.approx([0.2, 0.3, 0.4, 0.5])  # mean at each rank
    assert by_rank["ekld_n"].tolist() == [2, 2, 2, 2]
    by_class = per_class_summary([a, b], "class")
    # by class id the same rows would mix sizes: class 0 is rank 2 in one instance and rank 3 in the other
    assert by_class.loc[by_class["class"] == 0, "ekld"].item() == pytest.approx((0.2 + 0.5) / 2)
    assert by_class.loc[by_class["class"] == 0, "train_count"].item() == pytest.approx((30 + 10) / 2)


def test_one_table_for_summary_status_and_report() -> None:
    g, other = _group(), Group("g0001", {"classifier.gen_frac": 0.0})
    other.repeats = {0: Repeat("e", "TERMINATED", {"test/acc": 0.4, "ekld/tail": 0.2})}
    text = format_groups([g, other], ["test/acc"], 4, {"g0001": "dropped at 1"})
    header, first, second = text.splitlines()
    assert header.split() == ["group", "gen_frac", "finished", "test/acc", "race"]
    s = stats([0.5, 0.7])
    # mean [95% CI] from the one statistics function; failed repeats counted
    assert f"{s.mean:.4f} [{s.ci95_low:.4f}, {s.ci95_high:.4f}]" in first and "2/4 (1 failed)" in first
    assert second.split()[:4] == ["g0001", "0", "1/4", "0.4000"] and second.endswith("dropped at 1")
