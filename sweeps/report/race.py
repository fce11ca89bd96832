"""The race in the report (sweeps.race): race.csv, one row per group with its decision, and race.png, each
group's running mean with its 95% CI against the repeats it ran, a dropped group's line ending in a mark."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.groups import Group, colour, stats
from sweeps.search_state import Decision


def race_notes(decisions: Mapping[str, Decision]) -> dict[str, str]:
    """Group id -> a short word on the race's decision, for the group tables."""
    out = {}
    for gid, d in decisions.items():
        if d.decision == "dropped":
            out[gid] = f"dropped at {d.k} (vs {d.vs}, p={d.p:.3g})"
        else:
            out[gid] = "survived" + (f" (vs {d.vs}, p={d.p:.3g})" if d.vs != gid and math.isfinite(d.p) else "")
    return out


def race_rows(groups: Sequence[Group], decisions: Mapping[str, Decision]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        d = decisions.get(g.group_id)
        rows.append({"group_id": g.group_id, **g.params, "repeats_run": len(g.repeats),
                     "finished": len(g.finished), "decision": d.decision if d else "running",
                     "p_value": d.p if d else math.nan, "vs": d.vs if d else "",
                     "at_repeat": d.k if d else math.nan, "pairs": d.n if d else math.nan,
                     "paired_repeats": " ".join(map(str, d.pairs)) if d else ""})
    return rows


def running_means(g: Group, metric: str) -> list[tuple[int, float, float, float]]:
    """(repeats, mean, CI low, CI high) over the first k finished repeats, in repeat order, for each k."""
    values = [v for _, v in sorted(g.values(metric).items()) if math.isfinite(v)]
    out = []
    for k in range(1, len(values) + 1):
        s = stats(values[:k])
        out.append((k, s.mean, s.ci95_low, s.ci95_high))
    return out


BAND_FROM = 3


def race_figure(groups: Sequence[Group], decisions: Mapping[str, Decision], metric: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.4), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for g in groups:
        points = running_means(g, metric)
        if not points:
            continue
        color = colour(g.group_id)  # the group's colour in every figure of the sweep
        k, mean, lo, hi = (list(col) for col in zip(*points, strict=True))
        label = f"{g.group_id} ({rs.describe(g.params)})" if g.params else g.group_id
        ax.plot(k, mean, color=color, lw=1.4, label=label)
        # bands from 3 repeats on: a t interval over 1 or 2 differences spans the whole axis and hides the race
        banded = [i for i, n in enumerate(k) if n >= BAND_FROM and math.isfinite(lo[i]) and math.isfinite(hi[i])]
        if banded:
            ax.fill_between([k[i] for i in banded], [lo[i] for i in banded], [hi[i] for i in banded],
                            color=color, alpha=0.12)
        d = decisions.get(g.group_id)
        if d is not None and d.decision == "dropped":
            ax.plot([k[-1]], [mean[-1]], marker="X", ms=9, color=color)
    if metric.startswith("ekld"):
        ax.set_yscale("log")  # as every eKLD figure of the sweep
    ax.set_xlabel("repeats finished")
    ax.set_ylabel(f"{metric}: running mean, 95% CI from {BAND_FROM} repeats")
    ax.set_title("the race: each configuration's running mean; X = dropped (worse than the incumbent)", fontsize=9)
    ax.grid(True, alpha=0.3)
    if len(groups) <= 12:
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_race(cfg: SweepConfig, groups: Sequence[Group], decisions: Mapping[str, Decision], out: Path) -> dict[str, Any]:
    """race.csv and race.png; returns the race's figures for summary.json."""
    rows = race_rows(groups, decisions)
    pd.DataFrame(rows).to_csv(out / "race.csv", index=False)
    metric, _ = cfg.search.race_metric
    race_figure(groups, decisions, metric, out / "race.png")
    run = sum(len(g.repeats) for g in groups)
    return {"metric": metric, "trials_run": run, "trials_saved": len(groups) * cfg.search.repeats - run,
            "dropped": sorted(gid for gid, d in decisions.items() if d.decision == "dropped")}
