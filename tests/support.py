"""Helpers of every test file: tiny configs (a real one that trains in seconds, and a synthetic one that
does not train at all), the one runner of the real `gitsweep` CLI as a subprocess, process-tree
cleanup, MLflow reads.

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

REPO = Path(__file__).resolve().parents[1]
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


def synthetic_config(name: str, **sections: Any) -> dict[str, Any]:
    """A sweep of the synthetic trial kind (sweeps.synthetic): no torch, no data, 3 epochs of no sleep
    each unless `synthetic.epoch_s` says otherwise; 2 configurations of `synthetic.arm` by default."""
    cfg: dict[str, Any] = {
        "name": name,
        "trial": "synthetic",
        "probes": [],
        "synthetic": {"epochs": 3, "noise_sd": 0.02},
        "search": {"num_samples": 2, "max_concurrent": 2, "sampler": "grid", "max_failures": 1,
                   "space": {"synthetic.arm": {"type": "categorical", "choices": [0, 1]}}},
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
    path = [str(REPO), *filter(None, [env.get("PYTHONPATH")])]  # keep the caller's
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


def start_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              base: dict[str, str] | None = None) -> subprocess.Popen:
    """`gitsweep ARGS` started in its own session: stdout with stderr merged into it. The environment is
    cli_env() (or `base`) with `env` added."""
    return subprocess.Popen([*GITSWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**(base if base is not None else cli_env()), **(env or {})}, cwd=cwd,
                            start_new_session=True)


def run_cli(args: list[str], timeout: float = 300, env: dict[str, str] | None = None, cwd: Path | None = None,
            base: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`gitsweep ARGS` in its own session (environment as start_cli's), stdout and stderr apart; on a
    timeout, or if it leaves processes behind (a local Ray), the whole tree is killed."""
    proc = subprocess.Popen([*GITSWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**(base if base is not None else cli_env()), **(env or {})}, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        raise AssertionError(f"gitsweep {' '.join(args)} timed out\n{out}\n{err}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of this run outlives it
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_parallel(calls: list[tuple[list[str], dict[str, str]]], timeout: float = 120,
                 cwds: list[Path] | None = None) -> list[subprocess.CompletedProcess]:
    """Several CLI runs at once (each with its own extra environment and folder): each pays its imports,
    so overlapping them saves wall time."""
    procs = [subprocess.Popen([*GITSWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**cli_env(), **env}, cwd=cwds[i] if cwds else None, start_new_session=True)
             for i, (args, env) in enumerate(calls)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


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


# ---- MLflow clients of other processes ---------------------------------------------------------------

# A plain MLflow client in another process, as a script or `mlflow ui` opens the database: mlflow imported
# first (the slow part; then it prints "ready"), then the open as soon as the file argv[2] exists (a go
# signal, or the database itself). Prints ok, or failed and why.
CLIENT = r"""
import sys, time
from pathlib import Path
from mlflow import MlflowClient
db, signal = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
deadline = time.time() + 300
while not signal.exists() and time.time() < deadline:
    time.sleep(0.002)
try:
    MlflowClient(f"sqlite:///{db}").search_experiments()
    print("ok")
except Exception as exc:
    print("failed", type(exc).__name__, str(exc).splitlines()[0][:160])
"""


def start_clients(db: Path, n: int, signal: Path) -> list[subprocess.Popen[str]]:
    """n clients waiting for `signal`, returned once each has imported mlflow."""
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(db), str(signal)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=cli_env()) for _ in range(n)]
    for c in clients:
        assert c.stdout is not None and c.stdout.readline().strip() == "ready"
    return clients


def outcomes(clients: list[subprocess.Popen[str]]) -> list[str]:
    return [c.communicate(timeout=300)[0].strip() for c in clients]


def usable(db: Path) -> None:
    """A fresh process opens it, finds MLflow's schema, and writes a run to it."""
    code = ("import sys; from mlflow import MlflowClient; c = MlflowClient(f'sqlite:///{sys.argv[1]}'); "
            "e = c.create_experiment('check'); r = c.create_run(e); c.log_metric(r.info.run_id, 'm', 1.0); "
            "print(c.get_run(r.info.run_id).data.metrics)")
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, env=cli_env(),
                         timeout=300)
    assert out.returncode == 0 and "{'m': 1.0}" in out.stdout, out.stderr[-2000:]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def ray_head(folder: Path, cpus: int = 2) -> Any:
    """A one-node Ray cluster (`ray start --head --block`) on loopback with token authentication (a token
    file of its own), in its own session; yields (address, the environment a client needs). Sweeps connect
    to it with --address and pay no Ray start-up of their own."""
    import secrets
    import shutil
    import tempfile
    import time

    temp = Path(tempfile.mkdtemp(prefix="gs", dir="/tmp"))  # short: Ray's Unix socket paths must be
    token = folder / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = free_port()
    log = (folder / "ray-head.log").open("w")
    ports = [a for flag in ("--node-manager-port", "--object-manager-port", "--dashboard-port")
             for a in (flag, str(free_port()))]
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", "0",
                             "--temp-dir", str(temp), "--include-dashboard", "false", "--disable-usage-stats",
                             *ports], env={**cli_env(), **auth, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):  # Ray's own client retries for a minute against a GCS not up yet
            assert head.poll() is None and time.monotonic() < deadline, (folder / "ray-head.log").read_text()[-3000:]
            time.sleep(0.3)
        while True:
            check = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}', "
                                    "log_to_driver=False)"], capture_output=True, text=True,
                                   env={**cli_env(), **auth}, timeout=60)
            if check.returncode == 0:
                break
            assert head.poll() is None and time.monotonic() < deadline, (folder / "ray-head.log").read_text()[-3000:]
            time.sleep(1)
        yield address, auth
    finally:
        kill_tree(head)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
