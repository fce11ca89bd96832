"""Can biases explain generalization, across a sweep's models? Spearman's rho of every bias probe against
every generalization metric over the sweep's finished trials (group means when repeats are on), overall
and within each value of a `--group-by` key, with the figures to read it (docs/science.md, "Reading the
bias report").

Files: bias_correlations.csv (probe, metric, group, rho, p, n), bias_correlations.png (heat maps, rho
shown as 0 where p >= 0.05), bias_matrix.png (probe against probe), bias_head_vs_tail.png (each probe's
head and tail values across the models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROBES = ("probe/lpp", "probe/hpp", "probe/spectral_bias", "probe/cb_center", "probe/cb_bandwidth",
          "probe/cb_peak_sensitivity")
GENERALIZATION = ("test/balanced_acc", "test/many_acc", "test/few_acc", "ekld/tail", "ekld/mean",
                  "probe/corruption_acc")
ALPHA = 0.05
MIN_MODELS = 5


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """(rho, p, n) over the pairs where both are finite; NaN where fewer than 3 pairs or a constant side."""
    from scipy import stats

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan, math.nan, n
    res = stats.spearmanr(a[ok], b[ok])
    return float(res.statistic), float(res.pvalue), n


def correlations(models: pd.DataFrame, group_by: str | None) -> pd.DataFrame:
    """One row per (probe, metric, group): rho, p, n. `models` has one row per model (trial or group)."""
    subsets: list[tuple[str, pd.DataFrame]] = [("all", models)]
    if group_by:
        subsets += [(f"{group_by}={v}", models[models[group_by] == v]) for v in sorted(models[group_by].unique())]
    rows = []
    for name, sub in subsets:
        for probe in PROBES:
            for metric in GENERALIZATION:
                x = sub[probe] if probe in sub else pd.Series(dtype=float)
                y = sub[metric] if metric in sub else pd.Series(dtype=float)
                rho, p, n = spearman(x.to_list(), y.to_list()) if len(x) and len(y) else (math.nan, math.nan, 0)
                rows.append({"probe": probe, "metric": metric, "group": name, "rho": rho, "p": p, "n": n})
    return pd.DataFrame(rows)


def _heat(ax: Any, grid: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str) -> Any:
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(cols)), [c.split("/")[-1] for c in cols], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [r.split("/")[-1] for r in rows], fontsize=7)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if math.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_title(title, fontsize=8)
    return image


def correlation_figure(table: pd.DataFrame, path: Path) -> Path:
    """One heat map per group: rho of probe (rows) against metric (columns), 0 where p >= 0.05."""
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys(table["group"]))
    fig = Figure(figsize=(4.6 * len(groups), 4.2), dpi=110)
    for k, name in enumerate(groups):
        sub = table[table["group"] == name]
        grid = np.full((len(PROBES), len(GENERALIZATION)), np.nan)
        for _, r in sub.iterrows():
            rho = 0.0 if not (r["p"] < ALPHA) and math.isfinite(r["rho"]) else r["rho"]
            grid[PROBES.index(r["probe"]), GENERALIZATION.index(r["metric"])] = rho
        n = int(sub["n"].max()) if len(sub) else 0
        image = _heat(fig.add_subplot(1, len(groups), k + 1), grid, PROBES, GENERALIZATION,
                      f"{name}: Spearman rho (0 where p >= {ALPHA}), n = {n}")
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    fig.savefig(path, bbox_inches="tight")
    return path


def probe_matrix_figure(models: pd.DataFrame, path: Path) -> Path:
    from matplotlib.figure import Figure

    names = [p for p in (*PROBES, "probe/corruption_acc") if p in models]
    grid = np.array([[spearman(models[a].to_list(), models[b].to_list())[0] for b in names] for a in names])
    fig = Figure(figsize=(5.2, 4.6), dpi=110)
    image = _heat(fig.add_subplot(1, 1, 1), grid, names, names, f"probe vs probe, Spearman rho (n = {len(models)})")
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    fig.savefig(path, bbox_inches="tight")
    return path


def head_tail_figure(models: pd.DataFrame, path: Path) -> Path:
    """For each probe, its head value against its tail value across the models (the diagonal: no difference)."""
    from matplotlib.figure import Figure

    names = [p for p in (*PROBES, "probe/corruption_acc") if f"{p}_head" in models and f"{p}_tail" in models]
    fig = Figure(figsize=(3.0 * max(len(names), 1), 3.1), dpi=110)
    for k, name in enumerate(names):
        ax = fig.add_subplot(1, max(len(names), 1), k + 1)
        head, tail = models[f"{name}_head"].to_numpy(float), models[f"{name}_tail"].to_numpy(float)
        ax.scatter(head, tail, s=14)
        finite = np.concatenate([head[np.isfinite(head)], tail[np.isfinite(tail)]])
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("tail", fontsize=7)
        ax.set_title(name.split("/")[-1], fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_bias_report(models: pd.DataFrame, out: Path, group_by: str | None) -> dict[str, Any]:
    """The files above into `out`; with fewer than MIN_MODELS models only a note (no figure drawn)."""
    if group_by and group_by not in models:
        from gitlib.errors import ConfigError

        raise ConfigError("--group-by", f"{group_by!r} is not a searched key of this sweep's models")
    table = correlations(models, group_by)
    table.to_csv(out / "bias_correlations.csv", index=False)
    if len(models) < MIN_MODELS:
        return {"models": len(models), "note": f"{len(models)} models: at least {MIN_MODELS} are needed to draw "
                                               "correlations across models"}
    correlation_figure(table, out / "bias_correlations.png")
    probe_matrix_figure(models, out / "bias_matrix.png")
    head_tail_figure(models, out / "bias_head_vs_tail.png")
    significant = table[(table["group"] == "all") & (table["p"] < ALPHA)]
    return {"models": len(models), "significant": [f"{r.probe} ~ {r.metric}: rho {r.rho:+.2f}"
                                                   for r in significant.itertuples()]}
