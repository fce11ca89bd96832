"""Groups of repeats in the report: one row per group with mean and 95% CI of every metric, and paired
contrasts between two sets of groups (by default GIT against its baseline at every other setting).

A contrast `A vs B` picks the groups matching A's `KEY=VALUE`s and those matching B's, pairs every A
group with every B group that agrees on all other searched keys, and pairs their repeats by repeat
index (the same seed or instance): per metric the mean paired difference A - B with its 95% t-interval,
the paired t-test and Wilcoxon signed-rank p-values and n; per class (or size rank) the paired
difference of eKLD and accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from gitlib.errors import ConfigError
from sweeps import results as rs
from sweeps.config import SweepConfig, trial_config
from sweeps.groups import Band, Group, aligned, collect, colour, paired_contrast, per_class_tables, stats
from sweeps.kinds import Contrast, kind_of

PER_CLASS_DIFFS = ("ekld", "accuracy")


def repeat_key(cfg: SweepConfig) -> str | None:
    return cfg.search.repeat_over if cfg.search.repeats > 1 else None


def collect_groups(cfg: SweepConfig, records: Sequence[rs.TrialRecord], results: Path) -> list[Group]:
    """The sweep's groups (sweeps.groups.collect), each with the flattened config it ran (`Group.config`,
    as MLflow's params record it), which selecting and pairing groups reads."""
    groups = collect(records, results, repeat_key(cfg))
    for g in groups:
        first = g.repeats[min(g.repeats)]
        config = next(r.config for r in records if r.trial_id == first.trial_id)
        g.config = trial_config(cfg, config).resolved().flat()
    return groups


def headline(cfg: SweepConfig) -> list[str]:
    """The metrics the closing summary, `status` and the report show: the objectives, then the kind's."""
    return list(dict.fromkeys([*cfg.search.metric, *kind_of(cfg.trial).headline]))


def group_table(cfg: SweepConfig, groups: Sequence[Group]) -> pd.DataFrame:
    """One row per group: id, searched values, repeats finished / started, mean, std and CI of every metric."""
    rows = []
    for g in groups:
        row: dict[str, Any] = {"group_id": g.group_id, **g.params, "repeats": cfg.search.repeats,
                               "started": len(g.repeats), "finished": len(g.finished), "failed": g.failed}
        row.update({k.replace("/ci95_", "_ci95_").replace("/std", "_std"): v for k, v in g.metrics().items()
                    if k != "group/n_finished"})
        rows.append(row)
    return pd.DataFrame(rows)


def parse_selector(text: str, flag: str) -> dict[str, Any]:
    """'classifier.gen_frac=0.3,dataset.imbalance_ratio=100' -> {key: value} (values parsed as YAML)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(flag, f"expected KEY=VALUE[,KEY=VALUE], got {text!r}")
        out[key.strip()] = yaml.safe_load(raw)
    if not out:
        raise ConfigError(flag, "needs at least one KEY=VALUE")
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _matches(g: Group, selector: dict[str, Any]) -> bool:
    return all(k in g.config and _same(g.config[k], v) for k, v in selector.items())


def _free(key: str, free: set[str]) -> bool:
    """Whether `key` may differ between A and B: named, or under a named section ("generator.")."""
    return key in free or any(f.endswith(".") and key.startswith(f) for f in free)


def pairs(groups: Sequence[Group], a_sel: dict[str, Any], b_sel: dict[str, Any],
          ignore: Sequence[str] = ()) -> list[tuple[Group, Group]]:
    """Every (A, B) whose other searched keys agree (keys in either selector or in `ignore` may differ;
    an `ignore` entry ending in '.' frees a whole section)."""
    free = set(a_sel) | set(b_sel) | set(ignore)
    out = []
    for a in (g for g in groups if _matches(g, a_sel)):
        for b in (g for g in groups if _matches(g, b_sel) and g is not a):
            keys = {k for k in (set(a.params) | set(b.params)) if not _free(k, free)}
            if all(_same(a.config.get(k), b.config.get(k)) for k in keys):
                out.append((a, b))
    return out


def best_group(cfg: SweepConfig, groups: Sequence[Group], dropped: Collection[str] = ()) -> Group | None:
    """The best configuration: the best group means by the objectives in order (sweeps.results.best_of),
    among the groups with a finished repeat that the race did not drop. The one rule of the closing
    summary, the report and the parent run's `gitsweep.best_group` (without repeats: the best trial's)."""
    objectives = list(zip(cfg.search.metric, cfg.search.mode, strict=True))
    kept = [g for g in groups if g.finished and g.group_id not in dropped]
    i = rs.best_of([{m: g.stats(m).mean for m, _ in objectives} for g in kept], objectives)
    return None if i is None else kept[i]


def default_pairs(cfg: SweepConfig, groups: Sequence[Group]) -> list[tuple[Group, Group]]:
    """The trial kind's default contrast (the classifier's: GIT against its baseline, with no generated
    share, at the same other settings); none for a kind without one."""
    c: Contrast | None = kind_of(cfg.trial).contrast
    return pairs(groups, c.a, c.b, ignore=c.free) if c is not None else []


def label(g: Group, keys: Sequence[str]) -> str:
    shown = rs.describe({k: g.config.get(k, g.params.get(k)) for k in keys if k in g.config or k in g.params})
    return f"{g.group_id} ({shown})" if shown else g.group_id


def contrast_rows(pair_list: Sequence[tuple[Group, Group]], keys: Sequence[str],
                  first: Sequence[str] = ()) -> pd.DataFrame:
    """Per pair and metric: mean paired difference A - B, its 95% CI, both p-values and n. The metrics in
    `first` (the search metrics, then the kind's headline) lead, each for every pair in turn; the other
    metrics follow alphabetically."""
    rows: list[dict[str, Any]] = []
    for a, b in pair_list:
        metrics = sorted(set().union(*a.finished.values(), *b.finished.values()))
        for m in metrics:
            c = paired_contrast(a.values(m), b.values(m))
            rows.append({"a": label(a, keys), "b": label(b, keys), "metric": m, "diff": c.mean,
                         "ci95_low": c.ci95_low, "ci95_high": c.ci95_high, "p_ttest": c.p_ttest,
                         "p_wilcoxon": c.p_wilcoxon, "n": c.n})
    rank = {m: i for i, m in enumerate(dict.fromkeys(first))}
    order = sorted(range(len(rows)), key=lambda i: (rank.get(str(rows[i]["metric"]), len(rank)), rows[i]["metric"], i))
    return pd.DataFrame([rows[i] for i in order], columns=CONTRAST_COLUMNS)


CONTRAST_COLUMNS = ["a", "b", "metric", "diff", "ci95_low", "ci95_high", "p_ttest", "p_wilcoxon", "n"]
SIGNIFICANT = {"diff": 4, "ci95_low": 4, "ci95_high": 4, "p_ttest": 3, "p_wilcoxon": 3}  # digits a reader needs


def rounded(value: float, column: str) -> float:
    """A contrast number as contrast.csv and the parent run's `contrast/*` metrics show it."""
    return float(f"{value:.{SIGNIFICANT[column]}g}") if math.isfinite(value) else math.nan


def readable(rows: pd.DataFrame) -> pd.DataFrame:
    """contrast.csv: the rows rounded for reading (contrast.parquet keeps them exact)."""
    out = rows.copy()
    for column in SIGNIFICANT:
        out[column] = [rounded(float(v), column) for v in out[column]]
    return out


def per_class_contrast(a: Group, b: Group, results: Path, by: str) -> pd.DataFrame | None:
    """Per class (or size rank): paired difference A - B of eKLD and accuracy over the repeats both finished."""
    ta = {r: aligned(t, by) for r, t in per_class_tables(a, results).items()}
    tb = {r: aligned(t, by) for r, t in per_class_tables(b, results).items()}
    common = sorted(set(ta) & set(tb))
    if not common:
        return None
    keys = ta[common[0]].index
    out = pd.DataFrame({by: keys})
    for col in PER_CLASS_DIFFS:
        diffs = np.stack([ta[r].loc[keys, col].to_numpy(np.float64) - tb[r].loc[keys, col].to_numpy(np.float64)
                          for r in common])
        summary = [stats(diffs[:, i]) for i in range(diffs.shape[1])]
        out[f"{col}_diff"] = [s.mean for s in summary]
        out[f"{col}_diff_ci95_low"] = [s.ci95_low for s in summary]
        out[f"{col}_diff_ci95_high"] = [s.ci95_high for s in summary]
        out[f"{col}_diff_n"] = [s.n for s in summary]
    return out


def contrast_figure(a: Group, b: Group, bands: dict[str, Band], keys: Sequence[str], path: Path,
                    note: str = "") -> Path | None:
    """The two groups' eKLD curves against class size, each with its 95% band, in their colours; `note`
    (the contrast's numbers) under the axes."""
    from gitlib.plots import ekld_bands

    curves = {label(g, keys): bands[g.group_id] for g in (a, b) if g.group_id in bands}
    if len(curves) < 2:
        return None
    colours = {label(g, keys): colour(g.group_id) for g in (a, b)}
    return ekld_bands(curves, path, f"eKLD vs class size: {a.group_id} vs {b.group_id} (95% bands)", colours, note)


def contrast_note(rows: pd.DataFrame, metrics: Sequence[str], name: str, unit: str) -> str:
    """The lines a contrast figure prints: each headline metric's paired difference, CI, p and n."""
    shown = rows[rows["metric"].isin(metrics)]
    if not len(shown):
        return ""
    width = max(len(m) for m in shown["metric"])
    lines = [f"{name}, paired over n = {int(shown['n'].max())} {unit}: mean difference [95% CI], paired t p"]
    for _, r in shown.iterrows():
        lines.append(f"{r['metric']:<{width}}  {r['diff']:+.4f} [{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]"
                     f"  p = {r['p_ttest']:.2g}")
    return "\n".join(lines)


def groups_figure(groups: Sequence[Group], bands: dict[str, Band], keys: Sequence[str], path: Path,
                  limit: int = 8) -> list[str]:
    """Every group's mean eKLD against class size with its 95% band over repeats, on one shared axis (the
    first `limit` groups with per-class results), each in its colour; returns the groups drawn."""
    from gitlib.plots import ekld_bands

    drawn = [g for g in groups if g.group_id in bands][:limit]
    if drawn:
        ekld_bands({label(g, keys): bands[g.group_id] for g in drawn}, path,
                   "eKLD vs class size: every group, mean and 95% band over its repeats",
                   {label(g, keys): colour(g.group_id) for g in drawn})
    return [g.group_id for g in drawn]


def format_contrast(rows: pd.DataFrame, metrics: Sequence[str]) -> str:
    """One line per pair and headline metric: the difference with its CI, p-values and n."""
    lines = []
    for _, r in rows[rows["metric"].isin(metrics)].iterrows():
        lines.append(f"  {r['a']} - {r['b']}: {r['metric']} {r['diff']:+.4f} "
                     f"[95% CI {r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}], paired t p={r['p_ttest']:.3g}, "
                     f"Wilcoxon p={r['p_wilcoxon']:.3g}, n={int(r['n'])}")
    return "\n".join(lines)
