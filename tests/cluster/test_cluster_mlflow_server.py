"""The team MLflow server of cluster/mlflow-server.sh on a real PostgreSQL (cluster/postgres-local.sh):
basic auth on, artifacts proxied by the server, a sweep logging to it with `--tracking-uri http://...`
and credentials from the environment only, the per-class table read back through the server."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cluster_helpers import (
    assert_no_secret_in_runs,
    base_env,
    ensure_postgres,
    fake_secrets,
    free_port,
    listening_addresses,
    mlflow_server,
    postgres,
    run_gitsweep,
    tiny_sweep,
    token_env,
    write_yaml,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(360)]


def _request(url: str, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_sweep_logs_to_postgres_backed_server_with_basic_auth(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = ensure_postgres()
    if reason:
        pytest.skip(reason)
    from mlflow import MlflowClient

    db_password = "db-" + secrets.token_urlsafe(16)
    admin_password = "admin-" + secrets.token_urlsafe(16)
    user, user_password = "sweeper", "sweeper-" + secrets.token_urlsafe(16)
    leaks = fake_secrets()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"

    with postgres(workdir, db_password) as db_port:
        server_env = base_env(
            MLFLOW_DB_PORT=str(db_port), MLFLOW_DB_PASSWORD=db_password, MLFLOW_PORT=str(port),
            MLFLOW_ARTIFACTS=str(workdir / "artifacts"), MLFLOW_STATE_DIR=str(workdir / "state"),
            MLFLOW_WORKERS="1", MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # the GenAI job workers: not needed here
        )
        with mlflow_server(server_env, workdir / "mlflow.log", port) as server:
            # The database password is in no process argument of the server (it travels as PGPASSWORD).
            for pid in _group_pids(server.pid):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert db_password.encode() not in cmd  # rule: no secret in `ps` output
            assert db_password not in (workdir / "state" / "basic_auth.ini").read_text()
            # rule: the server and its database listen on loopback only
            assert listening_addresses(port) == {"127.0.0.1"}
            assert listening_addresses(db_port) == {"127.0.0.1"}

            search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
            assert _request(search) == 401  # rule: anonymous requests are refused
            assert _request(search, "admin", "wrong-password-123") == 401
            assert _request(f"{uri}/api/2.0/mlflow/users/create", "admin", admin_password,
                            {"username": user, "password": user_password}) == 200

            config = write_yaml(workdir / "tiny.yaml", tiny_sweep("pg-sweep"))
            env = base_env(**token_env(workdir), **leaks, MLFLOW_TRACKING_USERNAME=user,
                           MLFLOW_TRACKING_PASSWORD=user_password)
            out = run_gitsweep(["run", str(config), "--tracking-uri", uri, "--storage", str(workdir / "runs")],
                               env, workdir)
            assert out.returncode == 0, out.stdout[-4000:]

            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user_password)
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("pg-sweep")
            assert exp is not None
            assert exp.artifact_location.startswith("mlflow-artifacts:")  # rule: artifacts go through the server
            runs = client.search_runs([exp.experiment_id], filter_string="tags.`gitsweep.role` = 'synthetic'")
            assert len(runs) == 2
            for run in runs:
                assert run.info.status == "FINISHED"
                local = Path(client.download_artifacts(run.info.run_id, "per_class.parquet", str(workdir)))
                table = pq.read_table(local).to_pandas()
                assert len(table) == 10  # rule: one row per digit class
                for col in ("class", "acc"):
                    assert any(col in str(c).lower() for c in table.columns), table.columns
                local.unlink()
            n_runs = assert_no_secret_in_runs(client, exp.experiment_id,
                                              [*leaks.values(), user_password, db_password, admin_password])

        # The runs live in PostgreSQL and the artifacts in the server's destination folder.
        stored = list((workdir / "artifacts").rglob("per_class.parquet"))
        assert len(stored) == 2
        assert _count_runs(db_port, db_password, exp.experiment_id) == n_runs


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == pgid:
                pids.append(int(entry.name))
    return pids


def _count_runs(port: int, password: str, experiment_id: str) -> int:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", password=password, dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment_id),))
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None
    return int(row[0])
