"""`gitsweep resume --restart-errored` after a repeat failed for a cause outside the trial (its worker
process killed, as an out-of-memory kill or a lost node would): the restarted repeat finishes, and the
Optuna study is told its group's new numbers (a new trial that supersedes the one told with one repeat)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import optuna
import pytest
from support import descendants, kill_tree, mlflow_runs, run_cli, start_cli, synthetic_config, write_config

pytestmark = pytest.mark.slow  # a real sweep and its resume: local Ray, SQLite MLflow


def _trial_workers(pid: int) -> list[int]:
    """The Ray worker processes below the driver `pid` that run a Tune trial."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                found.append(child)
    return found


def test_restart_errored_tells_optuna_the_group_again(tmp_path: Path, storage: Path) -> None:
    cfg = synthetic_config("restart", synthetic={"epochs": 4, "epoch_s": 0.5},
                           search={"num_samples": 1, "max_concurrent": 1, "repeats": 2, "max_failures": 0,
                                   "space": {"synthetic.arm": {"type": "categorical", "choices": [0]}}})
    path = write_config(tmp_path / "restart.yaml", cfg)
    proc = start_cli(["run", str(path), "--storage", str(storage)])
    out = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if " started " in line:  # the first repeat is training: its worker dies
                workers = _trial_workers(proc.pid)
                assert len(workers) == 1, (workers, "".join(out))
                os.kill(workers[0], signal.SIGKILL)
                break
        out.append(proc.communicate(timeout=240)[0])
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the run's local Ray
    text = "".join(out)
    assert proc.returncode == 1 and "gitsweep resume restart --restart-errored" in text, text
    db = f"sqlite:///{storage / 'sweeps' / 'restart' / 'optuna.db'}"
    told = optuna.load_study(study_name="restart", storage=db).trials
    assert [t.user_attrs["n"] for t in told] == [1]  # the group was told with its one finished repeat

    res = run_cli(["resume", "restart", "--restart-errored", "--storage", str(storage)], timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = [r for r in mlflow_runs(storage, "restart") if r.data.tags.get("gitsweep.role") == "synthetic"]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # the restarted repeat finished
    acc = [r.data.metrics["test/balanced_acc"] for r in runs]
    trials = optuna.load_study(study_name="restart", storage=db).trials
    assert len(trials) == 2, trials  # told again: a finished Optuna trial cannot change, a new one supersedes it
    again = trials[1]
    assert again.user_attrs["n"] == 2 and again.user_attrs["supersedes"] == 0
    assert again.values == pytest.approx([sum(acc) / 2])  # the mean over both repeats (search.metric's default)
