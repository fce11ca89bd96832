"""MLflow runs of a sweep: the parent run, nested classifier / generator runs, per-class artifacts.

Every function takes the tracking URI or a client explicitly and imports mlflow lazily. In a sweep all
writes come from one process (the Ray driver), and a run is found again by its tags after a resume; several
sweeps on one home share its SQLite store (WAL: one writer at a time, readers never wait).
"""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow import MlflowClient
    from mlflow.entities import Metric

SWEEP_TAG = "gitsweep.sweep"
ROLE_TAG = "gitsweep.role"
TRIAL_TAG = "gitsweep.trial_id"  # the Tune trial that runs (or last ran) a trial run
SLOT_TAG = "gitsweep.slot"  # "<group>/<repeat>": what a trial run is for the search, kept across resumes
GROUP_TAG = "gitsweep.group_id"  # a group run's id
IN_GROUP_TAG = "gitsweep.in_group"  # on trial runs only: the group a repeat belongs to ("Group by" pools them)
PARAM_TAG = "gitsweep.param."  # on trial runs only: the searched values, as tags easy to filter and group by
RACE_TAG = "gitsweep.race"  # on group runs of a raced sweep: running | dropped | survived
RACE_VS_TAG = "gitsweep.race_vs"  # the incumbent's group id at the race's decision
GENERATOR_TAG = "gitsweep.generator"
ERROR_TAG = "gitsweep.error"
DEVICE_TAG = "gitsweep.device"  # where the trial ran: "cuda:0 <GPU name>" or "cpu, N threads"
FINAL_TAG = "gitsweep.final_logged"  # set once final metrics + artifacts are in: makes logging idempotent
BEST_GROUP_TAG = "gitsweep.best_group"  # on the parent: the best group's id (sweeps.report.answer)
CONTRAST_TAG = "gitsweep.contrast"  # on the parent: the groups its contrast/* metrics compare, "A - B"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
STOPPED_TAG = "gitsweep.stopped_early"  # "true" on a trial ASHA or the time budget stopped (it was evaluated)
STOPPED_EPOCH_TAG = "gitsweep.stopped_epoch"  # a run's description in the MLflow UI
PACKAGES = ("torch", "ray", "optuna", "mlflow", "numpy", "pyarrow", "gitsweep")


def client(uri: str) -> MlflowClient:
    """The one place gitsweep makes an MLflow client: a SQLite store is made complete first, once, under a
    lock (sweeps.tracking.sqlite_store), never migrated by two processes at once."""
    from mlflow import MlflowClient

    from sweeps.tracking.sqlite_store import ensure

    ensure(uri)
    return MlflowClient(tracking_uri=uri)


def default_artifact_root(storage: Path) -> str:
    return (storage / "mlartifacts").as_uri()


def ensure_experiment(c: MlflowClient, name: str, artifact_root: str | None) -> str:
    """Experiment id of `name`, created with its artifacts under `artifact_root` (SQLite default)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    try:
        return str(c.create_experiment(name, artifact_location=location))
    except Exception:  # created meanwhile by another driver
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _where(tags: Mapping[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{_quote(str(v))}'" for k, v in tags.items())


def search_all(c: MlflowClient, experiment_id: str, tags: Mapping[str, str] | None, where: str | None = None,
               ) -> list[Any]:
    """Every run of the experiment carrying all `tags` (or matching `where`), page by page."""
    found: list[Any] = []
    token = None
    while True:
        page = c.search_runs([experiment_id], filter_string=where or _where(tags or {}), max_results=1000,
                             page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def find_run(c: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> str | None:
    """Id of the oldest run in `experiment_id` carrying all `tags`, or None."""
    runs = c.search_runs([experiment_id], filter_string=_where(tags), order_by=["attributes.start_time ASC"],
                         max_results=5)
    return runs[0].info.run_id if runs else None


def get_or_create_run(
    c: MlflowClient, experiment_id: str, tags: Mapping[str, str], run_name: str | None = None,
    parent_run_id: str | None = None, extra_tags: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """(run id, created): the run with `tags` again (reopened as RUNNING), else a new one."""
    run_id = find_run(c, experiment_id, tags)
    if run_id is not None:
        c.update_run(run_id, status="RUNNING")
        return run_id, False
    all_tags = {**tags, **(extra_tags or {})}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    run = c.create_run(experiment_id, tags=all_tags, run_name=run_name)
    return run.info.run_id, True


@functools.lru_cache(maxsize=4)
def provenance_tags(repo_dir: Path | None = None) -> dict[str, str]:
    """Git commit (and whether the tree was dirty) plus package versions: what produced a result.
    Cached: every run of a sweep gets the same answer, and `git status` costs a subprocess."""
    tags: dict[str, str] = {}
    cwd = str(repo_dir or Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        tags["mlflow.source.git.commit"] = commit
        tags["gitsweep.git_dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    for pkg in PACKAGES:
        try:
            tags[f"gitsweep.version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return tags


def log_params(c: MlflowClient, run_id: str, params: Mapping[str, Any], fresh: bool = False) -> None:
    """Flat params in batches of 100 (MLflow's limit); only those the run lacks (`fresh`: a run just
    created has none, and needs no read first)."""
    from mlflow.entities import Param

    existing = {} if fresh else c.get_run(run_id).data.params
    items = [Param(k, _param_value(v)) for k, v in sorted(params.items()) if k not in existing]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100])


def set_tags(c: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    """Tags in one call; setting a tag again to its value is a no-op."""
    from mlflow.entities import RunTag

    if tags:
        c.log_batch(run_id, tags=[RunTag(k, v) for k, v in sorted(tags.items())])


def _param_value(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
    return redact_uri(text)[:6000]


_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s]+@")


def redact_uri(text: str) -> str:
    """'postgresql://user:pw@host/db' -> 'postgresql://***@host/db': credentials never reach logs or params."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite-or-NaN numbers of a result dict (bools and strings dropped)."""
    out: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[k] = float(v)
    return out


def metric_points(values: Mapping[str, Any], step: int | None = None) -> list[Metric]:
    """MLflow metric points of a result dict, stamped now (so points written later keep their time)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, tidy(v), now, int(step or 0)) for k, v in numeric_metrics(values).items()]


def tidy(value: float) -> float:
    """7 significant digits: 0.9075000000000001 reads 0.9075 in the UI (float noise, not information)."""
    return float(f"{value:.7g}") if math.isfinite(value) else float("nan")


def log_points(c: MlflowClient, run_id: str, points: Sequence[Metric]) -> None:
    for i in range(0, len(points), 1000):  # MLflow's limit per log_batch
        c.log_batch(run_id, metrics=list(points[i : i + 1000]))


def log_metrics(c: MlflowClient, run_id: str, values: Mapping[str, Any], step: int | None = None) -> None:
    log_points(c, run_id, metric_points(values, step))


def log_series(c: MlflowClient, run_id: str, series: Mapping[str, Mapping[int, float]]) -> None:
    """Metric series: name -> {step: value}, one point per step."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = [Metric(name, tidy(v), now, int(step)) for name, values in series.items() for step, v in sorted(values.items())]
    log_points(c, run_id, points)


def log_per_class(c: MlflowClient, run_id: str, table: pa.Table) -> None:
    """per_class.parquet and the same table as an MLflow table (per_class.json)."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "per_class.parquet"
        pq.write_table(table, path)
        c.log_artifact(run_id, str(path))
    c.log_table(run_id, data=table.to_pandas(), artifact_file="per_class.json")


def log_group_table(c: MlflowClient, run_id: str, table: Any, png: Path | None = None) -> None:
    """A group's per-class summary (pandas) as per_class.parquet and its band figure (both replaced at
    every update)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "per_class.parquet"
        table.to_parquet(path, index=False)
        c.log_artifact(run_id, str(path))
    if png is not None and png.is_file():
        c.log_artifact(run_id, str(png))


def log_figure(c: MlflowClient, run_id: str, png: Path, key: str) -> None:
    """A PNG as the artifact `<name>.png` and as an MLflow image under `key`, which the image grid chart shows."""
    from PIL import Image

    c.log_artifact(run_id, str(png))
    with Image.open(png) as im:
        c.log_image(run_id, im.convert("RGB"), key=key, step=0)


def log_config_artifact(c: MlflowClient, run_id: str, config_yaml: str, name: str = "config.yaml") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(config_yaml)
        c.log_artifact(run_id, str(path))


def finish_run(c: MlflowClient, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
    """Terminate a run; a failed one carries its reason as the `gitsweep.error` tag. A run already in
    `status` keeps its end time (the sweep's final reconcile must not move every trial's end to its own)."""
    if error:
        c.set_tag(run_id, ERROR_TAG, error[:5000])
    if c.get_run(run_id).info.status != status:
        c.set_terminated(run_id, status=status)


def executable(name: str) -> str:
    """`name` as installed next to this Python (`.venv/bin/mlflow` from the project root), so the printed
    command works as printed even where the virtualenv is not on PATH."""
    import os
    import sys

    path = Path(sys.executable).parent / name
    if not path.exists():
        return name
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:  # another drive
        return str(path)


def ui_command(uri: str, artifact_root: str | None) -> str:
    """The `mlflow ui` command that shows this store."""
    uri = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (MLflow tracking server)"
    cmd = f"{executable('mlflow')} ui --backend-store-uri {uri}"
    if artifact_root and uri.startswith("sqlite:"):
        cmd += f" --default-artifact-root {artifact_root}"
    return cmd


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


def ui_address(uri: str) -> str:
    """The MLflow UI's address for a tracking URI: the server itself, or a local `mlflow ui`."""
    uri = redact_uri(uri)
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI


ML_VIEW = "workflowType=machine_learning"  # MLflow 3 opens experiments and runs in its GenAI view without it


def runs_table_path(experiment_id: str) -> str:
    """The experiment's runs table, in MLflow's "Model training" view, as a path of the UI's address."""
    return f"#/experiments/{experiment_id}/runs?{ML_VIEW}"


def run_path(experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page in the MLflow UI, or one of its artifacts (open in its Artifacts tab)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "") + f"?{ML_VIEW}"
