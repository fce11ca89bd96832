"""Groups of repeats, their one owner (torch- and Ray-free): the `Group` type, the one function from a
group's finished repeats to its statistics, per-class summaries, paired contrasts, and the one table
printer of the closing summary, `status` and `report`.

A group is one configuration run as up to N repeats that differ only in `search.repeat_over` (the seed,
or the data set instance), taking the values base, base + 1, ...: repeat r of two groups shares its seed
(or instance), so two groups pair up repeat by repeat. Without repeats every trial is a group of one.
The searcher (what Optuna is told, racing), the MLflow group runs, `status`, `report` and the closing
summary all read a group's numbers from `Group.stats` / `Group.metrics` here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sweeps import results as rs

if TYPE_CHECKING:  # scipy and pandas load when a table or a test needs them: `status` stays quick
    import pandas as pd

CONFIDENCE = 0.95
NOT_RESULTS = ("trial/", "time/", "generator/")  # bookkeeping of a run, not a result to average


def t_quantile(n: int) -> float:
    """The two-sided 95% Student quantile for n values (n - 1 degrees of freedom); NaN below 2 values."""
    from scipy.special import stdtrit  # the t quantile alone: a third of scipy.stats' import time

    return float(stdtrit(n - 1, 0.5 + CONFIDENCE / 2)) if n >= 2 else math.nan


@dataclass(frozen=True)
class Stats:
    """Of the finite values: n, mean, sample standard deviation, Student-t 95% interval, median."""

    n: int
    mean: float
    std: float
    ci95_low: float
    ci95_high: float
    median: float

    @property
    def half_width(self) -> float:
        return (self.ci95_high - self.ci95_low) / 2

    def lcb(self, mode: str) -> float:
        """The confidence bound on the pessimistic side of the objective (the mean for a single value)."""
        if self.n < 2:
            return self.mean
        return self.ci95_low if mode == "max" else self.ci95_high

    def value(self, stat: str, mode: str) -> float:
        """The one number the searcher receives: mean, median or lcb (search.group_stat)."""
        if stat == "median":
            return self.median
        return self.lcb(mode) if stat == "lcb" else self.mean


def stats(values: Iterable[float | None]) -> Stats:
    """The statistics of the finite values (NaN, None and infinities are left out, and n says so)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return Stats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean, median = float(v.mean()), float(np.median(v))
    if n == 1:
        return Stats(1, mean, math.nan, math.nan, math.nan, median)
    std = float(v.std(ddof=1))
    half = t_quantile(n) * std / math.sqrt(n)
    return Stats(n, mean, std, mean - half, mean + half, median)


@dataclass
class Repeat:
    """One repeat of a group: its Tune trial, state, and final metrics once it finished."""

    trial_id: str
    status: str = "PENDING"  # Tune's PENDING, RUNNING, TERMINATED, ERROR; STOPPED: stopped by the race
    metrics: dict[str, float] | None = None


@dataclass
class Group:
    """One configuration and its repeats."""

    group_id: str
    params: dict[str, Any]  # the searched values, without the repeat key
    repeats: dict[int, Repeat] = field(default_factory=dict)
    number: int | None = None  # the Optuna trial that proposed it
    config: dict[str, Any] = field(default_factory=dict)  # flattened resolved config (what ran), for the report

    @property
    def finished(self) -> dict[int, dict[str, float]]:
        """Repeat -> final metrics of every finished repeat."""
        return {r: rep.metrics for r, rep in sorted(self.repeats.items()) if rep.metrics is not None}

    @property
    def failed(self) -> int:
        return sum(rep.status == "ERROR" for rep in self.repeats.values())

    def values(self, metric: str) -> dict[int, float]:
        """Repeat -> the metric's value, over the finished repeats (NaN where a repeat lacks it)."""
        return {r: float(m.get(metric, math.nan)) for r, m in self.finished.items()}

    def stats(self, metric: str) -> Stats:
        return stats(self.values(metric).values())

    def metrics(self) -> dict[str, float]:
        """For every metric m of the finished repeats: m (the mean), m/std, m/ci95_low, m/ci95_high; and
        group/n_finished. What the MLflow group run holds."""
        finished = self.finished
        out: dict[str, float] = {"group/n_finished": float(len(finished))}
        for key in sorted({k for m in finished.values() for k in m}):
            s = self.stats(key)
            out.update({key: s.mean, f"{key}/std": s.std, f"{key}/ci95_low": s.ci95_low,
                        f"{key}/ci95_high": s.ci95_high})
        return out


def result_metrics(final: Mapping[str, Any]) -> dict[str, float]:
    """The results of a final.json worth averaging over repeats (its bookkeeping left out)."""
    return {k: float(v) for k, v in final.items()
            if "/" in k and not k.startswith(NOT_RESULTS) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def collect(records: Sequence[rs.TrialRecord], results: Path, repeat_key: str | None) -> list[Group]:
    """The sweep's groups from its trial index and kept results (`results/<trial_id>/final.json`), in
    group order. A repeat's metrics are its final.json's results; a repeat without one has none.
    `repeat_key`: the key a group's repeats differ in (left out of its params); None without repeats."""
    groups: dict[str, Group] = {}
    for rec in sorted(records, key=lambda r: (r.group_id, r.repeat)):
        g = groups.get(rec.group_id)
        if g is None:
            params = {k: v for k, v in sorted(rs.sampled_values(rec.config).items()) if k != repeat_key}
            g = groups[rec.group_id] = Group(rec.group_id, params)
        final = rs.read_final(results / rec.trial_id) if rec.status == "TERMINATED" else None
        status = "STOPPED" if rec.stopped_by_race else rec.status
        g.repeats[rec.repeat] = Repeat(rec.trial_id, status, result_metrics(final) if final else None)
    return list(groups.values())


# ---- per-class tables ---------------------------------------------------------------------------

def aligned(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """A per-class table keyed by `class` (by="class") or by class-size rank (by="rank": 1 = the largest
    class, ties broken by class id), the way instance repeats with different class orders line up."""
    if by == "class":
        return table.set_index("class", drop=False)
    ranked = table.sort_values(["train_count", "class"], ascending=[False, True]).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked.set_index("rank", drop=False)


def align_by(repeat_key: str) -> str:
    """Seed repeats share the class order (align by class); instance repeats do not (align by size rank)."""
    return "rank" if repeat_key == "dataset.instance" else "class"


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
        rows = [stats(grid[:, i]) for i in range(grid.shape[1])]
        out[col] = [r.mean for r in rows]
        out[f"{col}_std"] = [r.std for r in rows]
        out[f"{col}_ci95_low"] = [r.ci95_low for r in rows]
        out[f"{col}_ci95_high"] = [r.ci95_high for r in rows]
        out[f"{col}_n"] = [r.n for r in rows]
    return out


def per_class_tables(group: Group, results: Path) -> dict[int, pd.DataFrame]:
    """Repeat -> per-class table of every finished repeat that kept one."""
    out = {}
    for r in group.finished:
        table = rs.read_per_class(results / group.repeats[r].trial_id)
        if table is not None:
            out[r] = table.to_pandas()
    return out


def group_per_class(group: Group, results: Path, by: str) -> pd.DataFrame | None:
    tables = per_class_tables(group, results)
    return per_class_summary(list(tables.values()), by) if tables else None


Band = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def colour(group_id: str) -> str:
    """A group's colour, the same in every figure of a sweep (its trials', its own, the report's):
    matplotlib's ten-colour cycle by the group's number (g0003 -> C3; a trial outside any group by its id).
    Beyond ten groups the colours repeat."""
    digits = group_id.lstrip("g")
    number = int(digits) if digits.isdigit() else int.from_bytes(group_id.encode()[-4:], "big")
    return f"C{number % 10}"


def ekld_band(table: pd.DataFrame | None) -> Band | None:
    """(train counts, mean eKLD, 95% CI low, high) per class of a group's per-class summary, as
    gitlib.plots.ekld_bands draws it; None without per-class eKLD."""
    if table is None or "ekld" not in table or not np.isfinite(table["ekld"].to_numpy(dtype=float)).any():
        return None
    return (table["train_count"].to_numpy(), table["ekld"].to_numpy(), table["ekld_ci95_low"].to_numpy(),
            table["ekld_ci95_high"].to_numpy())


# ---- paired contrasts ---------------------------------------------------------------------------

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
    from scipy import stats as st

    common = sorted(r for r in set(a) & set(b) if math.isfinite(a[r]) and math.isfinite(b[r]))
    diff = np.asarray([a[r] - b[r] for r in common], dtype=np.float64)
    s = stats(diff.tolist())
    p_t = p_w = math.nan
    if len(diff) >= 2 and np.ptp(diff) > 0:  # without spread the t statistic is undefined
        p_t = float(st.ttest_1samp(diff, 0.0).pvalue)
    if len(diff) >= 1 and np.any(diff != 0):
        p_w = float(st.wilcoxon(diff).pvalue)
    return Contrast(s.mean, s.ci95_low, s.ci95_high, p_t, p_w, len(diff))


# ---- the one table printer ----------------------------------------------------------------------

def _cell(s: Stats) -> str:
    if s.n == 0:
        return "-"
    return f"{s.mean:.4f}" + (f" [{s.ci95_low:.4f}, {s.ci95_high:.4f}]" if s.n > 1 else "")


def table_text(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as aligned columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(*rows, strict=True)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_groups(groups: Sequence[Group], metrics: Sequence[str], repeats: int,
                  notes: Mapping[str, str] | None = None) -> str:
    """One line per group: its id, the searched values that tell the groups apart, repeats finished of
    `repeats`, and each metric's mean [95% CI]; `notes` (group id -> text) adds a last column (the race)."""
    keys = sorted({k for g in groups for k in g.params})
    varied = [k for k in keys if len({rs.short(g.params.get(k)) for g in groups}) > 1] or keys
    header = ["group", *[k.split(".")[-1] for k in varied], "finished", *metrics, *(["race"] if notes else [])]
    rows = [header]
    for g in groups:
        rows.append([g.group_id, *[rs.short(g.params.get(k, "-")) for k in varied],
                     f"{len(g.finished)}/{repeats}" + (f" ({g.failed} failed)" if g.failed else ""),
                     *[_cell(g.stats(m)) for m in metrics], *([notes.get(g.group_id, "")] if notes else [])])
    return table_text(rows)
