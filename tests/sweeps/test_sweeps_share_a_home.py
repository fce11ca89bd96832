"""Several sweeps on one home at once, and the home's MLflow database (SQLite) opened by others while the
first sweep makes it: every sweep completes with nothing lost, and the database stays usable. Real Ray (one
cluster the sweeps share, so no sweep pays a Ray start of its own), real SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from support import (
    outcomes,
    ray_head,
    run_cli,
    run_parallel,
    start_clients,
    synthetic_config,
    usable,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
EPOCHS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with ray_head(tmp_path_factory.mktemp("ray"), cpus=4) as (address, auth):
        yield address, auth


def _config(folder: Path, name: str) -> Path:
    cfg = synthetic_config(name, synthetic={"epochs": EPOCHS, "epoch_s": 0.2})
    return write_config(folder / f"{name}.yaml", cfg)


def _complete(client: MlflowClient, experiment: str) -> None:
    """One FINISHED parent, and both trials FINISHED with every epoch once and their final metrics."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, experiment
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("gitsweep.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "synthetic"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", experiment
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials), experiment
    for r in trials:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val/balanced_acc"))
        assert steps == list(range(1, EPOCHS + 1)), (experiment, steps)  # every epoch once
        assert "test/balanced_acc" in r.data.metrics and r.data.tags.get("gitsweep.final_logged") == "true"
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id


def test_clients_open_the_database_while_the_first_sweep_makes_it(tmp_path: Path, cluster: Any) -> None:
    """The reported case: a script (or `mlflow ui`) opens the home's database as soon as it appears, while
    the first sweep makes it. gitsweep only ever puts a complete database there: every client finds it
    whole, the sweep completes, and the database stays usable."""
    address, auth = cluster
    home = tmp_path / "home"
    clients = start_clients(home / "mlflow.db", 3, home / "mlflow.db")
    res = run_cli(["run", str(_config(tmp_path, "first")), "--storage", str(home), "--address", address],
                  timeout=300, env=auth)
    assert res.returncode == 0, res.stdout + res.stderr
    assert outcomes(clients) == ["ok"] * 3  # none saw it half-migrated, none failed
    _complete(MlflowClient(f"sqlite:///{home / 'mlflow.db'}"), "first")
    usable(home / "mlflow.db")


def test_three_sweeps_at_the_same_moment_on_one_fresh_home(tmp_path: Path, cluster: Any) -> None:
    """A job array: the same `gitsweep run` three times at once on a fresh home. They share the database
    (made once, under a lock) and take the names first, first-2, first-3 (each name claimed once)."""
    address, auth = cluster
    home = tmp_path / "home"
    args = ["run", str(_config(tmp_path, "array")), "--storage", str(home), "--address", address]
    results = run_parallel([(args, auth)] * 3, timeout=400)
    out = "\n".join(r.stdout + r.stderr for r in results)
    assert [r.returncode for r in results] == [0, 0, 0], out
    assert "database is locked" not in out and "Traceback" not in out, out
    assert "this one is array-2" in out and "this one is array-3" in out, out
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for name in ("array", "array-2", "array-3"):
        _complete(client, name)
        assert (home / "sweeps" / name / "sweep.json").is_file()
