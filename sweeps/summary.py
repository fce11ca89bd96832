"""The closing summary a sweep prints when it ends (run and resume): states, the best configuration with
its intervals, the groups' table, the default contrast, the race, and where to look. It prints what the
report (sweeps.report) computed, so the two never disagree."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sweeps import paths
from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.groups import format_groups
from sweeps.kinds import kind_of
from sweeps.report import Report
from sweeps.report import groups as gr
from sweeps.tracking import mlflow_runs as mr


def _states(records: list[rs.TrialRecord]) -> str:
    states = Counter("stopped by the race" if r.stopped_by_race else r.status.lower() for r in records)
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


def best_line(cfg: SweepConfig, report: Report, records: list[rs.TrialRecord]) -> str | None:
    """The best configuration by the objectives in order: the best group's means with their intervals
    (what the search optimises), or without repeats the best trial."""
    objectives = list(zip(cfg.search.metric, cfg.search.mode, strict=True))
    rule = rs.best_rule(objectives)
    if cfg.search.repeats > 1:
        groups = [g for g in report.groups if g.finished]
        i = rs.best_of([{m: g.stats(m).mean for m, _ in objectives} for g in groups], objectives)
        if i is None:
            return None
        g = groups[i]
        shown = "; ".join(f"{m} {g.stats(m).mean:.4f} [95% CI {g.stats(m).ci95_low:.4f}, {g.stats(m).ci95_high:.4f}]"
                          for m, _ in objectives)
        return f"best group {g.group_id} ({rule}, over its {len(g.finished)} repeats): {shown} ({rs.describe(g.params, True)})"
    done = [r for r in records if r.status == "TERMINATED" and not r.stopped_by_race]
    i = rs.best_of([r.last for r in done], objectives)
    if i is None:
        return None
    best = done[i]
    metrics = ", ".join(f"{m} {best.last[m]:.4f}" for m in cfg.search.metric if m in best.last)
    extra = ", ".join(f"{k} {best.last[k]:.4f}" for k in kind_of(cfg.trial).headline
                      if k in best.last and k not in cfg.search.metric)
    return (f"best trial {best.trial_id} ({rule}): {metrics} ({rs.describe(rs.sampled_values(best.config), True)})"
            + (f"\n  {extra}" if extra else ""))


def closing_summary(cfg: SweepConfig, records: list[rs.TrialRecord], tracker: Any, report: Report) -> str:
    lines = [f"\nsweep {cfg.name}: {_states(records)}"]
    best = best_line(cfg, report, records)
    if best:
        lines.append(best)
    if cfg.search.repeats > 1 and report.groups:
        lines.append(f"groups (up to {cfg.search.repeats} repeats over {cfg.search.repeat_over}; mean [95% CI]):")
        lines.append(format_groups(report.groups, gr.headline(cfg), cfg.search.repeats, report.notes or None))
    contrast = kind_of(cfg.trial).contrast
    if len(report.contrast):
        lines.append(f"{contrast.label if contrast else 'A - B'}, paired by repeat:")
        lines.append(gr.format_contrast(report.contrast, gr.headline(cfg)))
    race = report.summary.get("race")
    if race:
        total = race["trials_run"] + race["trials_saved"]
        lines.append(f"race on {race['metric']}: {race['trials_run']} of {total} trials run ({race['trials_saved']} "
                     f"saved), {len(race['dropped'])} configuration(s) dropped")
    lines.append(f"report: {report.folder}")
    lines.append(f"MLflow: {mr.ui_command(tracker.uri, tracker.artifact_root)}")
    lines.append(f"Optuna study: {mr.executable('gitsweep')} dashboard {cfg.name}{paths.storage_flag(cfg.storage)}")
    lines.append(f"experiment '{cfg.experiment}', parent run {tracker.parent_run_id}")
    return "\n".join(lines)
