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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from gitlib.configs import flatten, to_dict
from gitlib.errors import ConfigError
from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.group_stats import GroupResult, aligned, group_result, paired_contrast, summarize

# Keys that make a configuration GIT rather than its baseline: the default contrast ignores them.
TREATMENT_KEYS = ("classifier.augment", "classifier.gen_frac", "classifier.git_start_epoch",
                  "classifier.git_threshold")
HEADLINE = ("ekld/tail", "ekld/mean", "test/balanced_acc")  # what the closing summary and the report print
PER_CLASS_DIFFS = ("ekld", "accuracy")


@dataclass
class Group:
    """A group with what selecting and pairing it needs: its resolved config values and searched values."""

    result: GroupResult
    values: dict[str, Any]  # flattened resolved config of repeat 0, plus classifier.effective_augment
    searched: dict[str, Any]  # the searched keys' values (without the repeat key)


def collect_groups(cfg: SweepConfig, records: Sequence[rs.TrialRecord], results: Path) -> list[Group]:
    base, by_group = to_dict(cfg), dict[str, list[rs.TrialRecord]]()
    for rec in records:
        by_group.setdefault(rec.group_id, []).append(rec)
    groups = []
    for gid, recs in sorted(by_group.items()):
        first = min(recs, key=lambda r: r.repeat)
        resolved = rs.trial_config(base, first.config)
        values = {**flatten(to_dict(resolved)), "classifier.effective_augment": resolved.classifier.effective_augment}
        searched = {k: v for k, v in rs.sampled_values(first.config).items() if k != cfg.search.repeat_over or
                    cfg.search.repeats == 1}
        groups.append(Group(group_result(gid, recs, results, cfg.search.repeat_over), values, searched))
    return groups


def group_table(cfg: SweepConfig, groups: Sequence[Group]) -> pd.DataFrame:
    """One row per group: id, searched values, repeats finished / started, mean, std and CI of every metric."""
    rows = []
    for g in groups:
        row: dict[str, Any] = {"group_id": g.result.group_id, **g.searched,
                               "classifier.augment": g.values["classifier.effective_augment"],
                               "repeats": cfg.search.repeats, "finished": len(g.result.finals),
                               "failed": sum(r.status == "ERROR" for r in g.result.records)}
        metrics = g.result.metrics
        row.update({k.replace("/ci95_", "_ci95_").replace("/std", "_std"): v for k, v in metrics.items()
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
    return all(k in g.values and _same(g.values[k], v) for k, v in selector.items())


def pairs(groups: Sequence[Group], a_sel: dict[str, Any], b_sel: dict[str, Any],
          ignore: Sequence[str] = ()) -> list[tuple[Group, Group]]:
    """Every (A, B) whose other searched keys agree (keys in either selector or in `ignore` may differ)."""
    free = set(a_sel) | set(b_sel) | set(ignore)
    out = []
    for a in (g for g in groups if _matches(g, a_sel)):
        for b in (g for g in groups if _matches(g, b_sel) and g is not a):
            keys = (set(a.searched) | set(b.searched)) - free
            if all(_same(a.values.get(k), b.values.get(k)) for k in keys):
                out.append((a, b))
    return out


def default_pairs(groups: Sequence[Group]) -> list[tuple[Group, Group]]:
    """GIT groups against the baseline groups (no generated share) at the same other settings."""
    return pairs(groups, {"classifier.effective_augment": "git"}, {"classifier.effective_augment": "none"},
                 ignore=TREATMENT_KEYS)


def label(g: Group, keys: Sequence[str]) -> str:
    shown = rs.describe({k: g.values[k] for k in keys if k in g.values})
    return f"{g.result.group_id} ({shown})" if shown else g.result.group_id


def contrast_rows(pair_list: Sequence[tuple[Group, Group]], keys: Sequence[str]) -> pd.DataFrame:
    """Per pair and metric: mean paired difference A - B, its 95% CI, both p-values and n."""
    rows = []
    for a, b in pair_list:
        metrics = sorted(set().union(*a.result.finals.values(), *b.result.finals.values()))
        for m in metrics:
            c = paired_contrast(a.result.repeat_values(m), b.result.repeat_values(m))
            rows.append({"a": label(a, keys), "b": label(b, keys), "metric": m, "diff": c.mean,
                         "ci95_low": c.ci95_low, "ci95_high": c.ci95_high, "p_ttest": c.p_ttest,
                         "p_wilcoxon": c.p_wilcoxon, "n": c.n})
    return pd.DataFrame(rows)


def per_class_contrast(a: Group, b: Group, results: Path, by: str) -> pd.DataFrame | None:
    """Per class (or size rank): paired difference A - B of eKLD and accuracy over the repeats both finished."""
    tables = {}
    for g in (a, b):
        for rec in g.result.records:
            t = rs.read_per_class(results / rec.trial_id) if rec.repeat in g.result.finals else None
            if t is not None:
                tables[(id(g), rec.repeat)] = aligned(t.to_pandas(), by)
    common = sorted({r for (gid, r) in tables if gid == id(a)} & {r for (gid, r) in tables if gid == id(b)})
    if not common:
        return None
    keys = tables[(id(a), common[0])].index
    out = pd.DataFrame({by: keys})
    for col in PER_CLASS_DIFFS:
        diffs = np.stack([tables[(id(a), r)].loc[keys, col].to_numpy(np.float64) -
                          tables[(id(b), r)].loc[keys, col].to_numpy(np.float64) for r in common])
        stats = [summarize(diffs[:, i]) for i in range(diffs.shape[1])]
        out[f"{col}_diff"] = [s.mean for s in stats]
        out[f"{col}_diff_ci95_low"] = [s.ci95_low for s in stats]
        out[f"{col}_diff_ci95_high"] = [s.ci95_high for s in stats]
        out[f"{col}_diff_n"] = [s.n for s in stats]
    return out


def contrast_figure(a: Group, b: Group, keys: Sequence[str], path: Path) -> Path | None:
    """The two groups' eKLD curves against class size, each with its 95% band."""
    from gitlib.plots import ekld_bands

    curves = {label(g, keys): band for g in (a, b) if (band := g.result.ekld_band) is not None}
    if len(curves) < 2:
        return None
    return ekld_bands(curves, path, f"eKLD vs class size: {a.result.group_id} vs {b.result.group_id} (95% bands)")


def groups_figure(groups: Sequence[Group], keys: Sequence[str], path: Path, limit: int = 8) -> list[str]:
    """Every group's mean eKLD against class size with its 95% band over repeats, on one shared axis (the
    first `limit` groups with per-class results); returns the groups drawn."""
    from gitlib.plots import ekld_bands

    bands = [(g, band) for g in groups if (band := g.result.ekld_band) is not None][:limit]
    curves = {label(g, keys): band for g, band in bands}
    if curves:
        ekld_bands(curves, path, "eKLD vs class size: every group, mean and 95% band over its repeats")
    return [g.result.group_id for g, _ in bands]


def format_contrast(rows: pd.DataFrame, metrics: Sequence[str] = HEADLINE) -> str:
    """One line per pair and headline metric: the difference with its CI, p-values and n."""
    lines = []
    for _, r in rows[rows["metric"].isin(metrics)].iterrows():
        lines.append(f"  {r['a']} - {r['b']}: {r['metric']} {r['diff']:+.4f} "
                     f"[95% CI {r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}], paired t p={r['p_ttest']:.3g}, "
                     f"Wilcoxon p={r['p_wilcoxon']:.3g}, n={int(r['n'])}")
    return "\n".join(lines)


def format_groups(table: pd.DataFrame, metrics: Sequence[str] = HEADLINE) -> str:
    """One line per group: its kind, repeats finished and each metric's mean [95% CI]."""
    keys = [k for k in table.columns if "." in k and "/" not in k]
    varied = [k for k in keys if table[k].astype(str).nunique() > 1] or keys  # what tells the groups apart
    lines = []
    for _, r in table.iterrows():
        parts = []
        for m in metrics:
            if m in r and isinstance(r[m], float) and math.isfinite(r[m]):
                lo, hi = r.get(f"{m}_ci95_low", math.nan), r.get(f"{m}_ci95_high", math.nan)
                parts.append(f"{m} {r[m]:.4f} [{lo:.4f}, {hi:.4f}]")
        values = rs.describe({k: r[k] for k in varied if r[k] == r[k]})
        lines.append(f"  {r['group_id']} ({values}) {int(r['finished'])}/{int(r['repeats'])} finished  "
                     + "  ".join(parts))
    return "\n".join(lines)
