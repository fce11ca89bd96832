"""Where things are stored, the one owner of storage locations (torch- and Ray-free): the storage root (a
local folder or a pyarrow file system URI), its local cache, the default MLflow store, and where a sweep
lives, `<storage>/sweeps/<name>/`:

    config.yaml     the resolved config (after --set), what `resume` runs again
    sweep.json      tracking URI, experiment, parent run id, Tune experiment path
    search.jsonl    the search's log: configurations, which trial runs which repeat, race decisions
    trials.json     the trial index the driver keeps (sweeps.results): what `status` and `report` read
    trials.jsonl    records changed since trials.json was written (a line per trial end)
    results/<id>/   each finished trial's final metrics, per-class table and figure (sweeps.results)
    tune/<name>-<hash>/  the Tune experiment (trial folders, checkpoints)
    optuna.db       the search's Optuna study (SQLite default)
    report/         the report, written when the sweep ends and by `gitsweep report`
    sweep.log       Ray's and MLflow's own chatter

With a storage URI (`s3://...`, `gs://...`, `file:///...`) that folder is `<uri>/sweeps/<name>/`: Tune
writes `tune/` there itself, config.yaml and sweep.json are uploaded, and a local copy of them lives in
the cache folder (`SweepPaths.root`), where the index, results and `report/` are written too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlib.errors import ConfigError, DataError, UserError
from sweeps import env

TUNE_DIR = "tune"
DEFAULT_HOME = "gitsweep-runs"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# ---- the storage root -----------------------------------------------------------------------------

def is_uri(storage: str | os.PathLike[str] | None) -> bool:
    return storage is not None and bool(_SCHEME.match(str(storage)))


def normalize(uri: str) -> str:
    return uri.rstrip("/")


def join(uri: str, *parts: str) -> str:
    return "/".join([normalize(uri), *parts])


def cache_root(uri: str) -> Path:
    """The local working folder of storage `uri` (same on every call, distinct per URI)."""
    return env.cache_base().resolve() / hashlib.sha256(normalize(uri).encode()).hexdigest()[:16]


def default_storage(storage: str | None = None) -> Path:
    """A local storage folder: `storage`, else GITSWEEP_HOME, else ./gitsweep-runs, made absolute."""
    return Path(storage or env.storage_home() or DEFAULT_HOME).resolve()


def storage_uri(storage: str | None = None) -> str | None:
    """`storage` (or GITSWEEP_HOME) when it is a URI, else None."""
    raw = storage or env.storage_home()
    return normalize(raw) if raw is not None and is_uri(raw) else None


def absolute(storage: str | None) -> str:
    """The storage as every process must see it: a normalised URI, or an absolute local path."""
    return storage_uri(storage) or str(default_storage(storage))


def local_root(storage: str | None) -> Path:
    """The local folder of a storage: the folder itself, or a URI's local cache."""
    uri = storage_uri(storage)
    return cache_root(uri) if uri is not None else default_storage(storage)


def tracking_uri(explicit: str | None, storage: str | None) -> str:
    """The MLflow store: `explicit`, else MLFLOW_TRACKING_URI, else SQLite under the local storage."""
    return explicit or env.tracking_uri() or f"sqlite:///{local_root(storage) / 'mlflow.db'}"


def check_local(storage: str, given_as: str) -> None:
    """A local storage must be a folder, or a path where one can be made: its nearest existing part a
    writable folder. Else one UserError naming where the storage came from (`--storage`, ...)."""
    path = Path(storage)
    for part in (path, *path.parents):
        if not part.exists():
            continue
        if not part.is_dir():
            what = "is a file" if part == path else f"lies under {part}, which is a file"
            raise UserError(f"{given_as} {storage} {what}, not a folder")
        if not os.access(part, os.W_OK | os.X_OK):
            raise UserError(f"{given_as} {storage}: {part} is not writable")
        return


def storage_flag(storage: str | None) -> str:
    """' --storage X' for a printed command, or '' for the default storage."""
    if storage_uri(storage) is not None:
        return f" --storage {storage_uri(storage)}"
    return "" if default_storage(storage) == default_storage() else f" --storage {default_storage(storage)}"


# ---- files on a URI ---------------------------------------------------------------------------------

def fs_path(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ConfigError("storage", f"not a usable storage URI {uri!r}: {exc}") from None


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = fs_path(uri)
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def read_text(uri: str) -> str:
    fs, path = fs_path(uri)
    with fs.open_input_stream(path) as f:
        return bytes(f.read()).decode()


def write_text(uri: str, text: str) -> None:
    fs, path = fs_path(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


# ---- a sweep's folder -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepPaths:
    root: Path  # <storage>/sweeps/<name> (with a storage URI: its local copy in the cache)
    remote: str | None = None  # <uri>/sweeps/<name> with a storage URI
    # The Tune experiment's name, kept in sweep.json: the sweep's name made unique when it is created. Tune
    # stages a driver's files under the Ray session's folder by experiment name and start second, so two
    # sweeps started together on one cluster under one experiment name would write into each other's.
    tune_name: str = ""

    @property
    def tune_target(self) -> str:
        """Where the Tune experiment is: a local folder or a URI."""
        if self.remote:
            return join(self.remote, TUNE_DIR, *([self.tune_name] if self.tune_name else []))
        return str(self.tune)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def meta(self) -> Path:
        return self.root / "sweep.json"

    @property
    def tune(self) -> Path:
        return self.root / TUNE_DIR / self.tune_name if self.tune_name else self.root / TUNE_DIR

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def index(self) -> Path:
        return self.root / "trials.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def log(self) -> Path:
        return self.root / "sweep.log"

    def exists(self) -> bool:
        return exists(join(self.remote, "sweep.json")) if self.remote else self.meta.exists()


def sweep_paths(name: str, storage: str | None) -> SweepPaths:
    """Where a new sweep `name` lives in `storage` (its Tune experiment named afresh)."""
    import uuid

    uri = storage_uri(storage)
    return SweepPaths(local_root(storage) / "sweeps" / name, join(uri, "sweeps", name) if uri else None,
                      f"{name}-{uuid.uuid4().hex[:8]}")


def _from_meta(root: Path, meta: dict[str, Any]) -> SweepPaths:
    return SweepPaths(root, meta.get("remote"), meta.get("tune_name", ""))


def _remote_sweep(remote: str) -> SweepPaths | None:
    """The sweep stored at URI `remote` (<uri>/sweeps/<name>), its config and meta copied to the cache."""
    remote = normalize(remote)
    if not exists(join(remote, "sweep.json")):
        return None
    meta = json.loads(read_text(join(remote, "sweep.json")))
    paths = SweepPaths(cache_root(meta["storage"]) / "sweeps" / meta["name"], remote, meta.get("tune_name", ""))
    paths.root.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "sweep.json"):
        (paths.root / name).write_text(read_text(join(remote, name)))
    return paths


def find_sweep(name_or_path: str, storage: str | None = None) -> SweepPaths:
    """A sweep by name (under the storage) or by path (its folder or its Tune folder, or their URIs)."""
    if is_uri(name_or_path):
        target = name_or_path.rstrip("/")
        for uri_cand in (target, target.rsplit("/", 1)[0]):
            found = _remote_sweep(uri_cand)
            if found is not None:
                return found
        raise DataError(name_or_path, "no such sweep (no sweep.json there)")
    path = Path(name_or_path)
    for cand in (path, path.parent):
        if (cand / "sweep.json").is_file():
            return _from_meta(cand.resolve(), json.loads((cand / "sweep.json").read_text()))
    uri = storage_uri(storage)
    if uri is not None:
        found = _remote_sweep(join(uri, "sweeps", name_or_path))
        if found is None:
            raise DataError(name_or_path, f"no such sweep (looked for {join(uri, 'sweeps', name_or_path)}/sweep.json)")
        return found
    by_name = default_storage(storage) / "sweeps" / name_or_path
    if (by_name / "sweep.json").is_file():
        return _from_meta(by_name, json.loads((by_name / "sweep.json").read_text()))
    raise DataError(name_or_path, f"no such sweep (looked for {by_name}/sweep.json)")


def study_storage(url: str | None, root: Path) -> str:
    """The Optuna study's storage: `search.storage` (for teams, e.g. a database of its own on the MLflow
    server's PostgreSQL: Optuna's and MLflow's tables would collide in one), else SQLite in the sweep folder."""
    return url or f"sqlite:///{root / 'optuna.db'}"


def load_meta(paths: SweepPaths) -> dict[str, Any]:
    return dict(json.loads(paths.meta.read_text()))
