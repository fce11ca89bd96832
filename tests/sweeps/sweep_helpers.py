"""Helpers for sweep tests: tiny configs, the real `gitsweep` CLI as a subprocess, MLflow reads.

Every sweep runs in its own process with its own local Ray (2 CPUs) and its own tmp storage, so no
Ray state leaks between tests; the process group is killed if a test fails half-way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

GITSWEEP = [sys.executable, "-m", "sweeps"]


def tiny_config(name: str, **sections: Any) -> dict[str, Any]:
    """A sweep that trains in seconds: 10 digit classes x <= 40 images, 3 epochs, a 20-step generator."""
    cfg: dict[str, Any] = {
        "name": name,
        "dataset": {"source": "digits", "nuisance": "background", "imbalance_ratio": 10, "max_per_class": 40,
                    "test_per_class": 8, "val_per_class": 5},
        "generator": {"iterations": 20, "batch_size": 8, "checkpoint_every": 10, "eval_samples": 20,
                      "judge_iterations": 40},
        "classifier": {"epochs": 3, "batch_size": 32, "warmup_epochs": 0, "milestones": [1], "lr_factors": [0.1],
                       "augment": "git", "gen_frac": 0.5, "ekld_samples": 3, "ekld_per_class": 4},
        "search": {"num_samples": 2, "max_concurrent": 2, "sampler": "grid", "max_failures": 1,
                   "space": {"classifier.gen_frac": {"type": "categorical", "choices": [0.0, 0.5]}}},
        "resources": {"cpu": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **values}
        else:
            cfg[section] = values
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    path = [str(Path(__file__).resolve().parents[2]), *filter(None, [env.get("PYTHONPATH")])]  # keep the caller's
    env.update({"GITSWEEP_NUM_CPUS": "2", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(path)})
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), so a test can kill what a driver started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the process group and every descendant (Ray's gcs, raylet and workers included)."""
    pids = [proc.pid, *descendants(proc.pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return pids


def run_cli(args: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`gitsweep ARGS` in its own session (with `env` added to cli_env()); on timeout the whole tree is killed."""
    proc = subprocess.Popen([*GITSWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**cli_env(), **(env or {})}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        raise AssertionError(f"gitsweep {' '.join(args)} timed out\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def mlflow_runs(storage: Path, experiment: str) -> list[Any]:
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    return list(c.search_runs([exp.experiment_id], max_results=1000))


def artifacts(storage: Path, run: Any) -> set[str]:
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    return {a.path for a in c.list_artifacts(run.info.run_id)}


def metric_history(storage: Path, run: Any, key: str) -> list[float]:
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    return [m.value for m in sorted(c.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
