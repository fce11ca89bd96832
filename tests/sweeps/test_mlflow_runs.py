"""Run bookkeeping against a real SQLite MLflow store."""

from __future__ import annotations

import time
from pathlib import Path

from sweeps.tracking import mlflow_runs as mr


def test_finish_run_keeps_the_first_end_time_and_records_the_reason(tmp_path: Path) -> None:
    c = mr.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mr.ensure_experiment(c, "finish", str(tmp_path / "artifacts"))
    run_id, created = mr.get_or_create_run(c, exp, {mr.SWEEP_TAG: "s", mr.TRIAL_TAG: "t1"})
    assert created
    mr.finish_run(c, run_id, "FINISHED")
    first = c.get_run(run_id).info.end_time
    time.sleep(0.05)
    mr.finish_run(c, run_id, "FINISHED")  # the final reconcile finishing it again
    assert c.get_run(run_id).info.end_time == first
    mr.finish_run(c, run_id, "FAILED", "boom")  # a real change of state does move it
    run = c.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.end_time > first and run.data.tags[mr.ERROR_TAG] == "boom"
