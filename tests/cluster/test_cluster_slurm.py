"""cluster/slurm-sweep.sh run for real on this machine: two stand-in commands play SLURM (`srun` runs
its command here, `scontrol` lists two node names); Ray, the token handling and `gitsweep` are real."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

import pytest
from cluster_helpers import (
    BIN,
    CLUSTER,
    base_env,
    free_port,
    processes_mentioning,
    stop_group,
    tiny_sweep,
    write_yaml,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SRUN = """#!/usr/bin/env bash
# Stand-in for srun on one machine: drop srun's own options, run the command here (exec: same pid).
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in -w|-N|-n|--nodelist) shift 2 ;; *) shift ;; esac
done
exec "$@"
"""

SCONTROL = """#!/usr/bin/env bash
# Stand-in for `scontrol show hostnames LIST`: two node names.
[[ $1 == show && $2 == hostnames ]] || exit 1
printf 'node1\\nnode2\\n'
"""


def test_slurm_script_starts_nodes_runs_gitsweep_and_stops_ray(workdir: Path) -> None:
    shims = workdir / "bin"
    shims.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    # A trial asking for 8 CPUs on 1-CPU nodes: gitsweep connects to the cluster, checks its
    # resources and exits 2 without training, which keeps this test short.
    config = write_yaml(workdir / "big.yaml", {**tiny_sweep("slurm"), "resources": {"cpu": 8, "gpu": 0}})
    temp = workdir / "r"
    token = workdir / "token"
    env = base_env(
        PATH=f"{shims}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        SLURM_SUBMIT_DIR=str(workdir), SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_ID="4242",
        SLURM_CPUS_PER_TASK="1", GITSWEEP_VENV=str(BIN.parent), RAY_HEAD_IP="127.0.0.1",
        RAY_PORT=str(free_port()), RAY_DASHBOARD_PORT=str(free_port()), RAY_TMPDIR=str(temp),
        RAY_AUTH_TOKEN_PATH=str(token), RAY_START_TIMEOUT="120",
    )
    proc = subprocess.Popen(["bash", str(CLUSTER / "slurm-sweep.sh"), str(config)], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=200)
        left_over = processes_mentioning(str(temp))  # before our own clean-up below
    finally:
        stop_group(proc, grace_s=10)
        for pid in processes_mentioning(str(temp)):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    assert "2 node(s), 1 CPU(s) and 0 GPU(s) each" in out, out[-3000:]
    assert "resources.cpu" in out  # gitsweep reached the 2-node cluster and checked its resources
    assert proc.returncode == 2, out[-3000:]  # rule: the script exits with the sweep's status
    assert "gitsweep: Ray stopped on 2 node(s)" in out
    assert token.read_text().strip() and (token.stat().st_mode & 0o077) == 0  # a private token file was made
    assert not left_over, left_over  # rule: no Ray process of the job outlives it
