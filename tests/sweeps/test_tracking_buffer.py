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
    callback.outbox.drain()
    assert _history(tracker, "train/loss") == []  # not due yet
    time.sleep(1.1)
    callback.on_step_end(iteration=2, trials=[])  # no new result needed: Tune steps every 0.1 s or sooner
    callback.outbox.drain()  # the writer thread's flush is done
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


class _SlowTracker:
    """The tracker's side of the outbox: named writes that take a while, the first `down` of them failing
    as an unreachable server does."""

    def __init__(self, down: int = 0) -> None:
        self.written: list[tuple[str, int]] = []
        self.threads: set[str] = set()
        self.down = down

    def write(self, i: int) -> None:
        import threading

        if self.down:
            self.down -= 1
            raise ConnectionError("Connection refused")
        time.sleep(0.02)
        self.threads.add(threading.current_thread().name)
        self.written.append(("write", i))

    def bad(self) -> None:
        raise ValueError("INVALID_PARAMETER_VALUE: a bad request")

    def take_pending(self) -> list[dict[str, object]]:
        return []


def test_the_writer_thread_keeps_order_and_a_drain_waits_for_it() -> None:
    from sweeps.tracking.outbox import Outbox

    tracker = _SlowTracker()
    outbox = Outbox(tracker, log=lambda _: None, background=True)
    start = time.perf_counter()
    for i in range(20):
        outbox.send("write", i)
    assert time.perf_counter() - start < 0.2  # handed over: 20 writes of 20 ms are not waited for
    assert len(tracker.written) < 20
    time.sleep(0.1)
    assert tracker.written and tracker.threads == {"gitsweep-mlflow"}  # the writer thread writes meanwhile
    assert outbox.drain() and not outbox.events  # the caller waits for the rest
    assert tracker.written == [("write", i) for i in range(20)]
    outbox.close()


def test_the_writer_thread_holds_writes_through_an_outage_and_hands_other_errors_back() -> None:
    from sweeps.tracking.outbox import Outbox

    tracker = _SlowTracker(down=1)
    notes: list[str] = []
    outbox = Outbox(tracker, log=notes.append, background=True)
    outbox.send("write", 1)
    outbox.send("write", 2)
    deadline = time.monotonic() + 10
    while len(tracker.written) < 2 and time.monotonic() < deadline:  # retried after the first 1 s backoff
        time.sleep(0.05)
    assert tracker.written == [("write", 1), ("write", 2)]
    assert "unreachable" in notes[0] and "back after" in notes[-1]

    outbox.send("bad")
    deadline = time.monotonic() + 5
    while outbox.events and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(ValueError, match="bad request"):  # raised where the next write is handed over
        outbox.send("write", 3)
    outbox.close()
    outbox.send("write", 4)  # after close, writes go out from the caller's thread
    assert not outbox.events and tracker.written[-1] == ("write", 4)


def test_a_write_made_later_is_made_once_and_saved_as_plain_data(tmp_path: Path) -> None:
    from sweeps.tracking.outbox import Outbox

    tracker = _SlowTracker(down=99)  # the server stays away
    made: list[int] = []

    def make() -> tuple[str, list[object]]:
        made.append(1)
        return "write", [7]

    outbox = Outbox(tracker, log=lambda _: None)
    outbox.send_later(make)
    assert not outbox.drain(force=True) and made == [1]
    saved = outbox.save(tmp_path)
    assert made == [1] and saved is not None and Outbox.load(tmp_path) == [("write", [7])]
