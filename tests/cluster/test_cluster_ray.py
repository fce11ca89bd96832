"""A sweep on a real two-node Ray cluster (`ray start --head` + a worker `ray start --address`), as
cluster/*.yaml and cluster/slurm-sweep.sh set one up: loopback only, token authentication on, the
project's own `gitsweep run CONFIG --address HEAD:PORT`, trials recorded in MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cluster_helpers import (
    CLUSTER_INFO,
    assert_no_secret_in_runs,
    base_env,
    cluster_nodes,
    fake_secrets,
    ray_cluster,
    run_gitsweep,
    tiny_sweep,
    token_env,
    write_yaml,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_sweep_on_two_node_cluster_with_token_auth(workdir: Path) -> None:
    from mlflow import MlflowClient

    leaks = fake_secrets()
    env = base_env(**token_env(workdir), **leaks)
    config = write_yaml(workdir / "tiny.yaml", tiny_sweep("ray-cluster"))
    storage = workdir / "runs"

    with ray_cluster(workdir, env) as address:
        # A client without the token (it retries for ~20 s, so it runs alongside the sweep).
        no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
        no_token["RAY_AUTH_MODE"] = "disabled"
        anonymous = subprocess.Popen([sys.executable, "-c", CLUSTER_INFO, address], env=no_token,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        out = run_gitsweep(["run", str(config), "--address", address, "--storage", str(storage)], env, workdir)
        assert out.returncode == 0, out.stdout[-4000:]

        _, err = anonymous.communicate(timeout=90)
        assert anonymous.returncode != 0  # rule: token auth turns anonymous clients away ...
        assert "InvalidAuthToken" in err, err[-2000:]  # ... because of the missing token, not by chance
        assert "2 terminated" in out.stdout  # rule: every trial of the sweep finished

        # Both 1-CPU nodes ran a trial: each trial actor's node, as the cluster's GCS recorded it.
        actor_nodes = subprocess.run(
            [sys.executable, "-c", TRIAL_NODES, address], env=env, capture_output=True, text=True, timeout=90)
        assert actor_nodes.returncode == 0, actor_nodes.stderr[-2000:]
        nodes = {n["id"] for n in cluster_nodes(address, env) or []}
        used = set(actor_nodes.stdout.split())
        assert used <= nodes and len(used) == 2, (used, nodes)  # rule: trials spread over head and worker

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ray-cluster")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`gitsweep.role` = 'synthetic'")
    assert len(runs) == 2  # rule: one MLflow run per trial
    for run in runs:
        assert run.info.status == "FINISHED"
        assert "test/balanced_acc" in run.data.metrics
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "per_class.parquet" in names
    assert_no_secret_in_runs(client, exp.experiment_id, leaks.values())


# Node ids of the Tune trial actors (dead or alive) the GCS remembers, one per line.
TRIAL_NODES = """
import sys
import ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
for actor in state.actors().values():
    name = actor.get("ActorClassName", "")
    if "ImplicitFunc" in name or "synthetic_trial" in name:
        print(actor["Address"]["NodeID"])
"""
