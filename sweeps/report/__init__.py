"""`gitsweep report`: everything under `<storage>/sweeps/<name>/report/`, logged to the parent run under
`report/`. Torch-free: it reads the sweep's trial index and kept results (sweeps.results).

- trials.csv / .parquet, summary.json, response_surface.png, ekld_vs_class_size.png (sweeps.report.trials);
- groups.csv / .parquet: one row per group, mean and 95% CI of every metric (sweeps.report.groups);
- contrast.csv, contrast_per_class.csv and contrast_<a>_vs_<b>.png: paired contrasts, `--contrast A --vs B`
  or by default GIT against its baseline at every other setting;
- pareto.csv / .png with several objectives: the models no other model beats on every objective;
- bias_correlations.csv / .png, bias_matrix.png, bias_head_vs_tail.png: bias probes against
  generalization across the sweep's models (sweeps.report.biases), `--group-by KEY` within each value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.paths import SweepPaths, load_meta
from sweeps.report import groups as gr
from sweeps.report.biases import write_bias_report
from sweeps.report.trials import pareto, print_summary, trial_summary, trial_table


def contrasts(cfg: SweepConfig, groups: list[gr.Group], results: Path, out: Path,
              selectors: tuple[dict[str, Any], dict[str, Any]] | None) -> pd.DataFrame:
    """contrast.csv, contrast_per_class.csv and one figure per pair; returns the per-metric rows."""
    pair_list = gr.pairs(groups, *selectors) if selectors else gr.default_pairs(groups)
    keys = list(selectors[0]) if selectors else list(cfg.search.space)
    rows = gr.contrast_rows(pair_list, keys)
    rows.to_csv(out / "contrast.csv", index=False)
    by = "rank" if cfg.search.repeat_over == "dataset.instance" else "class"
    per_class = []
    for a, b in pair_list:
        table = gr.per_class_contrast(a, b, results, by)
        if table is not None:
            per_class.append(table.assign(a=gr.label(a, keys), b=gr.label(b, keys)))
        gr.contrast_figure(a, b, keys, out / f"contrast_{a.result.group_id}_vs_{b.result.group_id}.png")
    if per_class:
        pd.concat(per_class).to_csv(out / "contrast_per_class.csv", index=False)
    return rows


def msr_table(groups: list[gr.Group], out: Path) -> str:
    """msr_table.csv: meta-test MSE (mean and 95% CI over repeats) per problem and model; returns it as text."""
    rows = []
    for g in groups:
        m = g.result.metrics
        rows.append({"problem": g.values["msr.problem"], "model": g.values["msr.model"],
                     "mse": m.get("meta_test/mse", math.nan), "ci95_low": m.get("meta_test/mse/ci95_low", math.nan),
                     "ci95_high": m.get("meta_test/mse/ci95_high", math.nan), "n": len(g.result.finals)})
    if not rows:
        return ""
    table = pd.DataFrame(rows)
    table.to_csv(out / "msr_table.csv", index=False)
    cell = table["mse"].map("{:.3f}".format) + " ± " + ((table["ci95_high"] - table["ci95_low"]) / 2).map("{:.3f}".format)
    return str(table.assign(cell=cell).pivot(index="problem", columns="model", values="cell").to_string())


def write_report(cfg: SweepConfig, paths: SweepPaths, records: list[rs.TrialRecord],
                 selectors: tuple[dict[str, Any], dict[str, Any]] | None = None, group_by: str | None = None) -> Path:
    out = paths.report
    out.mkdir(parents=True, exist_ok=True)
    trials = trial_table(cfg, records)
    summary = trial_summary(cfg, trials, paths.results, out)
    groups = gr.collect_groups(cfg, records, paths.results)
    table = gr.group_table(cfg, groups)
    models = table if cfg.search.repeats > 1 else trials[trials["state"] == "TERMINATED"]
    if cfg.trial == "classifier":
        summary["biases"] = write_bias_report(models.reset_index(drop=True), out, group_by)
    summary["pareto_front"] = pareto(cfg, models.reset_index(drop=True), out)
    if cfg.trial == "classifier" and cfg.search.repeats > 1:  # with repeats: bands, not single draws
        summary["ekld_curves"] = gr.groups_figure(groups, list(cfg.search.space), out / "ekld_vs_class_size.png")
    table.to_csv(out / "groups.csv", index=False)
    table.to_parquet(out / "groups.parquet", index=False)
    # A contrast pairs repeats: with one trial per configuration there is no spread to give it a CI.
    paired = cfg.trial == "classifier" and cfg.search.repeats > 1
    rows = contrasts(cfg, groups, paths.results, out, selectors) if paired else pd.DataFrame()
    if cfg.trial == "msr":
        summary["msr_table"] = msr_table(groups, out)
    summary["groups"] = len(groups)
    summary["contrast_pairs"] = int(rows[["a", "b"]].drop_duplicates().shape[0]) if len(rows) else 0
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _log_to_parent(load_meta(paths), out)
    print_summary(summary)
    if cfg.search.repeats > 1:
        print(f"groups ({cfg.search.repeats} repeats over {cfg.search.repeat_over}; mean [95% CI]):")
        print(gr.format_groups(table, list(dict.fromkeys([*cfg.search.metric, *gr.HEADLINE]))))
    if len(rows):
        print("contrast (A - B, paired by repeat):")
        print(gr.format_contrast(rows))
    if summary.get("msr_table"):
        print("meta-test MSE, mean ± 95% CI half-width over repeats:\n" + summary["msr_table"])
    biases = summary.get("biases") or {"models": 0, "note": "no bias probes in this kind of sweep"}
    print(f"bias probes vs generalization over {biases['models']} models: " + (biases.get("note") or (
        "significant (p < 0.05): " + "; ".join(biases["significant"]) if biases["significant"] else
        "no probe correlates significantly (p < 0.05) with any generalization metric")))
    return out


def _log_to_parent(meta: dict[str, Any], out: Path) -> None:
    from sweeps.tracking import mlflow_runs as mr

    mr.client(meta["tracking_uri"]).log_artifacts(meta["parent_run_id"], str(out), artifact_path="report")
