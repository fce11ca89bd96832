"""Trials stopped early (ASHA, the time budget) are evaluated and reported as results; ASHA's rungs
survive a resume. The time budget's test controls time itself (the synthetic kind's epoch_s), so it gives
the same verdict on a fast machine and a slow one."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from support import artifacts, mlflow_runs, run_cli, synthetic_config, write_config

from sweeps.config import load_config
from sweeps.search import make_scheduler


@pytest.mark.slow
def test_time_budget_stops_and_evaluates(tmp_path: Path, storage: Path) -> None:
    # Each trial would run 100 epochs of 0.5 s: far longer than the 12 s budget, on any machine.
    cfg = synthetic_config("budget", synthetic={"epochs": 100, "epoch_s": 0.5},
                           search={"num_samples": 4, "max_concurrent": 2, "sampler": "grid", "time_budget_s": 12,
                                   "space": {"synthetic.arm": {"type": "categorical", "choices": [0, 1, 2, 3]}}})
    res = run_cli(["run", str(write_config(tmp_path / "b.yaml", cfg)), "--storage", str(storage)], timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr  # stopped trials are results: the sweep succeeded
    assert "time budget of 12 s reached" in res.stdout
    trials = [r for r in mlflow_runs(storage, "budget") if r.data.tags.get("gitsweep.role") == "synthetic"]
    assert len(trials) == 2  # the two that ran when the budget ended; no trial started after it
    for r in trials:
        assert r.info.status == "FINISHED" and r.data.tags["gitsweep.stopped_early"] == "true"
        assert 0 < int(r.data.tags["gitsweep.stopped_epoch"]) < 100  # evaluated where it stopped
        assert {"test/balanced_acc", "ekld/tail"} <= set(r.data.metrics)
        assert "per_class.parquet" in artifacts(storage, r)
    status = run_cli(["status", "budget", "--storage", str(storage)], timeout=60)
    assert "STOPPED EARLY (epoch" in status.stdout


def _trial(trial_id: str) -> Trial:
    return Trial("fn", stub=True, trial_id=trial_id)


def test_asha_rungs_survive_a_resume(tmp_path: Path) -> None:
    cfg, _ = load_config("demo", ["search.repeats=1", "search.scheduler=asha", "search.grace_period=1",
                                  "search.reduction_factor=2", "classifier.epochs=4", "classifier.warmup_epochs=0",
                                  "classifier.milestones=[2]", "classifier.lr_factors=[0.1]", "search.metric=test/balanced_acc",
                                  "search.mode=max"])
    asked: list[str] = []
    live = make_scheduler(cfg, tmp_path)
    live.ask = lambda sweep, ids: asked.extend(ids)
    live.set_search_properties(None, None)
    pickled = pickle.dumps(live)  # what the Tuner holds when the sweep starts
    script = [("a", 1, 0.9), ("b", 1, 0.8), ("c", 1, 0.2), ("a", 2, 0.9), ("b", 2, 0.85), ("d", 1, 0.1)]
    decisions = []
    for tid, it, acc in script[:4]:  # the sweep runs, then is killed
        live.on_trial_add(None, _trial(tid)) if it == 1 else None
        decisions.append(live.on_trial_result(None, _trial(tid), {"training_iteration": it, "val/balanced_acc": acc}))
    resumed = pickle.loads(pickled)  # a resumed sweep unpickles the scheduler as it was at the start ...
    resumed.ask = lambda sweep, ids: asked.extend(ids)
    assert [b._rungs for b in resumed._brackets] == [b._rungs for b in live._brackets]  # ... with its rungs back
    assert resumed.asked == live.asked and "c" in live.asked  # c, below the first rung's cutoff, was asked to stop
    for sched in (live, resumed):  # the next results get the same decisions, resumed or not
        for tid, it, acc in script[4:]:
            if it == 1:
                sched.on_trial_add(None, _trial(tid))
            sched.on_trial_result(None, _trial(tid), {"training_iteration": it, "val/balanced_acc": acc})
    assert live.asked == resumed.asked and "d" in live.asked
    # without the saved rungs d (the worst so far) would pass the first rung: an empty rung stops nobody
    (tmp_path / "asha.pkl").unlink()
    fresh = pickle.loads(pickled)
    fresh.on_trial_add(None, _trial("d"))
    assert fresh.on_trial_result(None, _trial("d"), {"training_iteration": 1, "val/balanced_acc": 0.1}) == "CONTINUE"
    assert "d" not in fresh.asked
    assert all(d == "CONTINUE" for d in decisions)  # a STOP becomes a request: the trial evaluates and ends
