"""The tracking server goes away mid-sweep: trials keep training, the driver holds the writes and retries,
and once the server is back every run holds every epoch exactly once. A sweep that ends while the server
is away saves its writes, and `gitsweep sync` writes them later. A resume that starts while the server is
away holds its writes from the first one on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import base_env, free_port, stop_group, tiny_sweep, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
# epochs of 0.1 s: the first sweep outlasts the outage and the outbox's retries after it (1, 2, 4, ... s apart),
# the second does not outlast the outage
LONG, SHORT = 600, 20


def start_server(folder: Path, port: int) -> subprocess.Popen[Any]:
    """A real `mlflow server` (SQLite backend, artifacts served by the server) on loopback; waits for /health."""
    import urllib.request

    log = (folder / "server.log").open("a")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{folder / 'srv.db'}", "--artifacts-destination", str(folder / "art"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_group(proc)
    raise AssertionError("MLflow server did not start: " + (folder / "server.log").read_text()[-2000:])


def trial_runs(uri: str, experiment: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if r.data.tags.get("gitsweep.role") == "synthetic"]


def assert_complete(uri: str, experiment: str, n: int, epochs: int) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = trial_runs(uri, experiment)
    assert len(runs) == n and all(r.info.status == "FINISHED" for r in runs)  # no twin, none left running
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/balanced_acc")]
        assert sorted(steps) == list(range(1, epochs + 1))  # every epoch once: no gap, no duplicate
        assert "test/balanced_acc" in r.data.metrics and r.data.tags.get("gitsweep.final_logged") == "true"


def sweep_config(tmp_path: Path, name: str, epochs: int) -> Path:
    cfg = tiny_sweep(name)
    cfg["synthetic"].update({"epochs": epochs, "epoch_s": 0.1})
    return write_yaml(tmp_path / f"{name}.yaml", cfg)


def test_server_outage_mid_sweep_then_after_it(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**base_env(), "PYTHONPATH": str(ROOT)}
    server = start_server(tmp_path, port)
    try:  # whatever fails, no server outlives the test
        cmd = [sys.executable, "-m", "sweeps", "run", str(sweep_config(tmp_path, "outage", LONG)), "--storage",
               str(tmp_path / "store"), "--tracking-uri", uri]
        run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
        try:
            while not [r for r in trial_runs(uri, "outage") if "val/balanced_acc" in r.data.metrics]:
                assert run.poll() is None, run.communicate()[0]
                time.sleep(0.5)  # the sweep is training and logging
            stop_group(server)
            print(f"server stopped at {time.strftime('%H:%M:%S')}")
            time.sleep(5)  # trials go on meanwhile (and while it restarts); the driver holds the writes
            server = start_server(tmp_path, port)
            print(f"server back at {time.strftime('%H:%M:%S')}")
            out = run.communicate(timeout=400)[0]
        finally:
            stop_group(run)
        print(out)
        assert run.returncode == 0, out
        assert "MLflow server unreachable" in out and "MLflow server back after" in out
        assert_complete(uri, "outage", 2, LONG)

        # The server goes away and the sweep ends before it is back: the writes wait on disk for `sync`.
        cmd[4] = str(sweep_config(tmp_path, "late", SHORT))
        late = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            while not trial_runs(uri, "late"):
                assert late.poll() is None, late.communicate()[0]
                time.sleep(0.5)
            stop_group(server)
            out = late.communicate(timeout=400)[0]
        finally:
            stop_group(late)
        assert late.returncode == 1 and "gitsweep sync late" in out, out  # says what to do, loses nothing
        assert (tmp_path / "store" / "sweeps" / "late" / "mlflow_outbox.json").is_file()
        server = start_server(tmp_path, port)
        sync = subprocess.run([sys.executable, "-m", "sweeps", "sync", "late", "--storage", str(tmp_path / "store")],
                              env=env, capture_output=True, text=True, timeout=200)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert_complete(uri, "late", 2, SHORT)
        assert not (tmp_path / "store" / "sweeps" / "late" / "mlflow_outbox.json").exists()
    finally:
        stop_group(server)


def _lines_until(proc: subprocess.Popen[Any], text: str) -> str:
    """The process's output up to the first line holding `text` (the process must still run then)."""
    out: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)
        if text in line:
            return "".join(out)
    raise AssertionError(f"ended before {text!r}:\n{''.join(out)}")


def test_resume_while_the_server_is_down_at_its_start(tmp_path: Path) -> None:
    """The parent run's reopening is held like any other write: the resume goes on and its trials finish;
    the server still away at its end, the writes wait on disk, and `gitsweep sync` writes every epoch once."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**base_env(), "PYTHONPATH": str(ROOT)}
    store = str(tmp_path / "store")
    server = start_server(tmp_path, port)
    run = None
    try:
        run = subprocess.Popen([sys.executable, "-m", "sweeps", "run", str(sweep_config(tmp_path, "down", SHORT)),
                                "--storage", store, "--tracking-uri", uri], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
        _lines_until(run, " started ")
        os.killpg(run.pid, signal.SIGKILL)  # the driver dies mid-sweep
        run.wait(timeout=30)
        stop_group(server)  # and the server is away when the resume starts
        resume = subprocess.run([sys.executable, "-m", "sweeps", "resume", "down", "--storage", store], env=env,
                                capture_output=True, text=True, timeout=400)
        out = resume.stdout + resume.stderr
        assert "Traceback" not in out and "MLflow server unreachable" in out, out  # held, not a crash
        assert resume.returncode == 1 and "gitsweep sync down" in out, out  # trials done, writes kept for sync
        assert out.count(" finished:") == 2, out  # the resume went on: both trials trained to their end
        server = start_server(tmp_path, port)
        sync = subprocess.run([sys.executable, "-m", "sweeps", "sync", "down", "--storage", store], env=env,
                              capture_output=True, text=True, timeout=200)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert_complete(uri, "down", 2, SHORT)
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("down")
        assert experiment is not None
        parents = client.search_runs([experiment.experiment_id], filter_string="tags.`gitsweep.role` = 'sweep'")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # reopened, then closed: one parent
    finally:
        if run is not None:
            stop_group(run)
        stop_group(server)
