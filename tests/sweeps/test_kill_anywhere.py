"""A kill at any moment: a sweep is killed (SIGKILL) at ten points of its life, before any trial starts,
just after trials start, just after they finish, and right after a resume begins, and resumed after each
kill. After every kill no repeat has two runs, no configuration was proposed twice and no epoch was
logged twice; the last resume ends with exactly one FINISHED run per trial the sweep asked for, no
KILLED or RUNNING leftovers, as many distinct configurations as asked for, every epoch logged once, and
one complete Optuna trial per configuration (or group).

The synthetic trial kind stands in for training. The sweeps (one of single trials, one of groups) run at
the same time on one Ray cluster: a kill takes the driver and its trials, the cluster's node stays, as
on a real cluster (with a local Ray the node dies too, which changes nothing for the search's state).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from support import ray_head, run_cli, start_cli, synthetic_config, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCHS, TRIALS = 3, 12
# Where each kill comes, in the output of the process it kills (the run, then each resume): right after
# `count` lines containing `text`.
MOMENTS = [("sweep ", 1), (" started ", 1), (" finished:", 1), ("resuming", 1), (" started ", 2),
           (" finished:", 1), (" started ", 1), (" finished:", 2), (" started ", 3), (" finished:", 1)]


def _config(tmp_path: Path, name: str, repeats: int) -> Path:
    cfg = synthetic_config(name, synthetic={"epochs": EPOCHS, "epoch_s": 0.3},
                           search={"num_samples": TRIALS // repeats, "max_concurrent": 2, "sampler": "tpe",
                                   "repeats": repeats,
                                   "space": {"synthetic.x": {"type": "float", "low": 0.0, "high": 1.0},
                                             "synthetic.y": {"type": "float", "low": 0.0, "high": 1.0}}})
    return write_config(tmp_path / f"{name}.yaml", cfg)


def _kill_at(proc: Any, text: str, count: int, timeout_s: float = 120) -> tuple[str, bool]:
    """Read the driver's output until `text` has appeared `count` times, then SIGKILL its process group.
    Returns the output and whether the kill came before the sweep ended on its own."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True).start()
    seen, out, ended = 0, [], False
    try:
        while seen < count:
            line = lines.get(timeout=timeout_s)
            if line is None:
                ended = True
                break
            out.append(line)
            seen += text in line
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return "".join(out), not ended


def _runs(storage: Path, name: str) -> tuple[MlflowClient, list[Any]]:
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client, (client.search_runs([exp.experiment_id], max_results=1000) if exp else [])


def _check_any_time(storage: Path, name: str) -> None:
    """What holds at any moment: one run per repeat, no configuration proposed twice, no epoch twice."""
    client, runs = _runs(storage, name)
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "synthetic"]
    slots = [r.data.tags["gitsweep.slot"] for r in trials]
    assert len(slots) == len(set(slots)), sorted(slots)
    for r in trials:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "epoch")]
        assert len(steps) == len(set(steps)), (r.data.tags["gitsweep.slot"], steps)
    db = storage / "sweeps" / name / "optuna.db"
    if db.is_file() and name in optuna.get_all_study_names(f"sqlite:///{db}"):  # the kill may precede both
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        proposed = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(proposed) == len(set(proposed)), proposed


def _check_done(storage: Path, name: str, repeats: int) -> None:
    configs = TRIALS // repeats
    client, runs = _runs(storage, name)
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "synthetic"]
    # exactly one FINISHED run per trial the sweep asked for, no leftovers of any kind
    assert len(trials) == TRIALS, sorted((r.data.tags["gitsweep.slot"], r.info.status) for r in trials)
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    # as many distinct configurations as asked for: the resumed search never proposed one again
    assert len({(r.data.params["synthetic.x"], r.data.params["synthetic.y"]) for r in trials}) == configs
    for r in trials:  # every epoch logged once, the final metrics there
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "epoch")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (r.data.tags["gitsweep.slot"], steps)
        assert "test/balanced_acc" in r.data.metrics
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage}/sweeps/{name}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * configs
    # every checkpoint was kept while the sweep ran; at its end each trial keeps only its newest
    tune = storage / "sweeps" / name / "tune"
    assert all(len(list(d.glob("checkpoint_*"))) <= 1 for d in tune.glob("*/trial_*"))


def _kill_and_resume(tmp_path: Path, repeats: int, address: str, auth: dict[str, str]) -> list[str]:
    """The sweep killed at every moment in MOMENTS, resumed after each; returns where each kill landed."""
    name, storage = f"killed{repeats}", tmp_path / f"store{repeats}"
    args = ["run", str(_config(tmp_path, name, repeats)), "--storage", str(storage), "--address", address]
    landed = []
    for text, count in MOMENTS:
        out, killed = _kill_at(start_cli(args, env=auth), text, count)
        assert killed, out  # the kill came while the sweep ran
        landed.append(out.strip().splitlines()[-1][:80] if out.strip() else "(no output yet)")
        _check_any_time(storage, name)
        args = ["resume", name, "--storage", str(storage), "--address", address]
    res = run_cli(args, timeout=300, env=auth)
    assert res.returncode == 0, res.stdout + res.stderr
    _check_done(storage, name, repeats)
    return landed


def test_a_kill_at_any_moment_then_resume(tmp_path: Path) -> None:
    start = time.monotonic()
    with ray_head(tmp_path, cpus=4) as (address, auth), ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(_kill_and_resume, tmp_path, repeats, address, auth) for repeats in (1, 2)]
        for job in jobs:
            print("\n".join(job.result()))  # where the kills landed (seen with -s)
    print(f"20 kills and resumes in {time.monotonic() - start:.0f} s")
