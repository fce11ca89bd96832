"""Real local processes for the cluster tests: Ray nodes, PostgreSQL, the MLflow server, `gitsweep`.

Everything listens on loopback ports picked free, lives in its own temp folder and runs in its own
session (process group), and is stopped by its own PID / process group: never `ray stop` or a
name-based kill, which would hit other people's processes on a shared machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml
from support import start_cli

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
BIN = Path(sys.executable).parent  # the virtualenv's bin: ray, mlflow, gitsweep


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_tmpdir(prefix: str) -> Path:
    """A short, world-searchable folder in /tmp (Ray's Unix sockets need short paths; the postgres
    user must reach a PostgreSQL data folder below it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def fake_secrets() -> dict[str, str]:
    """Credential-like environment variables with random values a leak check can search for."""
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": "aws-" + secrets.token_urlsafe(24),
        "GOOGLE_API_KEY": "gapi-" + secrets.token_urlsafe(24),
        "HF_TOKEN": "hf_" + secrets.token_urlsafe(24),
    }


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every process started here: no stray Ray / MLflow targets, one thread each."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "GITSWEEP_HOME"):
        env.pop(key, None)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # a SIGTERM'd node stops at once
        "GITSWEEP_NUM_CPUS": "2",
    })
    env.update(extra)
    return env


def token_env(folder: Path) -> dict[str, str]:
    """Ray token authentication with a token file of our own (nothing read from or written to ~/.ray)."""
    token = folder / "ray_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def tiny_sweep(name: str) -> dict[str, Any]:
    """Two trials of the synthetic kind (no torch, no data, 3 epochs of 0.2 s): what these tests check is
    the cluster, the connection and the stores, not training."""
    return {"name": name, "seed": 0, "trial": "synthetic", "probes": [],
            "synthetic": {"epochs": 3, "epoch_s": 0.2},
            "search": {"num_samples": 2, "max_concurrent": 2, "metric": ["test/balanced_acc"], "mode": ["max"],
                       "sampler": "grid", "space": {"synthetic.arm": {"type": "categorical", "choices": [0, 1]}}},
            "resources": {"cpu": 1, "gpu": 0}}


def tiny_classifier_sweep(name: str) -> dict[str, Any]:
    """Two classifier trials on scikit-learn's digits, 2 epochs, no generator: about a minute on 2 cores."""
    return {
        "name": name,
        "seed": 0,
        "dataset": {"source": "digits", "nuisance": "background", "profile": "exponential",
                    "imbalance_ratio": 10, "max_per_class": 30, "test_per_class": 8, "val_per_class": 5},
        "classifier": {"arch": "resnet_small", "epochs": 2, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0,
                       "milestones": [1], "lr_factors": [0.1], "augment": "none",
                       "ekld_samples": 2, "ekld_per_class": 4},
        "search": {"num_samples": 2, "max_concurrent": 2, "metric": ["test/balanced_acc"], "mode": ["max"],
                   "sampler": "grid",
                   "space": {"classifier.lr": {"type": "categorical", "choices": [0.02, 0.05]}}},
        "resources": {"cpu": 1, "gpu": 0},
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- process groups ------------------------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 20.0) -> None:
    """SIGTERM to the process group we started (its own session), SIGKILL what is left after grace_s."""
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and group_alive(pgid):
            proc.poll()  # reap the leader, so its pid stops counting as alive
            time.sleep(0.2)
    if proc.poll() is None:
        proc.wait(timeout=5)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (our own temp folder: nothing of anyone else's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            pids.append(int(entry.name))
    return pids


def run_gitsweep(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own session; on a timeout its whole process group is killed."""
    proc = start_cli(args, cwd=cwd, base=env)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace_s=5)
        out, _ = proc.communicate()
        raise AssertionError(f"gitsweep {' '.join(args)} ran past {timeout_s}s:\n{out[-4000:]}") from None
    finally:
        if group_alive(proc.pid):  # a local Ray the driver left behind
            stop_group(proc, grace_s=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


# ---- Ray -----------------------------------------------------------------------------------------


class RayNode:
    """One `ray start --block` process (head or worker); SIGTERM stops it and every process it started."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, wrap: tuple[str, ...] = ()) -> None:
        self.log = log
        self._log_file = log.open("w")  # `wrap`: a command the node runs inside (a mount namespace, ...)
        self.proc = subprocess.Popen([*wrap, str(BIN / "ray"), "start", *args, "--block"], env=env,
                                     stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"ray start exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_group(self.proc)
        self._log_file.close()


def node_ports() -> list[str]:
    """Explicit free ports for a node's side servers, so nodes never race for Ray's fixed defaults."""
    return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]


CLUSTER_INFO = """
import json, sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps([{"id": n["NodeID"], "alive": n["Alive"], "cpu": n["Resources"].get("CPU", 0),
                   "resources": n["Resources"]} for n in ray.nodes()]))
"""


def cluster_nodes(address: str, env: dict[str, str], timeout_s: float = 60) -> list[dict[str, Any]] | None:
    """The nodes of the cluster at `address` as a client sees them, or None if it cannot connect."""
    import json

    try:
        out = subprocess.run([sys.executable, "-c", CLUSTER_INFO, address], env=env, capture_output=True,
                             text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def wait_for_nodes(address: str, env: dict[str, str], want: int, timeout_s: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    nodes: list[dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        nodes = cluster_nodes(address, env)
        if nodes is not None and sum(n["alive"] for n in nodes) >= want:
            return nodes
        time.sleep(1)
    raise AssertionError(f"{want} Ray node(s) not up at {address} after {timeout_s}s (last seen: {nodes})")


@contextmanager
def ray_cluster(folder: Path, env: dict[str, str], worker_wrap: tuple[str, ...] = ()) -> Iterator[str]:
    """A head and one worker node, 1 CPU each, on 127.0.0.1 with token auth; yields the GCS address. The
    worker node has the custom resource `worker` (so a test can tell it apart), and runs inside
    `worker_wrap` when given."""
    temp = folder / "r"  # short: Ray's session sockets live below it
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[RayNode] = []
    try:
        nodes.append(RayNode(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                              "--num-gpus", "0", "--temp-dir", str(temp), "--include-dashboard", "false",
                              "--dashboard-port", str(free_port()), "--disable-usage-stats", *node_ports()],
                             env, folder / "head.log"))
        wait_for_nodes(address, env, 1)
        nodes.append(RayNode(["--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                              "--num-gpus", "0", "--temp-dir", str(temp), "--disable-usage-stats",
                              "--resources", '{"worker": 1}', *node_ports()], env, folder / "worker.log", worker_wrap))
        wait_for_nodes(address, env, 2)
        for node in nodes:
            node.check_running()
        yield address
    finally:
        for node in reversed(nodes):
            node.stop()
        left_over = processes_mentioning(str(temp))  # anything that escaped `ray start`'s own clean-up
        for pid in left_over:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left_over, f"Ray processes outlived SIGTERM to their node: {left_over}"  # reached without errors


# ---- PostgreSQL and the MLflow server ------------------------------------------------------------


def postgres_installed() -> bool:
    """initdb on PATH or in Debian's /usr/lib/postgresql/<version>/bin (where postgres-local.sh looks)."""
    return shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def ensure_postgres() -> str | None:
    """None if PostgreSQL is (now) installed, else why not (the caller skips with that reason)."""
    if postgres_installed():
        return None
    out = subprocess.run([str(CLUSTER / "postgres-local.sh"), "install"], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        return f"PostgreSQL is not installed and `cluster/postgres-local.sh install` failed: {out.stderr[-500:]}"
    return None


@contextmanager
def postgres(folder: Path, password: str) -> Iterator[int]:
    """A PostgreSQL cluster in `folder` on a free loopback port (cluster/postgres-local.sh); yields the port."""
    port = free_port()
    data = folder / "pg"
    env = base_env(MLFLOW_DB_PASSWORD=password)
    out = subprocess.run([str(CLUSTER / "postgres-local.sh"), "start", str(data), str(port)], env=env,
                         capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, f"postgres-local.sh start failed:\n{out.stdout}\n{out.stderr}"
        yield port
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(CLUSTER / "postgres-local.sh"), "stop", str(data)], env=env,
                           capture_output=True, timeout=60)


@contextmanager
def mlflow_server(env: dict[str, str], log: Path, port: int, timeout_s: float = 150) -> Iterator[subprocess.Popen[Any]]:
    """cluster/mlflow-server.sh in its own session; yields once /health answers."""
    import urllib.error
    import urllib.request

    log_file = log.open("w")
    proc = subprocess.Popen([str(CLUSTER / "mlflow-server.sh")], env=env, stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow-server.sh exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"MLflow server not up after {timeout_s}s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield proc
    finally:
        stop_group(proc, grace_s=15)
        log_file.close()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---- leak checks ---------------------------------------------------------------------------------


def assert_no_secret_in_runs(client: Any, experiment_id: str, values: Any) -> int:
    """No secret value appears in any param (name or value) or tag of any run of the experiment.
    Returns how many runs were checked."""
    secret_values = [v for v in values if v]
    runs = client.search_runs([experiment_id], max_results=1000)
    assert runs, "no runs to check"
    for run in runs:
        fields = {**{f"param {k}": f"{k}={v}" for k, v in run.data.params.items()},
                  **{f"tag {k}": f"{k}={v}" for k, v in run.data.tags.items()}}
        for where, text in fields.items():
            for secret in secret_values:
                # rule: credentials come from the environment and are never recorded with a run
                assert secret not in text, f"a secret from the environment leaked into {where} of run {run.info.run_id}"
    return len(runs)


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6)."""
    import ipaddress

    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)
            # /proc prints each 32-bit word little-endian
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw) if width == 8 else ipaddress.IPv6Address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            found.add(str(ip))
    return found
