"""Credentials inside tracking URIs never reach MLflow params or printed commands."""

from __future__ import annotations

from sweeps.tracking.mlflow_runs import _param_value, redact_uri, ui_command


def test_user_and_password_are_removed() -> None:
    uri = "postgresql+psycopg2://mlflow:s3cret@127.0.0.1:5432/mlflow"
    # the password (and user) disappear, host and database stay readable
    assert redact_uri(uri) == "postgresql+psycopg2://***@127.0.0.1:5432/mlflow"
    assert "s3cret" not in _param_value(uri)
    assert "s3cret" not in ui_command("http://bob:s3cret@127.0.0.1:5000", None)


def test_uris_without_credentials_are_unchanged() -> None:
    for uri in ("sqlite:////tmp/runs/mlflow.db", "http://127.0.0.1:5000", "s3://bucket/path"):
        assert redact_uri(uri) == uri
