"""The sweep states its answer where researchers look, with no extra step: after `gitsweep run` alone the
parent run holds `gitsweep.best_group`, the `contrast/*` metrics equal to contrast.csv's row, a description
opening with the answer and linking the `report/` files it holds; the closing lines print the runs table's
address; each Optuna trial carries its group run's MLflow id and its CI. A real sweep (Tune in this process,
SQLite MLflow) of the synthetic trial kind given a default contrast, declared here."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from support import mlflow_runs, synthetic_config, write_config

from sweeps.cli import main
from sweeps.kinds import SYNTHETIC, TRIAL_KINDS, Contrast

pytestmark = pytest.mark.slow
METRICS = ["test/balanced_acc", "ekld/tail"]


def _run(tmp_path: Path, storage: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSWEEP_NUM_CPUS", "2")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # the synthetic kind with a default contrast: arm 0 against arm 1 at the same other settings
    TRIAL_KINDS.register("armed")(replace(SYNTHETIC, contrast=Contrast(
        {"synthetic.arm": 0}, {"synthetic.arm": 1}, ("synthetic.arm",), "arm 0 - arm 1")))
    try:
        cfg = synthetic_config("answer", trial="armed", synthetic={"arm_gap": 0.1, "epochs": 2},
                               search={"repeats": 3, "metric": METRICS, "mode": ["max", "min"],
                                       "space": {"synthetic.arm": {"type": "categorical", "choices": [0, 1]}}})
        assert main(["run", str(write_config(tmp_path / "a.yaml", cfg)), "--storage", str(storage)]) == 0
    finally:
        TRIAL_KINDS.remove("armed")


def test_the_parent_run_states_the_answer(tmp_path: Path, storage: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path, storage, monkeypatch)
    out = capsys.readouterr().out
    runs = mlflow_runs(storage, "answer")
    parent = next(r for r in runs if r.data.tags.get("gitsweep.role") == "sweep")
    groups = {r.data.tags["gitsweep.group_id"]: r for r in runs if r.data.tags.get("gitsweep.role") == "group"}
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "armed"]
    # the best group by its mean balanced accuracy, read from MLflow's group runs
    best = max(groups, key=lambda g: groups[g].data.metrics["test/balanced_acc"])
    other = next(g for g in groups if g != best)
    assert groups[best].data.params["synthetic.arm"] == "0"  # the setup: arm 0 is 0.1 better
    assert parent.data.tags["gitsweep.best_group"] == best

    folder = storage / "sweeps" / "answer" / "report"
    csv, exact = pd.read_csv(folder / "contrast.csv"), pd.read_parquet(folder / "contrast.parquet")
    assert list(csv["metric"][:2]) == METRICS  # the search metrics lead
    for m in METRICS:
        row = csv[csv["metric"] == m].iloc[0]
        assert f"{row['a']} - {row['b']}" == parent.data.tags["gitsweep.contrast"]
        assert row["a"].startswith(best) and row["b"].startswith(other)  # best (arm 0) - its partner (arm 1)
        for part, col in (("diff", "diff"), ("ci95_low", "ci95_low"), ("ci95_high", "ci95_high"), ("p", "p_ttest")):
            assert parent.data.metrics[f"contrast/{m}/{part}"] == row[col]  # the parent holds contrast.csv's row
        # contrast.parquet holds the exact number, which the paired differences of the trials give
        by = {(t.data.params["synthetic.arm"], t.data.params["seed"]): t.data.metrics[m] for t in trials}
        diff = np.mean([by[("0", s)] - by[("1", s)] for s in ("0", "1", "2")])
        exact_diff = exact[exact["metric"] == m]["diff"].iloc[0]
        assert exact_diff == pytest.approx(diff, rel=1e-5)  # MLflow holds the trials' values to 7 digits
        assert row["diff"] == float(f"{exact_diff:.4g}")  # contrast.csv: the same number, rounded for reading

    note = parent.data.tags["mlflow.note.content"]
    first = note.split("\n\n")[0]
    diff = exact[exact["metric"] == "test/balanced_acc"]["diff"].iloc[0]
    assert first.startswith(f"arm 0 {best} (arm=0) is the best configuration")  # opens with the answer
    assert f"test/balanced_acc by {diff:+.4f}" in first and "n = 3 seeds" in first  # by how much, over what
    assert first in out  # the closing summary prints the same sentence
    links = re.findall(r"\]\(#/experiments/(\w+)/runs/(\w+)/artifacts/report/([^)?]+)\?workflowType=machine_learning\)",
                       note)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {name for _, _, name in links} == {p.name for p in folder.iterdir()} == logged  # every file, only those
    assert {(e, r) for e, r, _ in links} == {(parent.info.experiment_id, parent.info.run_id)}
    assert "contrast_" + best in " ".join(logged)  # the contrast figure

    table_url = f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning"
    assert f"runs table: {table_url}" in out

    study = optuna.load_study(study_name="answer", storage=f"sqlite:///{storage}/sweeps/answer/optuna.db")
    for t in study.trials:
        run = groups[t.user_attrs["group_id"]]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id  # the dashboard's trial page leads to MLflow
        assert t.user_attrs["mlflow_run"].endswith(f"/runs/{run.info.run_id}?workflowType=machine_learning")
        low, high = t.user_attrs["ekld/tail/ci95"]  # and shows the group's CI
        assert (low, high) == pytest.approx((run.data.metrics["ekld/tail/ci95_low"],
                                             run.data.metrics["ekld/tail/ci95_high"]), rel=1e-5)
