"""The report of a sweep: everything under `<storage>/sweeps/<name>/report/`, logged to the parent run under
`report/`, written when a sweep ends and again by `gitsweep report`. Torch-free: it reads the sweep's
trial index, kept results and search log (sweeps.results, sweeps.search_state).

- trials.csv / .parquet, summary.json, response_surface.png, ekld_vs_class_size.png (sweeps.report.trials);
- groups.csv / .parquet: one row per group, mean and 95% CI of every metric (sweeps.report.groups);
- contrast.csv (rounded for reading, the search metrics first) / .parquet (exact), contrast_per_class.csv and
  contrast_<a>_vs_<b>.png (with the contrast's numbers): paired contrasts, `--contrast A --vs B` or by
  default the trial kind's own (the classifier's: GIT against its baseline at every other setting);
- the answer (sweeps.report.answer): the best configuration and its contrast with its baseline;
- race.csv and race.png when the sweep raced its configurations (sweeps.report.race);
- pareto.csv / .png with several objectives: the models no other model beats on every objective;
- bias_correlations.csv / .png, bias_matrix.png, bias_head_vs_tail.png: bias probes against
  generalization across the sweep's models (sweeps.report.biases), `--group-by KEY` within each value;
- the trial kind's own part, if its record names one (MSR: msr_table.csv).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.groups import Band, Group, align_by, ekld_band, format_groups, group_per_class
from sweeps.kinds import kind_of, resolve
from sweeps.paths import SweepPaths
from sweeps.report import groups as gr
from sweeps.report.answer import Answer, find_answer, unit
from sweeps.report.biases import headline as bias_headline
from sweeps.report.biases import population, write_bias_report
from sweeps.report.race import race_notes, write_race
from sweeps.report.trials import pareto, trial_summary, trial_table
from sweeps.search_state import read_decisions


@dataclass
class Report:
    """What a report wrote, and what the closing summary, `gitsweep report` and the parent run state from it."""

    folder: Path
    summary: dict[str, Any]
    groups: list[Group]
    contrast: pd.DataFrame
    notes: dict[str, str] = field(default_factory=dict)  # group id -> the race's word on it
    lines: list[str] = field(default_factory=list)  # the printout
    answer: Answer | None = None  # the best configuration and its contrast with its baseline


# What each report file holds, in the order the parent run's description lists them (fnmatch patterns).
FILES = (
    ("contrast.csv", "paired contrasts A - B per metric, the search metrics first, rounded for reading"),
    ("contrast_*_vs_*.png", "the two groups' eKLD against class size with 95% bands and the contrast's numbers"),
    ("groups.csv", "every group: mean, std and 95% CI of every metric"),
    ("ekld_vs_class_size.png", "eKLD against class size: every group's mean and 95% band (the best trials "
                               "without repeats)"),
    ("race.csv", "the race's decision on every group"), ("race.png", "each group's running mean, X = dropped"),
    ("pareto.csv", "the configurations no other beats on every objective"), ("pareto.png", "the Pareto front"),
    ("response_surface.png", "the two first searched keys against the objectives"),
    ("trials.csv", "every trial: state, searched values, final metrics"),
    ("summary.json", "best trial, importances, what the report drew"),
    ("contrast_per_class.csv", "the contrasts per class (or class-size rank)"),
    ("bias_*", "bias probes against generalization"), ("msr_table.csv", "the MSR comparison table"),
    ("*.parquet", "the same table at full precision"),
)


def report_files(folder: Path) -> list[tuple[str, str]]:
    """(file name, what it holds) of every file the report folder holds, in FILES' order."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    rank = {n: next((i for i, (pat, _) in enumerate(FILES) if fnmatch(n, pat)), len(FILES)) for n in names}
    return [(n, FILES[rank[n]][1] if rank[n] < len(FILES) else "") for n in sorted(names, key=lambda n: (rank[n], n))]


def contrasts(cfg: SweepConfig, groups: list[Group], bands: dict[str, Band], results: Path, out: Path,
              selectors: tuple[dict[str, Any], dict[str, Any]] | None, answer: Answer) -> pd.DataFrame:
    """contrast.csv (rounded) and .parquet (exact), contrast_per_class.csv and one figure per pair, the
    answer's pair first; returns the per-metric rows."""
    for old in out.glob("contrast*"):  # this report's pairs only: none from an earlier report stays
        old.unlink()
    pair_list = gr.pairs(groups, *selectors) if selectors else gr.default_pairs(cfg, groups)
    if not pair_list:
        return pd.DataFrame(columns=gr.CONTRAST_COLUMNS)
    pair_list.sort(key=lambda p: not answer.is_pair(*p))  # stable: the answer's pair leads, the others keep their order
    keys = list(selectors[0]) if selectors else list(cfg.search.space)
    metrics = gr.headline(cfg)
    rows = gr.contrast_rows(pair_list, keys, metrics)
    rows.to_parquet(out / "contrast.parquet", index=False)
    gr.readable(rows).to_csv(out / "contrast.csv", index=False)
    by = align_by(cfg.search.repeat_over)
    contrast = kind_of(cfg.trial).contrast
    name = "A - B" if selectors or contrast is None else contrast.label
    per_class = []
    for a, b in pair_list:
        table = gr.per_class_contrast(a, b, results, by)
        if table is not None:
            per_class.append(table.assign(a=gr.label(a, keys), b=gr.label(b, keys)))
        mine = rows[(rows["a"] == gr.label(a, keys)) & (rows["b"] == gr.label(b, keys))]
        note = gr.contrast_note(mine, metrics, name, unit(cfg.search.repeat_over))
        gr.contrast_figure(a, b, bands, keys, out / f"contrast_{a.group_id}_vs_{b.group_id}.png", note)
    if per_class:
        pd.concat(per_class).to_csv(out / "contrast_per_class.csv", index=False)
    return rows


def _group_parts(cfg: SweepConfig, groups: list[Group], paths: SweepPaths, out: Path,
                 selectors: tuple[dict[str, Any], dict[str, Any]] | None, summary: dict[str, Any],
                 answer: Answer) -> pd.DataFrame:
    """groups.csv, every group's eKLD band and the paired contrasts: with repeats only (a contrast pairs
    repeats; with one trial per configuration there is no spread to give it a CI)."""
    table = gr.group_table(cfg, groups)
    table.to_csv(out / "groups.csv", index=False)
    table.to_parquet(out / "groups.parquet", index=False)
    if cfg.search.repeats < 2:
        return pd.DataFrame()
    by = align_by(cfg.search.repeat_over)
    bands = {g.group_id: b for g in groups if (b := ekld_band(group_per_class(g, paths.results, by))) is not None}
    if bands:
        summary["ekld_curves"] = gr.groups_figure(groups, bands, list(cfg.search.space), out / "ekld_vs_class_size.png")
    return contrasts(cfg, groups, bands, paths.results, out, selectors, answer)


def write_report(cfg: SweepConfig, paths: SweepPaths, records: list[rs.TrialRecord],
                 selectors: tuple[dict[str, Any], dict[str, Any]] | None = None,
                 group_by: str | None = None, bias_population: str | None = None) -> Report:
    out = paths.report
    out.mkdir(parents=True, exist_ok=True)
    kind = kind_of(cfg.trial)
    trials = trial_table(cfg, records)
    summary = trial_summary(cfg, trials, paths.results, out)
    groups = gr.collect_groups(cfg, records, paths.results)
    decisions = read_decisions(paths.root) if cfg.search.racing is not None else {}
    answer = find_answer(cfg, groups, {gid for gid, d in decisions.items() if d.decision == "dropped"})
    rows = _group_parts(cfg, groups, paths, out, selectors, summary, answer)
    models = gr.group_table(cfg, groups) if cfg.search.repeats > 1 else trials[trials["state"] == "TERMINATED"]
    if any(str(c).startswith("probe/") for c in models.columns):
        pop = population(cfg, trials, models, bias_population)
        finished = int((trials["state"] == "TERMINATED").sum())
        summary["biases"] = write_bias_report(pop, out, group_by, finished)
    summary["pareto_front"] = pareto(cfg, models.reset_index(drop=True), out)
    if decisions:
        summary["race"] = write_race(cfg, groups, decisions, out)
    extra = resolve(kind.report)(cfg, groups, out) if kind.report else ""
    summary["groups"] = len(groups)
    summary["contrast_pairs"] = int(rows[["a", "b"]].drop_duplicates().shape[0]) if len(rows) else 0
    summary["answer"] = {"best_group": answer.best.group_id if answer.best else None, "sentence": answer.sentence,
                         **answer.metrics(cfg.search.metric)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    report = Report(out, summary, groups, rows, race_notes(decisions), answer=answer)
    report.lines = _printout(cfg, report, extra)
    return report


def _printout(cfg: SweepConfig, report: Report, extra: str) -> list[str]:
    """What `gitsweep report` prints: the best trial, importances, groups, contrasts, the kind's part,
    the bias probes."""
    summary, lines = report.summary, [report.answer.sentence] if report.answer else []
    best = summary["best"]
    if best:
        value = best.get(summary["metric"])
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"best trial {best['trial_id']} ({summary['best_rule']}): {summary['metric']} {shown}")
    imp = summary["importances"]
    lines.append("importances: " + (", ".join(f"{k} {v:.2f}" for k, v in imp["importances"].items())
                                    if imp.get("importances") else str(imp.get("note"))))
    if cfg.search.repeats > 1:
        lines.append(f"groups ({cfg.search.repeats} repeats over {cfg.search.repeat_over}; mean [95% CI]):")
        lines.append(format_groups(report.groups, gr.headline(cfg), cfg.search.repeats, report.notes or None))
    if len(report.contrast):
        lines.append("contrast (A - B, paired by repeat):")
        lines.append(gr.format_contrast(report.contrast, gr.headline(cfg)))
    if extra:
        lines.append(extra)
    if "biases" in summary:
        lines.append(bias_headline(summary["biases"]))
    return lines
