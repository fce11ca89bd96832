"""The closing summary a sweep prints when it ends (run and resume): states, the answer, the best
configuration with its intervals, the groups' table, the default contrast, the race, and where to look;
and the parent run's statement of the answer (its tags, `contrast/*` metrics, description and report).
Both say what the report (sweeps.report) computed, so they never disagree with it or with each other."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sweeps import paths
from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.groups import format_groups
from sweeps.kinds import kind_of
from sweeps.report import Report, report_files
from sweeps.report import groups as gr
from sweeps.tracking import mlflow_runs as mr


def _states(records: list[rs.TrialRecord]) -> str:
    states = Counter("stopped by the race" if r.stopped_by_race else r.status.lower() for r in records)
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


def best_line(cfg: SweepConfig, report: Report, records: list[rs.TrialRecord]) -> str | None:
    """Without repeats, the best trial (the answer's best configuration) with its metrics and the kind's
    headline; with repeats the answer's sentence and the groups' table say it all."""
    g = report.answer.best if report.answer else None
    if g is None or cfg.search.repeats > 1:
        return None
    rule = rs.best_rule(list(zip(cfg.search.metric, cfg.search.mode, strict=True)))
    best = next(r for r in records if r.trial_id == g.repeats[min(g.finished)].trial_id)
    metrics = ", ".join(f"{m} {best.last[m]:.4f}" for m in cfg.search.metric if m in best.last)
    extra = ", ".join(f"{k} {best.last[k]:.4f}" for k in kind_of(cfg.trial).headline
                      if k in best.last and k not in cfg.search.metric)
    return (f"best trial {best.trial_id} ({rule}): {metrics} ({rs.describe(rs.sampled_values(best.config), True)})"
            + (f"\n  {extra}" if extra else ""))


def state_answer(cfg: SweepConfig, tracker: Any, report: Report) -> None:
    """The parent run states the answer: `gitsweep.best_group`, `gitsweep.contrast` (contrast.csv's a - b of
    the row its metrics hold), `contrast/<metric>/diff|ci95_low|ci95_high|p` for each search metric, the
    description opening with the answer's sentence, and the report under `report/`."""
    answer = report.answer
    tags: dict[str, str] = {}
    if answer is not None and answer.best is not None:
        tags[mr.BEST_GROUP_TAG] = answer.best.group_id
    if answer is not None and len(answer.rows):
        tags[mr.CONTRAST_TAG] = f"{answer.rows['a'].iloc[0]} - {answer.rows['b'].iloc[0]}"
    metrics = answer.metrics(cfg.search.metric) if answer is not None else {}
    tracker.state_answer(answer.sentence if answer else "", tags, metrics, report.folder, report_files(report.folder))


def where_to_look(cfg: SweepConfig, tracker: Any) -> list[str]:
    """The closing lines: the MLflow UI command with the runs table's and the parent run's addresses (an
    experiment opens in MLflow's GenAI view otherwise), the Optuna dashboard, the run ids."""
    ui = mr.ui_address(tracker.uri)
    exp = tracker.experiment_id
    return [f"MLflow: {mr.ui_command(tracker.uri, tracker.artifact_root)}",
            f"  runs table: {ui}/{mr.runs_table_path(exp)}",
            f"  parent run: {ui}/{mr.run_path(exp, tracker.parent_run_id or '')}",
            f"Optuna study: {mr.executable('gitsweep')} dashboard {cfg.name}{paths.storage_flag(cfg.storage)}",
            f"experiment '{cfg.experiment}', parent run {tracker.parent_run_id}"]


def closing_summary(cfg: SweepConfig, records: list[rs.TrialRecord], tracker: Any, report: Report) -> str:
    lines = [f"\nsweep {cfg.name}: {_states(records)}"]
    if report.answer is not None:
        lines.append(report.answer.sentence)
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
    lines.append(f"report: {report.folder} (also the parent run's artifacts, report/)")
    lines.extend(where_to_look(cfg, tracker))
    return "\n".join(lines)
