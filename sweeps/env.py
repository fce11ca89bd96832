"""Every environment variable gitsweep reads, read here and nowhere else.

    GITSWEEP_HOME          default storage (else ./gitsweep-runs)
    GITSWEEP_CACHE         local cache of URI storage (else ~/.cache/gitsweep)
    GITSWEEP_NUM_CPUS      CPUs of a local embedded Ray (else all)
    MLFLOW_TRACKING_URI    default MLflow store (else SQLite under the storage)
    RAY_ADDRESS            default Ray cluster (else a local embedded Ray)
    RAY_AUTH_MODE          Ray's token authentication (unset: on for a cluster address if a token is found)
    RAY_AUTH_TOKEN         Ray's token, else the file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token;
    RAY_AUTH_TOKEN_PATH    only whether one is there is read here: the token itself stays with Ray
    RAY_USE_TLS            Ray's TLS (the cluster address is then not checked in plain gRPC first)
    GITSWEEP_WORKERS_READY internal: set by sweeps.connect for a local Ray's workers (sweeps.worker_ready)

Settings gitsweep hands to Ray and Tune (their own variables) are written in sweeps.connect.
"""

from __future__ import annotations

import os
from pathlib import Path


def _get(name: str) -> str | None:
    return os.environ.get(name) or None


def storage_home() -> str | None:
    return _get("GITSWEEP_HOME")


def cache_base() -> Path:
    return Path(_get("GITSWEEP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gitsweep"))


def local_num_cpus() -> int | None:
    raw = _get("GITSWEEP_NUM_CPUS")
    return int(raw) if raw else None


def tracking_uri() -> str | None:
    return _get("MLFLOW_TRACKING_URI")


def ray_address() -> str | None:
    return _get("RAY_ADDRESS")


def ray_auth_mode() -> str | None:
    """RAY_AUTH_MODE as the user set it ("token", "disabled", ...), lower case; None when unset."""
    raw = _get("RAY_AUTH_MODE")
    return raw.strip().lower() if raw and raw.strip() else None


def ray_auth_token_given() -> bool:
    """RAY_AUTH_TOKEN holds a token (Ray ignores a blank one). The value itself stays with Ray."""
    return bool((_get("RAY_AUTH_TOKEN") or "").strip())


def ray_auth_token_path() -> str | None:
    return _get("RAY_AUTH_TOKEN_PATH")


def ray_default_token_file() -> Path:
    """Where Ray looks for its token when neither variable is set: ~/.ray/auth_token (HOME's)."""
    return Path.home() / ".ray" / "auth_token"


def ray_use_tls() -> bool:
    return (_get("RAY_USE_TLS") or "0").strip().lower() in ("1", "true")


WORKERS_READY = "GITSWEEP_WORKERS_READY"


def workers_ready_dir() -> Path | None:
    raw = _get(WORKERS_READY)
    return Path(raw) if raw else None
