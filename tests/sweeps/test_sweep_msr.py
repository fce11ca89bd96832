"""MSR as a sweep: `trial: msr` trials through Ray Tune, groups over seeds, MLflow runs tagged msr with the
meta-test error as a series and the learned sharing pattern, and the report's problem x model table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support import artifacts, mlflow_runs, run_cli, write_config

pytestmark = pytest.mark.slow  # a real sweep: Ray, MLflow, training

CONFIG = {
    "name": "msr",
    "trial": "msr",
    "probes": [],
    "msr": {"outer_steps": 60, "eval_every": 30, "eval_tasks": 20, "tasks_per_step": 8},
    "search": {"num_samples": 2, "max_concurrent": 2, "sampler": "grid", "repeats": 2,
               "metric": "meta_test/mse", "mode": "min",  # one objective as a plain string
               "space": {"msr.model": {"type": "categorical", "choices": ["conv", "msr_fc"]}}},
    "resources": {"cpu": 1},
}


def test_msr_sweep(tmp_path: Path, storage: Path) -> None:
    res = run_cli(["run", str(write_config(tmp_path / "msr.yaml", CONFIG)), "--storage", str(storage)], timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = mlflow_runs(storage, "msr")
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "msr"]
    groups = [r for r in runs if r.data.tags.get("gitsweep.role") == "group"]
    assert len(trials) == 4 and len(groups) == 2  # 2 models x 2 seeds, nested in their groups
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    for r in trials:
        assert {"meta_test/mse", "meta_test/mse_ci95", "msr/equivariance_error"} <= set(r.data.metrics)
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "meta_test/mse"))
        assert steps == [30, 60]  # every eval_every outer steps, one point each
        assert "sharing_pattern.png" in artifacts(storage, r)  # the learned sharing pattern
    by_model = {r.data.params["msr.model"]: r for r in groups}
    assert by_model["conv"].data.metrics["group/n_finished"] == 2
    report = run_cli(["report", "msr", "--storage", str(storage)], timeout=200)
    assert report.returncode == 0, report.stdout + report.stderr
    table = pd.read_csv(storage / "sweeps" / "msr" / "report" / "msr_table.csv")
    assert sorted(table["model"]) == ["conv", "msr_fc"] and (table["n"] == 2).all()
    conv = table[table["model"] == "conv"].iloc[0]
    assert conv["mse"] == pytest.approx(by_model["conv"].data.metrics["meta_test/mse"])  # the group mean
    assert "meta-test MSE, mean" in report.stdout


@pytest.mark.parametrize(("sets", "key"), [
    (["msr.problem=rot8", "msr.model=lc"], "msr.model"),  # a 1-D model on a 2-D problem
    (["msr.outer_steps=0"], "msr.outer_steps"),
    (["msr.problem=rank7"], "msr.problem"),
    (["msr.eval_tasks=100000"], "msr.eval_tasks"),
])
def test_bad_msr_values_exit_2(tmp_path: Path, storage: Path, sets: list[str], key: str) -> None:
    args = ["run", str(write_config(tmp_path / "msr.yaml", CONFIG)), "--storage", str(storage)]
    res = run_cli([*args, *[a for s in sets for a in ("--set", s)]], timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and key in lines[0], res.stderr  # one line naming the key
    assert "Traceback" not in res.stderr and not storage.exists()  # nothing written
