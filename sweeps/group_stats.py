"""Statistics over a group's repeats (torch-free): means with Student-t 95% intervals, the value the
searcher optimises, per-class tables aligned by class or by class-size rank, and paired contrasts.

A group is one configuration run as N repeats that differ only in `search.repeat_over` (the seed, or the
data set instance), taking the values base, base + 1, ..., base + N - 1: repeat r of two groups shares
its seed (or instance), so two groups pair up repeat by repeat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scipy and pandas load when a table or a test needs them: `status` stays quick
    import pandas as pd

CONFIDENCE = 0.95
NOT_RESULTS = ("trial/", "time/", "generator/")  # bookkeeping of a run, not a result to average


def t_quantile(n: int) -> float:
    """The two-sided 95% Student quantile for n values (n - 1 degrees of freedom); NaN below 2 values."""
    from scipy.special import stdtrit  # the t quantile alone: a third of scipy.stats' import time

    return float(stdtrit(n - 1, 0.5 + CONFIDENCE / 2)) if n >= 2 else math.nan


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95% t-interval of the finite values; n counts them."""

    mean: float
    std: float
    ci95_low: float
    ci95_high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.ci95_high - self.ci95_low) / 2


def summarize(values: Iterable[float]) -> Summary:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Summary(mean, math.nan, math.nan, math.nan, 1)
    std = float(v.std(ddof=1))
    half = t_quantile(n) * std / math.sqrt(n)
    return Summary(mean, std, mean - half, mean + half, n)


def group_value(values: Sequence[float], stat: str, mode: str) -> float:
    """The one number the searcher receives for a group: mean, median, or the lower confidence bound
    (mean - t * sem when maximising, mean + t * sem when minimising; the mean for a single value)."""
    s = summarize(values)
    if s.n == 0:
        return math.nan
    if stat == "median":
        return float(np.median([x for x in values if math.isfinite(x)]))
    if stat == "lcb" and s.n >= 2:
        sem = s.std / math.sqrt(s.n)
        return s.mean - t_quantile(s.n) * sem if mode == "max" else s.mean + t_quantile(s.n) * sem
    return s.mean


def summary_metrics(repeats: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """For every metric m of the repeats: m (the mean), m/std, m/ci95_low, m/ci95_high; group/n_finished."""
    out: dict[str, float] = {"group/n_finished": float(len(repeats))}
    for key in sorted({k for r in repeats for k in r}):
        s = summarize(r.get(key, math.nan) for r in repeats)
        out.update({key: s.mean, f"{key}/std": s.std, f"{key}/ci95_low": s.ci95_low,
                    f"{key}/ci95_high": s.ci95_high})
    return out


def aligned(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """A per-class table keyed by `class` (by="class") or by class-size rank (by="rank": 1 = the largest
    class, ties broken by class id), the way instance repeats with different class orders line up."""
    if by == "class":
        return table.set_index("class", drop=False)
    ranked = table.sort_values(["train_count", "class"], ascending=[False, True]).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked.set_index("rank", drop=False)


def per_class_summary(tables: Sequence[pd.DataFrame], by: str) -> pd.DataFrame:
    """Mean, std and 95% CI of every per-class value over repeats, aligned by class or by size rank."""
    import pandas as pd

    frames = [aligned(t, by) for t in tables]
    keys = frames[0].index
    values = [c for c in frames[0].columns if c not in ("class", "rank", "train_count") and
              pd.api.types.is_numeric_dtype(frames[0][c])]
    out = pd.DataFrame({by: keys})
    out["train_count"] = np.mean([f.loc[keys, "train_count"].to_numpy(np.float64) for f in frames], axis=0)
    for col in values:
        grid = np.stack([f.loc[keys, col].to_numpy(np.float64) for f in frames])  # (repeats, classes)
        rows = [summarize(grid[:, i]) for i in range(grid.shape[1])]
        out[col] = [r.mean for r in rows]
        out[f"{col}_std"] = [r.std for r in rows]
        out[f"{col}_ci95_low"] = [r.ci95_low for r in rows]
        out[f"{col}_ci95_high"] = [r.ci95_high for r in rows]
        out[f"{col}_n"] = [r.n for r in rows]
    return out


@dataclass(frozen=True)
class Contrast:
    """Paired difference a - b over the repeats both groups finished."""

    mean: float
    ci95_low: float
    ci95_high: float
    p_ttest: float
    p_wilcoxon: float
    n: int


def paired_contrast(a: Mapping[int, float], b: Mapping[int, float]) -> Contrast:
    """a and b map repeat index -> value; only repeats finite in both are paired."""
    from scipy import stats

    common = sorted(r for r in set(a) & set(b) if math.isfinite(a[r]) and math.isfinite(b[r]))
    diff = np.asarray([a[r] - b[r] for r in common], dtype=np.float64)
    s = summarize(diff.tolist())
    p_t = p_w = math.nan
    if len(diff) >= 2 and np.ptp(diff) > 0:  # without spread the t statistic is undefined
        p_t = float(stats.ttest_1samp(diff, 0.0).pvalue)
    if len(diff) >= 1 and np.any(diff != 0):
        p_w = float(stats.wilcoxon(diff).pvalue)
    return Contrast(s.mean, s.ci95_low, s.ci95_high, p_t, p_w, len(diff))


@dataclass
class GroupResult:
    """A group as its kept results show it: the records of its repeats, the finished ones' final
    metrics, and the per-class summary aligned by class (seed repeats) or size rank (instance repeats)."""

    group_id: str
    records: list  # sweeps.results.TrialRecord of every repeat started
    finals: dict[int, dict[str, float]]  # repeat -> final metrics of the finished repeats
    per_class: pd.DataFrame | None

    @property
    def metrics(self) -> dict[str, float]:
        return summary_metrics(list(self.finals.values()))

    @property
    def ekld_band(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(train counts, mean eKLD, 95% CI low, high) per class, as gitlib.plots.ekld_bands draws it; None
        without per-class eKLD."""
        t = self.per_class
        if t is None or "ekld" not in t or not np.isfinite(t["ekld"].to_numpy(dtype=float)).any():
            return None
        return (t["train_count"].to_numpy(), t["ekld"].to_numpy(), t["ekld_ci95_low"].to_numpy(),
                t["ekld_ci95_high"].to_numpy())

    def repeat_values(self, key: str) -> dict[int, float]:
        return {r: float(f.get(key, math.nan)) for r, f in self.finals.items()}


def group_result(group_id: str, records: Sequence, results: Path, repeat_over: str,
                 per_class: bool = True) -> GroupResult:
    """Collect a group's finished repeats from `results/<trial_id>/` (sweeps.results); `per_class=False`
    skips the per-class tables (what `status` needs is the final metrics only)."""
    from sweeps import results as rs

    finals, tables = {}, []
    for rec in records:
        final = rs.read_final(results / rec.trial_id) if rec.status == "TERMINATED" else None
        if final is None:
            continue
        finals[rec.repeat] = {k: float(v) for k, v in final.items() if "/" in k and not k.startswith(NOT_RESULTS)}
        table = rs.read_per_class(results / rec.trial_id) if per_class else None
        if table is not None:
            tables.append(table.to_pandas())
    by = "rank" if repeat_over == "dataset.instance" else "class"
    return GroupResult(group_id, list(records), finals, per_class_summary(tables, by) if tables else None)
