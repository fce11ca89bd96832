"""Every environment variable gitsweep reads, read here and nowhere else.

    GITSWEEP_HOME          default storage (else ./gitsweep-runs)
    GITSWEEP_CACHE         local cache of URI storage (else ~/.cache/gitsweep)
    GITSWEEP_NUM_CPUS      CPUs of a local embedded Ray (else all)
    MLFLOW_TRACKING_URI    default MLflow store (else SQLite under the storage)
    RAY_ADDRESS            default Ray cluster (else a local embedded Ray)

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
