"""Where a sweep lives, torch- and Ray-free: `<storage>/sweeps/<name>/`.

    config.yaml     the resolved config (after --set), what `resume` runs again
    sweep.json      tracking URI, experiment, parent run id, Tune experiment path
    trials.json     the trial index the driver keeps (sweeps.results): what `status` and `report` read
    results/<id>/   each finished trial's final metrics, per-class table and figure (sweeps.results)
    tune/           the Tune experiment (trial folders, checkpoints, searcher state)
    optuna.db       the search's Optuna study (SQLite default)
    report/         written by `gitsweep report`
    sweep.log       Ray's and MLflow's own chatter

With a storage URI (`s3://...`, see sweeps.stores.remote) that folder is `<uri>/sweeps/<name>/`: Tune writes
`tune/` there itself, config.yaml and sweep.json are uploaded, and a local copy of them lives in the
cache folder (`SweepPaths.root`), where the index, results and `report/` are written too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlib.errors import DataError
from sweeps import env

TUNE_DIR = "tune"


@dataclass(frozen=True)
class SweepPaths:
    root: Path  # <storage>/sweeps/<name> (with a storage URI: its local copy in the cache)
    remote: str | None = None  # <uri>/sweeps/<name> with a storage URI

    @property
    def tune_target(self) -> str:
        """Where the Tune experiment is: a local folder or a URI."""
        return f"{self.remote}/{TUNE_DIR}" if self.remote else str(self.tune)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def meta(self) -> Path:
        return self.root / "sweep.json"

    @property
    def tune(self) -> Path:
        return self.root / TUNE_DIR

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


def default_storage(storage: str | None = None) -> Path:
    return Path(storage or env.storage_home() or "gitsweep-runs").resolve()


def storage_uri(storage: str | None = None) -> str | None:
    """`storage` (or GITSWEEP_HOME) when it is a URI, else None."""
    from sweeps.stores.remote import is_uri, normalize

    raw = storage or env.storage_home()
    return normalize(raw) if raw is not None and is_uri(raw) else None


def _remote_sweep(remote: str) -> SweepPaths | None:
    """The sweep stored at URI `remote` (<uri>/sweeps/<name>), its config and meta copied to the cache."""
    from sweeps.stores import remote as st

    remote = st.normalize(remote)
    if not st.exists(st.join(remote, "sweep.json")):
        return None
    meta = json.loads(st.read_text(st.join(remote, "sweep.json")))
    paths = SweepPaths(st.cache_root(meta["storage"]) / "sweeps" / meta["name"], remote)
    paths.root.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "sweep.json"):
        (paths.root / name).write_text(st.read_text(st.join(remote, name)))
    return paths


def find_sweep(name_or_path: str, storage: str | None = None) -> SweepPaths:
    """A sweep by name (under the storage) or by path (its folder or its Tune folder, or their URIs)."""
    from sweeps.stores.remote import is_uri, join

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
            remote = json.loads((cand / "sweep.json").read_text()).get("remote")
            return SweepPaths(cand.resolve(), remote)
    uri = storage_uri(storage)
    if uri is not None:
        found = _remote_sweep(join(uri, "sweeps", name_or_path))
        if found is None:
            raise DataError(name_or_path, f"no such sweep (looked for {join(uri, 'sweeps', name_or_path)}/sweep.json)")
        return found
    by_name = default_storage(storage) / "sweeps" / name_or_path
    if (by_name / "sweep.json").is_file():
        return SweepPaths(by_name)
    raise DataError(name_or_path, f"no such sweep (looked for {by_name}/sweep.json)")


def load_meta(paths: SweepPaths) -> dict[str, Any]:
    return dict(json.loads(paths.meta.read_text()))
