"""ReportAhead: reports reach Tune in order, training runs ahead a bounded amount, errors and stops propagate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sweeps.trials.report_ahead import Report, ReportAhead


def _folder(tmp_path: Path, i: int) -> Path:
    d = tmp_path / f"ckpt{i}"
    d.mkdir()
    (d / "meta.json").write_text(str(i))
    return d


def test_reports_arrive_in_order_with_their_folders_then_are_removed(tmp_path: Path) -> None:
    ahead = ReportAhead()
    seen: list[tuple[int, str | None]] = []

    def body() -> None:
        for i in range(5):
            ahead.submit(Report({"epoch": i}, _folder(tmp_path, i) if i % 2 == 0 else None))

    def report(r: Report) -> None:
        seen.append((r.metrics["epoch"], (r.folder / "meta.json").read_text() if r.folder else None))

    ahead.run(body, report)
    assert seen == [(0, "0"), (1, None), (2, "2"), (3, None), (4, "4")]
    assert not list(tmp_path.iterdir())  # every checkpoint folder is removed once reported


def test_training_runs_at_most_two_reports_ahead_of_a_slow_tune(tmp_path: Path) -> None:
    ahead = ReportAhead()
    submitted: list[int] = []
    lead: list[int] = []
    reported = 0

    def body() -> None:
        for i in range(6):
            ahead.submit(Report({"epoch": i}, None))
            submitted.append(i)

    def report(r: Report) -> None:
        nonlocal reported
        time.sleep(0.05)  # the driver's round trip
        lead.append(len(submitted) - reported)
        reported += 1

    ahead.run(body, report)
    assert reported == 6 and max(lead) <= 2
    assert max(lead) >= 1  # and it did run ahead instead of waiting for each report


def test_an_error_in_training_reaches_tune_after_the_reports_made_before_it() -> None:
    ahead = ReportAhead()
    seen: list[int] = []

    def body() -> None:
        ahead.submit(Report({"epoch": 1}, None))
        ahead.submit(Report({"epoch": 2}, None))
        raise ValueError("diverged in epoch 3")

    with pytest.raises(ValueError, match="epoch 3"):
        ahead.run(body, lambda r: seen.append(r.metrics["epoch"]))
    assert seen == [1, 2]


def test_a_stop_from_tune_stops_training_and_removes_queued_folders(tmp_path: Path) -> None:
    ahead = ReportAhead()
    trained: list[int] = []
    thread: list[threading.Thread] = []

    def body() -> None:
        thread.append(threading.current_thread())
        for i in range(100):
            trained.append(i)
            ahead.submit(Report({"epoch": i}, _folder(tmp_path, i)))

    def report(r: Report) -> None:
        if r.metrics["epoch"] == 2:
            raise SystemExit(0)  # what tune.report raises when Tune stops the trial

    with pytest.raises(SystemExit):
        ahead.run(body, report)
    assert not thread[0].is_alive()  # the training thread has ended too
    assert len(trained) <= 6  # it stopped at its next report, not after all 100 epochs
    assert not list(tmp_path.iterdir())  # no checkpoint folder left behind
