"""Bias probes on every trial of a real sweep, and the report's probes-vs-generalization correlations:
the CSV's rho and p equal scipy's Spearman on the metrics MLflow holds; per-class series and probe curves
are metric series MLflow can overlay."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support import mlflow_runs, run_cli, tiny_config, write_config

from sweeps.report.biases import GENERALIZATION, PROBES, Population, correlations, write_bias_report

pytestmark = pytest.mark.slow  # a real sweep: Ray, MLflow, training


def test_probes_logged_and_correlated_across_trials(tmp_path: Path, storage: Path) -> None:
    cfg = tiny_config(
        "probed",
        classifier={"epochs": 3, "gen_frac": 0.0},
        search={"num_samples": 5, "max_concurrent": 2, "sampler": "grid",
                "space": {"seed": {"type": "categorical", "choices": [0, 1, 2, 3, 4]},
                          "classifier.lr": {"type": "categorical", "choices": [0.05]}}},
    )
    res = run_cli(["run", str(write_config(tmp_path / "p.yaml", cfg)), "--storage", str(storage)], timeout=500)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = mlflow_runs(storage, "probed")
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "classifier"]
    assert len(trials) == 5
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    # Params say what ran: `augment: git` with no generated share is the baseline, logged as `none` (as the
    # CLI prints it), so a filter finds every one of these baselines
    exp = trials[0].info.experiment_id
    found = client.search_runs([exp], "params.classifier.augment = 'none'")
    assert sorted(r.info.run_id for r in found) == sorted(r.info.run_id for r in trials)
    assert not client.search_runs([exp], "params.classifier.augment = 'git'")
    parent = next(r for r in runs if r.data.tags.get("gitsweep.role") == "sweep")
    sections = {k.split(".")[2] for k in parent.data.params if k.startswith("sweep.base.") and k.count(".") > 2}
    assert sections == {"classifier", "dataset", "generator", "resources"}  # what a classifier reads: no msr.*
    for r in trials:
        for key in (*PROBES, "probe/corruption_acc", "probe/lpp_head", "probe/lpp_tail", "probe/corruption_acc_tail"):
            assert key in r.data.metrics, key  # every probe scalar, with head and tail versions
        lowpass = client.get_metric_history(r.info.run_id, "probe/lowpass_acc")
        assert sorted(m.step for m in lowpass) == list(range(1, 10))  # one point per cut-off, step = 10 c
        ekld = client.get_metric_history(r.info.run_id, "per_class/ekld")
        assert sorted(m.step for m in ekld) == list(range(10))  # one point per class, step = size rank

    report = run_cli(["report", "probed", "--storage", str(storage)], timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    folder = storage / "sweeps" / "probed" / "report"
    csv = pd.read_csv(folder / "bias_correlations.csv")
    assert set(csv.columns) == {"probe", "metric", "group", "rho", "p", "n"}
    by_id = {r.data.tags["gitsweep.trial_id"]: r for r in trials}
    for row in csv.itertuples():
        x = [by_id[t].data.metrics.get(row.probe, math.nan) for t in sorted(by_id)]
        y = [by_id[t].data.metrics.get(row.metric, math.nan) for t in sorted(by_id)]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() >= 3 and np.ptp(np.asarray(x)[ok]) > 0 and np.ptp(np.asarray(y)[ok]) > 0:
            expected = stats.spearmanr(np.asarray(x)[ok], np.asarray(y)[ok])
            assert row.rho == pytest.approx(expected.statistic)  # rho as scipy computes it on the logged metrics
            assert row.p == pytest.approx(expected.pvalue)
            assert row.n == ok.sum()
    for name in ("bias_correlations.png", "bias_matrix.png", "bias_head_vs_tail.png"):
        assert (folder / name).stat().st_size > 5000, name  # drawn: 5 models are enough
    # one trial per configuration: no contrast computed (the answer says there is none)
    assert "paired by repeat" not in report.stdout and not (folder / "contrast.csv").exists()
    assert "no confidence interval and no contrast" in report.stdout

    # rule: a contrast pairs repeats, so a sweep without them is refused, naming the option
    refused = run_cli(["report", "probed", "--storage", str(storage), "--contrast", "seed=0", "--vs", "seed=1"])
    assert refused.returncode == 2 and "--contrast" in refused.stderr and "Traceback" not in refused.stderr


def test_group_by_and_too_few_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 8
    models = pd.DataFrame({k: rng.random(n) for k in (*PROBES, *GENERALIZATION)})
    models["loss"] = ["ce", "ldam"] * 4
    table = correlations(models, "loss")
    assert set(table["group"]) == {"all", "loss=ce", "loss=ldam"}  # every correlation, also within each value
    sub = models[models["loss"] == "ce"]
    row = table[(table["group"] == "loss=ce") & (table["probe"] == PROBES[0]) & (table["metric"] == GENERALIZATION[0])]
    expected = stats.spearmanr(sub[PROBES[0]], sub[GENERALIZATION[0]])
    assert row["rho"].item() == pytest.approx(expected.statistic) and row["n"].item() == 4
    few = write_bias_report(Population(models.head(4), "trials", 0), tmp_path, None)
    assert "at least 5" in few["note"] and not (tmp_path / "bias_correlations.png").exists()  # says so, draws nothing
