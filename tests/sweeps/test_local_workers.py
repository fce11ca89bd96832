"""A local cluster's prestarted workers (they import torch and the trial code) host the first trials,
even after Tune's placement groups have reserved every CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import cli_env

pytestmark = pytest.mark.slow  # a real sweep: Ray, MLflow, training

RESERVE_ALL_CPUS = """
import json, os, time
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from sweeps import connect, worker_procs

connect.connect_ray(None)
warm = worker_procs.wait_until_idle(2)
pgs = [placement_group([{"CPU": 1}]) for _ in range(2)]  # what Tune does before creating trial actors
ray.get([pg.ready() for pg in pgs])
time.sleep(1.5)  # past Ray's default 1 s idle-kill threshold, with no CPU available

@ray.remote(num_cpus=1)
class Trial:
    def pid(self):
        return os.getpid()

trials = [Trial.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote() for pg in pgs]
print(json.dumps({"warm": sorted(warm), "trials": sorted(ray.get([t.pid.remote() for t in trials]))}))
"""


@pytest.mark.timeout(120)
def test_prestarted_workers_survive_reserved_cpus_and_host_the_trials() -> None:
    res = subprocess.run([sys.executable, "-c", RESERVE_ALL_CPUS], capture_output=True, text=True,
                         env=cli_env(), timeout=110)
    assert res.returncode == 0, res.stderr[-3000:]
    pids = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(pids["warm"]) == 2
    assert pids["trials"] == pids["warm"]  # not freshly started processes that import everything again
