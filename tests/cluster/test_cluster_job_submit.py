"""`ray job submit` of a sweep, as docs/cluster.md shows it: a real Ray head with its dashboard (the job
server) on 127.0.0.1, token authentication on, the project's own entry point (`gitsweep run CONFIG`)
run by the job; the job's RAY_ADDRESS points it at the cluster, so no --address is needed."""

from __future__ import annotations

import re
import shutil
import subprocess
from contextlib import suppress
from pathlib import Path

import pytest
from cluster_helpers import (
    BIN,
    RayNode,
    base_env,
    free_port,
    node_ports,
    processes_mentioning,
    tiny_sweep,
    token_env,
    wait_for_nodes,
    write_yaml,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_ray_job_submit_runs_a_sweep(workdir: Path) -> None:
    import os
    import signal

    from mlflow import MlflowClient

    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("no ray CLI in the virtualenv")
    pytest.importorskip("aiohttp_cors", reason="the job server needs ray[default] (the dashboard)")
    env = base_env(**token_env(workdir))
    job_dir = workdir / "job"
    job_dir.mkdir()
    write_yaml(job_dir / "tiny.yaml", tiny_sweep("job-sweep"))
    storage = workdir / "runs"
    temp = workdir / "r"
    gcs, dash = free_port(), free_port()
    head = RayNode(["--head", "--port", str(gcs), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                    "--num-gpus", "0", "--temp-dir", str(temp), "--include-dashboard", "true",
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--disable-usage-stats",
                    *node_ports()], env, workdir / "head.log")
    try:
        wait_for_nodes(f"127.0.0.1:{gcs}", env, 1)
        head.check_running()
        # the command docs/cluster.md shows: the job server's HTTP address, the config in the working dir
        out = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir",
             str(job_dir), "--", "gitsweep", "run", "tiny.yaml", "--storage", str(storage)],
            env=env, capture_output=True, text=True, timeout=240)
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-4000:]
        assert "2 terminated" in text, text[-4000:]  # the sweep's own output streamed back
        job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", text)
        assert job_id is not None, text[-4000:]
        status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", f"http://127.0.0.1:{dash}",
                                 job_id.group(1)], env=env, capture_output=True, text=True, timeout=60)
        # rule: the job server records the job as SUCCEEDED (the CLI prints that status as "succeeded")
        assert f"Job '{job_id.group(1)}' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
    finally:
        head.stop()
        for pid in processes_mentioning(str(temp)):  # PID-scoped: only what our head left behind
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("job-sweep")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`gitsweep.role` = 'synthetic'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # rule: one finished run per trial
