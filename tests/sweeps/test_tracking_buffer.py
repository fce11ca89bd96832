"""The driver's MLflow writes (sweeps.tracking.tracker) against a real SQLite store: per-epoch metric points wait
in the driver and are written at flush points, Tune's experiment snapshot among them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sweeps.config import load_config
from sweeps.paths import SweepPaths
from sweeps.tracking import mlflow_runs as mr
from sweeps.tracking import tracker as tracking
from sweeps.tracking.callback import SweepCallback, TrialIndex
from sweeps.tracking.progress import Progress


def _tracker(tmp_path: Path) -> tracking.SweepTracker:
    cfg, _ = load_config("demo", [f"storage={tmp_path}"])
    return tracking.SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "buffer", "s", cfg,
                                 str(tmp_path / "artifacts"))


def _callback(tmp_path: Path, tracker: tracking.SweepTracker) -> SweepCallback:
    cfg = load_config("demo")[0]
    return SweepCallback(cfg, TrialIndex(SweepPaths(tmp_path / "sweep")), tracker, Progress(9, [], "classifier", 3))


def _history(tracker: tracking.SweepTracker, key: str) -> list[tuple[int, float, int]]:
    points = tracker.client.get_metric_history(tracker.trial_run("t1", {}), key)
    return sorted((m.step, m.value, m.timestamp) for m in points)


def test_points_wait_for_a_flush_point_and_keep_their_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "FLUSH_S", 60.0)
    tracker = _tracker(tmp_path)
    callback = _callback(tmp_path, tracker)
    before = int(time.time() * 1000)
    for epoch in (1, 2):
        tracker.log_result("t1", {}, {"epoch": float(epoch), "train/loss": 1.0 / epoch, "trial/device": "cpu"})
    reported = int(time.time() * 1000)
    assert _history(tracker, "train/loss") == []  # still in the driver
    time.sleep(0.05)

    assert callback.get_state() is None  # Tune's snapshot: written first, nothing saved in the snapshot
    points = _history(tracker, "train/loss")
    assert [(s, v) for s, v, _ in points] == [(1, 1.0), (2, 0.5)]
    assert all(before <= t <= reported for _, _, t in points)  # stamped when reported, not when written

    tracker.log_result("t1", {}, {"epoch": 3.0, "train/loss": 0.25})
    tracker.finish_trial("t1", {}, "FINISHED")  # a trial's end writes its last points before closing it
    run = tracker.client.get_run(tracker.trial_run("t1", {}))
    assert run.info.status == "FINISHED" and run.data.metrics["train/loss"] == 0.25
    assert [s for s, _, _ in _history(tracker, "epoch")] == [1, 2, 3]
    assert run.data.tags[mr.DEVICE_TAG] == "cpu"


def test_points_older_than_the_flush_interval_are_written_at_the_next_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "FLUSH_S", 1.0)
    tracker = _tracker(tmp_path)
    callback = _callback(tmp_path, tracker)
    tracker.trial_run("t1", {})  # the run exists (creating it takes a while on SQLite) ...
    tracker.flush()  # ... and the interval starts now
    tracker.log_result("t1", {}, {"epoch": 1.0, "train/loss": 1.0})
    callback.on_step_end(iteration=1, trials=[])
    assert _history(tracker, "train/loss") == []  # not due yet
    time.sleep(1.1)
    callback.on_step_end(iteration=2, trials=[])  # no new result needed: Tune steps every 0.1 s or sooner
    assert [s for s, _, _ in _history(tracker, "train/loss")] == [1]


def test_a_run_left_bare_by_a_killed_driver_gets_its_params_on_resume(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    tags = {mr.SWEEP_TAG: "s", mr.ROLE_TAG: "classifier", mr.SLOT_TAG: "t1/0"}
    # what a driver killed between create_run and log_params leaves behind
    bare, created = mr.get_or_create_run(tracker.client, tracker.experiment_id, tags, run_name="trial_t1",
                                         parent_run_id=tracker.parent_run_id)
    assert created and not tracker.client.get_run(bare).data.params

    resumed = tracking.SweepTracker(tracker.uri, "buffer", "s", tracker.base, str(tmp_path / "artifacts"),
                                     parent_run_id=tracker.parent_run_id)
    assert resumed.trial_run("t1", {"seed": 3}) == bare  # the same run, not a second one
    params = resumed.client.get_run(bare).data.params
    assert params["seed"] == "3" and params["dataset.nuisance"] == "background"
    assert resumed.client.get_run(bare).data.tags["gitsweep.param.seed"] == "3"
