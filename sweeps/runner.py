"""Run and resume orchestration: config -> Ray -> Tuner (fit or restore) -> MLflow reconcile -> summary.

Layout of one sweep, `<storage>/sweeps/<name>/`:

    config.yaml     the resolved config (after --set), what `resume` runs again
    sweep.json      tracking URI, experiment, parent run id, Tune experiment path
    tune/           the Tune experiment (trial folders, checkpoints, searcher state)
    report/         written by `gitsweep report`

With a storage URI (`s3://...`, see sweeps.storage) that folder is `<uri>/sweeps/<name>/`: Tune writes
`tune/` there itself, config.yaml and sweep.json are uploaded, and a local copy of them lives in the
cache folder (`SweepPaths.root`), where `report/` is written too.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from gitlib.configs import flatten, to_dict
from gitlib.errors import ConfigError, DataError, UserError
from gitlib.tracking import mlflow_runs as mr
from sweeps.config import SweepConfig, TrackingConfig, load_config

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


def default_storage(storage: str | None = None) -> Path:
    return Path(storage or os.environ.get("GITSWEEP_HOME") or "gitsweep-runs").resolve()


def storage_uri(storage: str | None = None) -> str | None:
    """`storage` (or GITSWEEP_HOME) when it is a URI, else None."""
    from sweeps.storage import is_uri, normalize

    raw = storage or os.environ.get("GITSWEEP_HOME")
    return normalize(raw) if raw is not None and is_uri(raw) else None


def _remote_sweep(remote: str) -> SweepPaths | None:
    """The sweep stored at URI `remote` (<uri>/sweeps/<name>), its config and meta copied to the cache."""
    from sweeps import storage as st

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
    from sweeps.storage import is_uri, join

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
    return json.loads(paths.meta.read_text())


def resolve_config(config: str, overrides: list[str], name: str | None, storage: str | None,
                   tracking_uri: str | None) -> tuple[SweepConfig, list[str]]:
    """Load + override + CLI flags; storage made absolute so every worker sees the same path."""
    cfg, pinned = load_config(config, overrides)
    if name:
        cfg = replace(cfg, name=name)
    uri = storage_uri(storage or cfg.storage)
    cfg = replace(cfg, storage=uri or str(default_storage(storage or cfg.storage)))
    if tracking_uri:
        cfg = replace(cfg, tracking=TrackingConfig(uri=tracking_uri, experiment=cfg.tracking.experiment))
    if uri is not None:
        from sweeps import storage as st

        st.fs_path(uri)  # an unusable URI (unknown scheme, ...) is a ConfigError naming `storage`
        if not (cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
            raise ConfigError("tracking.uri", f"storage {uri} is a URI, and MLflow's default SQLite database "
                                              "cannot live there: pass --tracking-uri (an MLflow server, or "
                                              "sqlite:////local/path/mlflow.db), MLFLOW_TRACKING_URI or tracking.uri")
        # pinned, so trials and `resume` use the same one whatever their environment
        cfg = replace(cfg, tracking=TrackingConfig(uri=cfg.tracking_uri, experiment=cfg.tracking.experiment))
    cfg.validate()
    return cfg, pinned


# ---- Ray ------------------------------------------------------------------------------------------


def quiet_logs() -> None:
    """Progress comes from our callback's one line per result; silence the libraries' chatter."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("mlflow", "optuna", "alembic", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


def connect_ray(address: str | None) -> bool:
    """Connect to `address` / RAY_ADDRESS, else start a quiet local Ray on loopback. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet_logs()
    addr = address or os.environ.get("RAY_ADDRESS")
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if addr:
        ray.init(address=addr, **quiet)  # type: ignore[arg-type]
    else:
        # Ray runs workers at nice 15 by default; on a shared workstation the trials (the actual work)
        # would then lose the CPU to everything else. A cluster keeps its own setting.
        os.environ.setdefault("RAY_worker_niceness", "0")
        cpus = os.environ.get("GITSWEEP_NUM_CPUS")
        os.environ.setdefault("MPLBACKEND", "Agg")  # workers only write PNGs; no GUI backend to probe for
        system = {"preload_python_modules": list(WORKER_PRELOAD),
                  "idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_MS}
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 num_cpus=int(cpus) if cpus else None, _system_config=system, **quiet)  # type: ignore[arg-type]
        _trials_on_prestarted_workers()
    return True


# What a trial imports, imported by the workers Ray prestarts with a local cluster while the driver sets
# the sweep up (torch._dynamo: the first torch.optim optimizer imports it lazily, 1.4 s on 2 cores; ray.tune:
# unpickling the trial actor's class imports it, 1.2 s).
WORKER_PRELOAD = ("torch", "torch._dynamo", "ray.tune", "pyarrow.parquet", "sweeps.trainables", "gitlib.data.store",
                  "gitlib.models.munit", "matplotlib.pyplot")  # pyplot: the final eKLD figure (MPLBACKEND=Agg)

# Ray keeps at most as many idle workers as the node has CPUs *available*, and kills the rest once idle
# for idle_worker_killing_time_threshold_ms (default 1 s). Tune reserves a trial's CPUs in a placement
# group before it creates the trial's actor, so with every CPU reserved the prestarted workers, idle
# since their preload, could be killed in between and the trials then waited ~4 s for fresh ones (seen
# in about one sweep start in six). A minute covers that gap; unused workers still go after it.
IDLE_WORKER_KEEP_MS = 60_000


def _trials_on_prestarted_workers() -> None:
    """Let Tune's trial actors start on the local cluster's prestarted workers.

    Tune gives every trial actor runtime_env={"env_vars": {"PL_DISABLE_FORK": "1", ...}}; any non-empty
    runtime env makes Ray start a fresh worker for it (about 3 s of process start and imports per trial
    on 2 cores) instead of an idle prestarted one. Local workers inherit the driver's environment, so
    the default variable is set here and dropped from Tune's defaults (variables Tune propagates, e.g.
    AWS keys, still go through the runtime env). Ray 2.60 internals: if they move, trials simply start
    fresh workers as before."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):
        for key, value in list(defaults.items()):
            os.environ.setdefault(key, value)
            del defaults[key]


def check_resources(cfg: SweepConfig) -> None:
    """Refuse a per-trial request no node of the cluster can ever satisfy (exit 2, before any trial)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    max_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    if cfg.resources.gpu > 0 and max_gpu <= 0:
        raise ConfigError("resources.gpu", f"{cfg.resources.gpu:g} GPU per trial requested, but the Ray cluster has "
                                           "no GPU (set resources.gpu=0 or connect to a GPU cluster with --address)")
    if cfg.resources.gpu > max_gpu:
        raise ConfigError("resources.gpu", f"{cfg.resources.gpu:g} GPUs per trial, but no node has more than {max_gpu:g}")
    if cfg.resources.cpu > max_cpu:
        raise ConfigError("resources.cpu", f"{cfg.resources.cpu:g} CPUs per trial, but no node has more than {max_cpu:g}")


# ---- run / resume ---------------------------------------------------------------------------------


def _tracker(cfg: SweepConfig, parent_run_id: str | None) -> Any:
    from sweeps.tracking import SweepTracker

    base = to_dict(cfg)
    artifact_root = mr.default_artifact_root(cfg.storage_path) if cfg.tracking_uri.startswith("sqlite:") else None
    return SweepTracker(cfg.tracking_uri, cfg.experiment, cfg.name, base, artifact_root, parent_run_id)


def _run_config(cfg: SweepConfig, paths: SweepPaths, callback: Any) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return tune.RunConfig(
        name=TUNE_DIR,
        storage_path=paths.remote or str(paths.root),
        callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        # Keep every checkpoint while the sweep runs: a resume restores what Tune's experiment snapshot
        # names, and that snapshot (written every 10 s or more) can name one many epochs old; with
        # num_to_keep=2 a killed sweep's trial could point at a deleted checkpoint and fail to resume.
        # finish() prunes each trial to its newest once fit() has returned.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        verbose=0,
    )


def _no_tensorboard_files() -> None:
    """Tune then writes its own per-trial result.json / progress.csv (the loggers _run_config names, kept
    by a restored experiment) but not TensorBoard event files: MLflow holds the same metrics, and
    writing them cost the driver ~4 ms of CPU per result, which on a small machine the trials pay for."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


def sweep_paths(cfg: SweepConfig) -> SweepPaths:
    uri = cfg.storage_uri
    return SweepPaths(cfg.storage_path / "sweeps" / cfg.name, f"{uri}/sweeps/{cfg.name}" if uri else None)


def _exists(paths: SweepPaths) -> bool:
    if paths.remote is None:
        return paths.meta.exists()
    from sweeps import storage as st

    return st.exists(st.join(paths.remote, "sweep.json"))


def free_name(cfg: SweepConfig) -> str:
    """The config's name, or name-2, name-3, ... when a sweep of that name is already stored."""
    name, i = cfg.name, 1
    while _exists(sweep_paths(replace(cfg, name=name))):
        i += 1
        name = f"{cfg.name}-{i}"
    return name


def start(cfg: SweepConfig, address: str | None = None, explicit_name: bool = True) -> int:
    """A new sweep: check resources, save the config, open MLflow, fit. An existing sweep of the same
    name is refused when the name was given with --name, else the new one gets the next free name."""
    from ray import tune

    from sweeps import search, trainables
    from sweeps.tracking import MlflowCallback

    search.check(cfg)
    paths = sweep_paths(cfg)
    if _exists(paths):
        if explicit_name:
            raise UserError(f"sweep '{cfg.name}' already exists in {paths.remote or paths.root}: "
                            f"`gitsweep resume {cfg.name}` continues it, another --name starts a new one")
        name = free_name(cfg)
        print(f"a sweep named {cfg.name} exists already; this one is {name}", flush=True)
        cfg = replace(cfg, name=name)
        paths = sweep_paths(cfg)
    started = connect_ray(address)
    try:
        check_resources(cfg)
        paths.root.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        paths.config.write_text(text)
        tracker = _tracker(cfg, None)
        parent = tracker.open_parent(text)
        meta = {"name": cfg.name, "storage": cfg.storage_uri or str(cfg.storage_path), "tune_path": paths.tune_target,
                "tracking_uri": cfg.tracking_uri, "experiment": cfg.experiment, "parent_run_id": parent,
                "artifact_root": tracker.artifact_root}
        if paths.remote:
            from sweeps import storage as st

            meta["remote"] = paths.remote
            st.write_text(st.join(paths.remote, "config.yaml"), text)
            st.write_text(st.join(paths.remote, "sweep.json"), json.dumps(meta, indent=1))
        paths.meta.write_text(json.dumps(meta, indent=1))
        search.disable_strict_metric_check()
        _no_tensorboard_files()
        tuner = tune.Tuner(
            trainables.trainable_for(cfg),
            tune_config=search.tune_config(cfg),
            run_config=_run_config(cfg, paths, MlflowCallback(tracker, cfg.classifier.epochs)),
        )
        print(f"sweep {cfg.name}: {cfg.search.num_samples} trials, {cfg.search.max_concurrent} at a time, "
              f"searching {', '.join(cfg.search.space)}; results in {paths.remote or paths.root}", flush=True)
        tuner.fit()
        return finish(cfg, paths, tracker)
    finally:
        if started:
            _shutdown()


def resume(name_or_path: str, storage: str | None = None, restart_errored: bool = False,
           address: str | None = None) -> int:
    """Tuner.restore on the saved experiment; the same parent run and trial runs continue."""
    from ray import tune

    from sweeps import search, trainables

    paths = find_sweep(name_or_path, storage)
    cfg, _ = load_config(str(paths.config))
    meta = load_meta(paths)
    if not tune.Tuner.can_restore(paths.tune_target):
        raise DataError(paths.tune_target, "no restorable Tune experiment here (did the sweep start?)")
    started = connect_ray(address)
    try:
        check_resources(cfg)
        tracker = _tracker(cfg, meta["parent_run_id"])
        tracker.open_parent(paths.config.read_text())
        search.disable_strict_metric_check()
        _no_tensorboard_files()
        tuner = tune.Tuner.restore(paths.tune_target, trainables.trainable_for(cfg), resume_unfinished=True,
                                   resume_errored=False, restart_errored=restart_errored)
        print(f"resuming sweep {cfg.name} from {paths.tune_target}", flush=True)
        tuner.fit()
        return finish(cfg, paths, tracker)
    finally:
        if started:
            _shutdown()


def _shutdown() -> None:
    import ray

    ray.shutdown()


def load_trials(paths: SweepPaths) -> list[Any]:
    """The trials of a sweep's Tune experiment, read from its saved state (no Ray needed)."""
    from ray.tune import ExperimentAnalysis

    if paths.remote is not None:
        from sweeps import storage as st

        if not st.exists(paths.tune_target):
            return []
        return list(ExperimentAnalysis(paths.tune_target).trials)
    if not paths.tune.is_dir():
        return []
    return list(ExperimentAnalysis(str(paths.tune)).trials)


def best_trial(cfg: SweepConfig, trials: list[Any]) -> Any | None:
    metric, mode = cfg.search.metric[0], cfg.search.mode[0]
    done = [t for t in trials if isinstance((t.last_result or {}).get(metric), (int, float))
            and (t.last_result or {}).get(metric) == (t.last_result or {}).get(metric)]
    if not done:
        return None
    pick = max if mode == "max" else min
    return pick(done, key=lambda t: t.last_result[metric])


def finish(cfg: SweepConfig, paths: SweepPaths, tracker: Any) -> int:
    """Close MLflow runs to match Tune's states, print the summary; 0 only if every trial finished."""
    trials = load_trials(paths)
    errored = tracker.reconcile(trials)
    unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
    tracker.close_parent(errored + len(unfinished))
    prune_checkpoints(paths.tune_target)
    print_summary(cfg, paths, trials, tracker)
    if errored or unfinished:
        if cfg.storage_uri is not None:
            extra = f" --storage {cfg.storage_uri}"
        else:
            extra = "" if Path(cfg.storage_path) == default_storage() else f" --storage {cfg.storage_path}"
        flag = " --restart-errored" if errored else ""  # unfinished trials need no flag to continue
        print(f"{errored} trial(s) errored, {len(unfinished)} unfinished. To rerun them:\n"
              f"  gitsweep resume {cfg.name}{flag}{extra}", flush=True)
        return 1
    return 0


def prune_checkpoints(tune_target: str) -> int:
    """Delete every trial's checkpoints but its newest (local folder or URI); returns how many went.

    Safe once fit() has returned: Tune's final experiment snapshot names each trial's newest checkpoint,
    which is what a later `resume --restart-errored` restores."""
    import pyarrow.fs as pafs

    from sweeps import storage as st

    fs, root = st.fs_path(tune_target) if st.is_uri(tune_target) else (pafs.LocalFileSystem(), tune_target)
    removed = 0
    for trial in fs.get_file_info(pafs.FileSelector(root)):
        if trial.type != pafs.FileType.Directory or not trial.base_name.startswith("trial_"):
            continue
        found = fs.get_file_info(pafs.FileSelector(trial.path))
        checkpoints = sorted(i.path for i in found
                             if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
        for path in checkpoints[:-1]:  # checkpoint_NNNNNN: the names sort by index
            fs.delete_dir(path)
            removed += 1
    return removed


def print_summary(cfg: SweepConfig, paths: SweepPaths, trials: list[Any], tracker: Any) -> None:
    from collections import Counter

    states = Counter(t.status for t in trials)
    print(f"\nsweep {cfg.name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    best = best_trial(cfg, trials)
    if best is not None:
        r = best.last_result
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.config.items())
        metrics = ", ".join(f"{m} {r[m]:.4f}" for m in cfg.search.metric if m in r)
        print(f"best trial {best.trial_id}: {metrics} ({params})")
        if "ekld/head" in r:
            print(f"  eKLD head {r['ekld/head']:.4f} vs tail {r['ekld/tail']:.4f} "
                  f"(Spearman with class size {r.get('ekld/size_spearman', float('nan')):.2f})")
    print(f"MLflow: {mr.ui_command(tracker.uri, tracker.artifact_root)}")
    print(f"experiment '{cfg.experiment}', parent run {tracker.parent_run_id}", flush=True)


def searched_values(trial: Any) -> dict[str, Any]:
    return dict(flatten(trial.config)) if trial.config else {}
