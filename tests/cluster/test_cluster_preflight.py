"""The data pre-flight where the trials run: on a two-node cluster whose worker node does not see a data
root the driver's host sees (the worker runs in a mount namespace with an empty file system mounted over
the root, as a node without a shared mount would), `gitsweep run --address` exits 2 before the sweep writes
anything, with one line naming the worker node and the missing file; where every node sees the root, the
check passes on both nodes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_helpers import base_env, cluster_nodes, ray_cluster, run_gitsweep, token_env, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from source_files import write_k49  # noqa: E402


def _can_hide(folder: Path) -> bool:
    """Whether this machine lets us mount over a folder in a mount namespace of our own (root, or a user
    namespace); CI containers may not."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs tmpfs {folder}"], capture_output=True, timeout=30)
    return probe.returncode == 0


def _k49_config(folder: Path, name: str, root: Path) -> Path:
    return write_yaml(folder / f"{name}.yaml", {
        "name": name, "probes": [], "dataset": {"source": "k49", "root": str(root), "max_per_class": 2},
        "classifier": {"epochs": 1, "warmup_epochs": 0, "milestones": [1], "lr_factors": [0.1], "augment": "none",
                       "gen_frac": 0.0}, "resources": {"cpu": 1},
        "search": {"num_samples": 1, "sampler": "grid",
                   "space": {"classifier.lr": {"type": "categorical", "choices": [0.05]}}}})


def test_a_root_the_worker_node_does_not_see(workdir: Path) -> None:
    hidden, shared = workdir / "hidden" / "k49", workdir / "shared" / "k49"
    write_k49(hidden, per_class=2, test_per_class=1)
    write_k49(shared, per_class=2, test_per_class=1)
    if not _can_hide(hidden):
        pytest.skip("no mount namespaces here: a node that does not see a root cannot be made on one machine")
    env = base_env(**token_env(workdir))
    # the worker node and every process it starts see an empty folder at `hidden`
    wrap = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs tmpfs {hidden} && exec "$0" "$@"')
    storage = workdir / "runs"
    with ray_cluster(workdir, env, worker_wrap=wrap) as address:
        worker = next(n["id"] for n in cluster_nodes(address, env) or [] if "worker" in n["resources"])
        res = run_gitsweep(["run", str(_k49_config(workdir, "hidden", hidden)), "--address", address,
                            "--storage", str(storage)], env, workdir)
        lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
        assert res.returncode == 2, res.stdout[-3000:]  # bad input: the sweep never starts
        error = [ln for ln in lines if ln.startswith("gitsweep: error: ")]
        assert len(error) == 1 and "Traceback" not in res.stdout, res.stdout[-3000:]
        assert str(hidden / "k49-train-imgs.npz") in error[0] and "missing" in error[0]  # the path ...
        assert f"id {worker[:8]}), where trials run" in error[0]  # ... and the worker node
        assert not storage.exists()  # nothing written

        # Where both nodes see the root, the check runs on both and passes (called as the driver calls it).
        # In a process of its own: Ray reads its auth mode once per process, and this one may have run
        # an unauthenticated Ray already.
        script = (
            "import ray, sys\n"
            "from gitlib.errors import DataError\n"
            "from sweeps.config import load_config\n"
            "from sweeps.preflight import preflight_on_nodes\n"
            "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR')\n"
            "print('shared:', preflight_on_nodes(load_config(sys.argv[2])[0]))\n"
            "try:\n"
            "    preflight_on_nodes(load_config(sys.argv[3])[0])\n"
            "except DataError as exc:\n"
            "    print('hidden:', exc)\n")
        checked = subprocess.run([sys.executable, "-c", script, address, str(_k49_config(workdir, "shared", shared)),
                                  str(_k49_config(workdir, "hidden", hidden))], env=env, capture_output=True,
                                 text=True, timeout=120)
        assert "shared: []" in checked.stdout, checked.stdout + checked.stderr[-3000:]
        assert f"id {worker[:8]}" in next(ln for ln in checked.stdout.splitlines() if ln.startswith("hidden:"))
