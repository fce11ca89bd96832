"""The home's MLflow database (SQLite) is made once, complete, under a lock (sweeps.tracking.sqlite_store):
MLflow's own clients opening it at the same moment, in other processes, never see it half-migrated by
gitsweep, and whatever they do to a file they make themselves, gitsweep ends with a usable database."""

from __future__ import annotations

from pathlib import Path

from support import outcomes, start_clients, usable

from sweeps.tracking import mlflow_runs as mr
from sweeps.tracking import sqlite_store


def test_gitsweep_makes_a_usable_database_whatever_other_clients_do(tmp_path: Path) -> None:
    """Three plain MLflow clients open the fresh file at the moment gitsweep makes it: they make and migrate
    it themselves, at once, which MLflow does not survive (here some or all of them fail, and they can leave
    the file half-migrated). gitsweep waits for what they make and ends with a complete database either way."""
    db, go = tmp_path / "home" / "mlflow.db", tmp_path / "go"
    clients = start_clients(db, 3, go)
    go.touch()
    mr.client(f"sqlite:///{db}").search_experiments()  # gitsweep's one way to a client, racing them
    print(outcomes(clients))  # theirs: MLflow's own race among them, not gitsweep's to prevent
    assert sqlite_store._state(db) == "ready"
    usable(db)


def test_clients_that_open_the_file_once_it_exists_never_see_it_half_made(tmp_path: Path) -> None:
    """What `mlflow ui` or a script started next to a first sweep does: open the file as soon as it is there.
    gitsweep links a complete database into place, so every such client finds it whole."""
    db = tmp_path / "mlflow.db"
    clients = start_clients(db, 3, db)
    mr.client(f"sqlite:///{db}").search_experiments()  # gitsweep's one way to a client
    assert outcomes(clients) == ["ok"] * 3
    usable(db)
