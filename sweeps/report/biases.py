"""Can biases explain generalization, across a sweep's models? Spearman's rho of every bias probe against
every generalization metric over the sweep's models, overall and within each value of a `--group-by` key,
with the figures to read it (docs/science.md, "Reading the bias report").

The models (`--population`): the finished trials, or with repeats by default the groups (each with its
means over its repeats). A model is counted once: trials (or groups) of the same configuration and seed,
which a sampler can propose twice, are one model, and the report says how many such duplicates it dropped.

Files: bias_correlations.csv (probe, metric, group, rho, p, n), bias_correlations.png (heat maps, rho
shown as 0 where p >= 0.05, each cell with its n), bias_matrix.png (probe against probe, each cell with its
n), bias_head_vs_tail.png (each probe's head and tail values across the models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gitlib.errors import ConfigError
from sweeps.config import SweepConfig

PROBES = ("probe/lpp", "probe/hpp", "probe/spectral_bias", "probe/cb_center", "probe/cb_bandwidth",
          "probe/cb_peak_sensitivity")
GENERALIZATION = ("test/balanced_acc", "test/many_acc", "test/few_acc", "ekld/tail", "ekld/mean",
                  "probe/corruption_acc")
ALPHA = 0.05
MIN_MODELS = 5


POPULATIONS = ("trials", "groups")


@dataclass(frozen=True)
class Population:
    """The models the correlations run over: one row each, duplicates dropped."""

    models: pd.DataFrame
    name: str  # "trials" | "groups"
    duplicates: int  # rows dropped as the same model (same configuration and seed) counted again


def check_population(cfg: SweepConfig, which: str | None) -> str:
    """`--population` as given (ConfigError if the sweep has no such models), else the default."""
    which = which or ("groups" if cfg.search.repeats > 1 else "trials")
    if which not in POPULATIONS:
        raise ConfigError("--population", f"one of {', '.join(POPULATIONS)}, got {which!r}")
    if which == "groups" and cfg.search.repeats < 2:
        raise ConfigError("--population", "groups are repeats of a configuration, and this sweep ran one trial "
                                          "per configuration (search.repeats: 1): its models are its trials")
    return which


def population(cfg: SweepConfig, trials: pd.DataFrame, groups: pd.DataFrame, which: str | None) -> Population:
    """The finished trials (`trials`) or the groups' means (`groups`, the default with repeats), each model
    once: rows with the same searched values (and, for trials of a sweep with repeats, the same repeat key)
    are one configuration run with one seed, the same model however often it was proposed."""
    which = check_population(cfg, which)
    if which == "groups":
        models, keys = groups, list(cfg.search.space)
    else:
        models = trials[trials["state"] == "TERMINATED"] if "state" in trials else trials
        keys = [*cfg.search.space, *([cfg.search.repeat_over] if cfg.search.repeats > 1 else [])]
    keys = [k for k in dict.fromkeys(keys) if k in models]
    if keys:
        same = models[keys].astype(str).duplicated(keep="first")
    else:  # nothing searched: every trial ran the one configuration with the one seed
        same = pd.Series([i > 0 for i in range(len(models))], index=models.index, dtype=bool)
    return Population(models[~same].reset_index(drop=True), which, int(same.sum()))


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


def _heat(ax: Any, grid: np.ndarray, counts: np.ndarray, rows: Sequence[str], cols: Sequence[str],
          title: str) -> Any:
    """rho as colour and text, and under it each cell's n: the models where both sides were measured,
    which differs between cells wherever a probe or metric is missing (NaN) for some models."""
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(cols)), [c.split("/")[-1] for c in cols], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [r.split("/")[-1] for r in rows], fontsize=7)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            rho = f"{grid[i, j]:.2f}\n" if math.isfinite(grid[i, j]) else ""
            dark = math.isfinite(grid[i, j]) and abs(grid[i, j]) > 0.6  # white text on the deep colours
            ax.text(j, i, f"{rho}n={int(counts[i, j])}", ha="center", va="center", fontsize=5,
                    color="white" if dark else "black")
    ax.set_title(title, fontsize=8)
    return image


def _n_range(counts: np.ndarray) -> str:
    lo, hi = (int(counts.min()), int(counts.max())) if counts.size else (0, 0)
    return f"n = {lo}" if lo == hi else f"n = {lo} to {hi} by cell"


def correlation_figure(table: pd.DataFrame, path: Path) -> Any:
    """One heat map per group: rho of probe (rows) against metric (columns), 0 where p >= 0.05; the
    Figure, saved to `path`."""
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys(table["group"]))
    fig = Figure(figsize=(4.6 * len(groups), 4.2), dpi=110)
    for k, name in enumerate(groups):
        sub = table[table["group"] == name]
        grid = np.full((len(PROBES), len(GENERALIZATION)), np.nan)
        counts = np.zeros_like(grid)
        for _, r in sub.iterrows():
            rho = 0.0 if not (r["p"] < ALPHA) and math.isfinite(r["rho"]) else r["rho"]
            at = PROBES.index(r["probe"]), GENERALIZATION.index(r["metric"])
            grid[at], counts[at] = rho, r["n"]
        image = _heat(fig.add_subplot(1, len(groups), k + 1), grid, counts, PROBES, GENERALIZATION,
                      f"{name}: Spearman rho (0 where p >= {ALPHA}), {_n_range(counts)}")
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    fig.savefig(path, bbox_inches="tight")
    return fig


def probe_matrix_figure(models: pd.DataFrame, path: Path) -> Any:
    """Every probe against every other across the models; the Figure, saved to `path`."""
    from matplotlib.figure import Figure

    names = [p for p in (*PROBES, "probe/corruption_acc") if p in models]
    cells = [[spearman(models[a].to_list(), models[b].to_list()) for b in names] for a in names]
    grid = np.array([[c[0] for c in row] for row in cells], dtype=np.float64).reshape(len(names), len(names))
    counts = np.array([[c[2] for c in row] for row in cells], dtype=np.float64).reshape(grid.shape)
    fig = Figure(figsize=(5.2, 4.6), dpi=110)
    image = _heat(fig.add_subplot(1, 1, 1), grid, counts, names, names,
                  f"probe vs probe, Spearman rho over {len(models)} models, {_n_range(counts)}")
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    fig.savefig(path, bbox_inches="tight")
    return fig


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


def write_bias_report(pop: Population, out: Path, group_by: str | None, trials: int = 0) -> dict[str, Any]:
    """The files above into `out`; with fewer than MIN_MODELS models only a note (no figure drawn), which
    points to the trials where the groups are too few and the finished trials (`trials`) are enough."""
    models = pop.models
    if group_by and group_by not in models:
        raise ConfigError("--group-by", f"{group_by!r} is not a searched key of this sweep's models")
    table = correlations(models, group_by)
    table.to_csv(out / "bias_correlations.csv", index=False)
    said: dict[str, Any] = {"models": len(models), "population": pop.name, "duplicates_dropped": pop.duplicates}
    if len(models) < MIN_MODELS:
        hint = " (`--population trials` correlates every finished trial)" \
            if pop.name == "groups" and trials >= MIN_MODELS else ""
        return {**said, "note": f"{len(models)} models: at least {MIN_MODELS} are needed to draw correlations "
                                f"across models{hint}"}
    correlation_figure(table, out / "bias_correlations.png")
    probe_matrix_figure(models, out / "bias_matrix.png")
    head_tail_figure(models, out / "bias_head_vs_tail.png")
    significant = table[(table["group"] == "all") & (table["p"] < ALPHA)]
    return {**said, "significant": [f"{r.probe} ~ {r.metric}: rho {r.rho:+.2f}" for r in significant.itertuples()]}


def headline(biases: dict[str, Any]) -> str:
    """The report's line on the bias probes: over which models, and what correlates."""
    dropped = biases.get("duplicates_dropped", 0)
    dupes = f", {dropped} duplicate{'s' if dropped != 1 else ''} dropped (same configuration and seed)" \
        if dropped else ""
    unit = "group means" if biases.get("population") == "groups" else "trials"
    found = biases.get("note") or ("significant (p < 0.05): " + "; ".join(biases["significant"])
                                   if biases["significant"] else
                                   "no probe correlates significantly (p < 0.05) with any generalization metric")
    return f"bias probes vs generalization over {biases['models']} models ({unit}{dupes}): {found}"
