"""What a sweep of many trials costs beyond its trials: synthetic trials (no training; each `synthetic.epochs`
epochs of `synthetic.epoch_s` of sleep, about 1 s in all, as in Ray Tune's own scalability benchmark) run 2 at a
time, at 100, 300 and 1,000 trials, once as single trials and once as groups of 5 repeats.

Each size runs in a fresh process (so the driver's peak memory is its own) against a local Ray started
first, and prints:

- wall time of the sweep (driver.start to its return) against the ideal: the sum of the trials' own time
  (each trial's `time/trial_s`, body start to final report: its sleep, then its per-class table and eKLD
  figure, about 0.5 s of CPU) over the concurrency;
- the driver's CPU per trial, Ray's own processes' CPU (every process on the machine but the driver and
  the trials: GCS, raylet, agents), and the driver's peak RSS;
- MLflow rows written per trial (metrics, latest_metrics, params, tags) and the database's size;
- Tune's experiment snapshots: how many, and the time each took (TuneController.save_to_dir, timed);
- `gitsweep status` and `gitsweep report` wall times on the finished sweep.

`python -m benchmarks scale` runs BENCH_SCALE_SIZES (default "100"; make bench runs that), modes
BENCH_SCALE_MODES ("single groups"), and with BENCH_SCALE_SERVER=1 the same sweeps against a team server
(a real `mlflow server` on PostgreSQL, as docs/cluster.md starts it) instead of SQLite, checking that every
trial's final metrics and series reached it. BENCH_SCALE_EPOCH_S sets the sleep per epoch (default 0.5, 2
epochs). Targets (issue): 1,000 trials <= 1.2x the ideal, the driver's CPU per trial at 1,000 within 1.3x of
its figure at 100, status <= 2 s, report <= 60 s, peak RSS <= 1.5 GB; the server at 300 trials <= 1.3x.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONCURRENCY, GROUP = 2, 5
SIZES = [int(s) for s in os.environ.get("BENCH_SCALE_SIZES", "100").split()]
MODES = os.environ.get("BENCH_SCALE_MODES", "single groups").split()
EPOCHS, EPOCH_S = 2, float(os.environ.get("BENCH_SCALE_EPOCH_S", "0.5"))
ROOT = Path(__file__).resolve().parents[1]


def config(storage: Path, trials: int, mode: str, tracking: str | None) -> Any:
    from sweeps.config import load_config

    repeats = GROUP if mode == "groups" else 1
    sets = [f"name=scale-{mode}-{trials}", f"storage={storage}", f"synthetic.epochs={EPOCHS}",
            f"synthetic.epoch_s={EPOCH_S}", f"search.num_samples={trials // repeats}", f"search.repeats={repeats}",
            f"search.max_concurrent={CONCURRENCY}", "search.sampler=random", "search.metric=test/balanced_acc",
            "search.mode=max"]
    if tracking:
        sets.append(f"tracking.uri={tracking}")
    return load_config("smoke", sets)[0]


def _timed_snapshots() -> list[float]:
    """Time every Tune experiment snapshot (TuneController.save_to_dir) of this process."""
    from ray.tune.execution.tune_controller import TuneController

    times: list[float] = []
    original = TuneController.save_to_dir

    def save_to_dir(self: Any) -> None:
        start = time.perf_counter()
        original(self)
        times.append(time.perf_counter() - start)

    TuneController.save_to_dir = save_to_dir  # type: ignore[method-assign]
    return times


def one(storage: Path, trials: int, mode: str, tracking: str | None) -> dict[str, Any]:
    """Run one sweep in this process (a fresh one) and measure it."""
    import ray

    from benchmarks.bench_sweep import CpuWatch
    from sweeps import connect, driver
    from sweeps.kinds import kind_of
    from sweeps.paths import find_sweep
    from sweeps.results import read_index

    os.environ["GITSWEEP_NUM_CPUS"] = str(CONCURRENCY)
    cfg = config(storage, trials, mode, tracking)
    snapshots = _timed_snapshots()
    connect.connect_ray(None, kind_of("synthetic").preload)
    try:
        watch = CpuWatch()
        watch.start()
        cpu0, start = time.process_time(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = driver.start(cfg)
        wall, driver_cpu = time.perf_counter() - start, time.process_time() - cpu0
        used = watch.stop()
    finally:
        ray.shutdown()
    where = find_sweep(cfg.name, cfg.storage)
    records = read_index(where.index)
    trial_pids = {int(r.last["pid"]) for r in records if "pid" in r.last}
    own = sum(r.last.get("time/trial_s", 0.0) for r in records)
    ray_cpu = sum(v for pid, v in used.items() if pid != os.getpid() and pid not in trial_pids)
    return {"code": code, "trials": len(records), "wall": wall, "ideal": own / CONCURRENCY,
            "driver_cpu": driver_cpu, "ray_cpu": ray_cpu, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "snapshots": snapshots}


def _rows(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return {t: c.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("runs", "metrics", "latest_metrics", "params", "tags")}


def _cli(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sweeps", *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return time.perf_counter() - start


def _server_complete(uri: str, name: str, trials: int) -> str:
    """Every trial's final metrics and its epoch series in the store: 'all N' or what is missing."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return f"no experiment {name}"
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=5000)
            if r.data.tags.get("gitsweep.role") == "synthetic"]
    steps = set(range(1, EPOCHS + 1))  # every epoch's report, the final one included
    missing = [r.info.run_id for r in runs if "test/balanced_acc" not in r.data.metrics or
               {m.step for m in client.get_metric_history(r.info.run_id, "val/balanced_acc")} != steps]
    return f"all {len(runs)} of {trials}" if len(runs) == trials and not missing else \
        f"{len(runs)} runs of {trials}, {len(missing)} incomplete"


def measure(trials: int, mode: str, tracking: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="gitsweep-scale-") as tmp:
        storage = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", "--one", str(storage), str(trials), mode,
                              tracking or ""], capture_output=True, text=True, env=env, timeout=4 * 3600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        m = json.loads(out.stdout.strip().splitlines()[-1])
        name = f"scale-{mode}-{trials}"
        status_s = _cli(["status", name, "--storage", str(storage)], env)
        report_s = _cli(["report", name, "--storage", str(storage)], env)
        if tracking:
            store = _server_complete(tracking, name, trials)
        else:
            db = storage / "mlflow.db"
            rows = _rows(db)
            store = (f"MLflow rows per trial: {rows['metrics'] / trials:.1f} metric points, {rows['params'] / trials:.1f} "
                     f"params, {rows['tags'] / trials:.1f} tags ({rows['runs']} runs); database {db.stat().st_size / 1e6:.1f} "
                     f"MB; trials complete in MLflow: {_server_complete(f'sqlite:///{db}', name, trials)}")
    snaps = m["snapshots"]
    print(f"{trials:>5} trials ({mode}): wall {m['wall']:.0f} s, ideal {m['ideal']:.0f} s, ratio {m['wall'] / m['ideal']:.2f}; "
          f"driver CPU {1000 * m['driver_cpu'] / trials:.0f} ms/trial, Ray's own processes {m['ray_cpu']:.0f} s CPU; "
          f"driver peak RSS {m['rss_mb']:.0f} MB", flush=True)
    print(f"      {store}; Tune snapshots: {len(snaps)}, {1000 * sum(snaps) / max(len(snaps), 1):.0f} ms each "
          f"(last {1000 * (snaps[-1] if snaps else 0):.0f} ms); status {status_s:.1f} s, report {report_s:.1f} s", flush=True)


def main() -> None:
    server = os.environ.get("BENCH_SCALE_SERVER") == "1"
    print(f"synthetic trials of {EPOCHS} x {EPOCH_S} s, {CONCURRENCY} at a time; groups of {GROUP}; "
          f"{'a team MLflow server on PostgreSQL' if server else 'SQLite'}")
    with _team_server() if server else contextlib.nullcontext() as uri:
        for trials in SIZES:
            for mode in MODES:
                measure(trials, mode, uri)


@contextlib.contextmanager
def _team_server() -> Any:
    """PostgreSQL (cluster/postgres-local.sh) and `cluster/mlflow-server.sh` on loopback, auth off."""
    import socket
    import urllib.request

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    folder = Path(tempfile.mkdtemp(prefix="gs-srv-", dir="/tmp"))
    folder.chmod(0o755)
    pg, web = port(), port()
    env = {**os.environ, "MLFLOW_DB_PASSWORD": secrets.token_hex(12), "MLFLOW_DB_PORT": str(pg),
           "MLFLOW_PORT": str(web), "MLFLOW_AUTH": "none", "MLFLOW_ARTIFACTS": str(folder / "art"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cluster = ROOT / "cluster"
    subprocess.run([str(cluster / "postgres-local.sh"), "start", str(folder / "pg"), str(pg)], env=env, check=True,
                   capture_output=True, timeout=120)
    log = (folder / "server.log").open("w")
    server = subprocess.Popen([str(cluster / "mlflow-server.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        for _ in range(150):
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{web}/health", timeout=2):
                break
            time.sleep(1)
        yield f"http://127.0.0.1:{web}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        server.wait(timeout=60)
        subprocess.run([str(cluster / "postgres-local.sh"), "stop", str(folder / "pg")], env=env, capture_output=True,
                       timeout=60)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--one":
    _, _, storage_arg, trials_arg, mode_arg, tracking_arg = sys.argv
    print(json.dumps(one(Path(storage_arg), int(trials_arg), mode_arg, tracking_arg or None)))
