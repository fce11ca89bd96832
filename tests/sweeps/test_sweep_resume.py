"""Kill a running sweep with SIGKILL (driver, gcs, raylet, workers), then `gitsweep resume` it."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from sweep_helpers import (
    GITSWEEP,
    alive,
    cli_env,
    kill_tree,
    metric_history,
    mlflow_runs,
    run_cli,
    tiny_config,
    write_config,
)


def _checkpointed_epochs(tune_dir: Path) -> list[int]:
    """Epochs of every checkpoint the trials have reported so far."""
    out = []
    for meta in tune_dir.glob("trial_*/checkpoint_*/meta.json"):
        try:
            out.append(int(json.loads(meta.read_text())["epoch"]))
        except (OSError, ValueError, KeyError):
            continue
    return out


def _snapshot_checkpoints(tune_dir: Path) -> list[int]:
    """Checkpoint indices (0 = the first epoch's) that Tune's experiment snapshot records: what a resume
    restores from. Tune writes the snapshot periodically, so it can lag the checkpoints on disk."""
    out = []
    for state in tune_dir.glob("experiment_state-*.json"):
        try:
            out += [int(m) for m in re.findall(r"checkpoint_(\d{6})", state.read_text())]
        except OSError:
            continue
    return out


def test_sigkill_mid_sweep_then_resume(tmp_path: Path, storage: Path) -> None:
    # Two configurations, each a group of 3 repeats over seeds: 6 trials, 3 at a time (half a CPU each), so
    # the kill finds trials running, others pending, and Tune's snapshot knows the running ones.
    cfg = tiny_config(
        "killed",
        classifier={"epochs": 20, "git_start_epoch": 0},
        search={"num_samples": 2, "max_concurrent": 3, "sampler": "grid", "repeats": 3, "max_failures": 1,
                "space": {"classifier.gen_frac": {"type": "categorical", "choices": [0.0, 0.5]}}},
        resources={"cpu": 0.5},
    )
    path = write_config(tmp_path / "killed.yaml", cfg)
    # Tune snapshots the experiment every second here (10 s by default), and the kill waits until the
    # snapshot records a checkpoint past the first epoch: a resume restores what the snapshot holds.
    env = {**cli_env(), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen([*GITSWEEP, "run", str(path), "--storage", str(storage)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    tune_dir = storage / "sweeps" / "killed" / "tune"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and max(_snapshot_checkpoints(tune_dir), default=0) < 1:
            assert proc.poll() is None, proc.communicate()[0]  # the sweep must still be running
            time.sleep(0.2)
        assert max(_checkpointed_epochs(tune_dir), default=0) >= 2, "no trial checkpointed in time"
    finally:
        killed = kill_tree(proc)
    time.sleep(2)
    assert not [p for p in killed if alive(p)]  # driver, Ray's gcs / raylet / workers are all gone

    res = run_cli(["resume", "killed", "--storage", str(storage)], timeout=500)
    assert res.returncode == 0, res.stdout + res.stderr  # every trial finished after the resume

    runs = mlflow_runs(storage, "killed")
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "classifier"]
    groups = [r for r in runs if r.data.tags.get("gitsweep.role") == "group"]
    # exactly groups x repeats, one run per trial: no repeat ran twice, none was lost, resumed trials
    # continued their own runs
    assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in trials)
    assert len({r.data.tags["gitsweep.trial_id"] for r in trials}) == 6
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the killed driver left nothing running
    parent = [r for r in runs if r.data.tags.get("gitsweep.role") == "sweep"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"  # same parent run, reopened and closed
    assert len(groups) == 2 and all(g.info.status == "FINISHED" for g in groups)  # every group closed
    assert all(g.data.metrics["group/n_finished"] == 3 for g in groups)
    for g in groups:
        seeds = sorted(int(r.data.params["seed"]) for r in trials
                       if r.data.tags["mlflow.parentRunId"] == g.info.run_id)
        assert seeds == [0, 1, 2]  # each group's repeats, once each, under the group's run

    # An interrupted trial continued from its last checkpoint instead of starting over.
    starts = [max(metric_history(storage, r, "trial/start_epoch")) for r in trials]
    assert max(starts) >= 1, starts
    for r in trials:
        # Every epoch has its point: the driver writes its buffered metrics before each Tune snapshot, and
        # what the kill lost came after the snapshot the resume restored from, so it was trained again.
        assert sorted(set(metric_history(storage, r, "epoch"))) == [float(e) for e in range(1, 21)]
        assert "test/balanced_acc" in r.data.metrics

    # Every checkpoint was kept while the sweep ran; at its end each trial keeps only its newest.
    assert all(len(list(d.glob("checkpoint_*"))) == 1 for d in tune_dir.glob("trial_*"))

    # The shared generator was completed exactly once, whatever the kill interrupted.
    folders = list((storage / "generators").iterdir())
    assert len(folders) == 1
    events = [json.loads(x) for x in (folders[0] / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "finished" for e in events) == 1
    import optuna

    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{tune_dir.parent}/optuna.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2  # the study survived the kill: one complete trial per group
