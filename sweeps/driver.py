"""Run and resume: resolved config -> Ray -> Tuner (fit or restore) -> MLflow reconcile -> summary.

The order of one sweep, each step in its own module: sweeps.config (resolve), sweeps.connect (Ray),
sweeps.search (Optuna + scheduler), sweeps.trials (what a trial trains), sweeps.stores (shared data
sets and generators), sweeps.tracking (index, results, MLflow), sweeps.report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from gitlib.configs import to_dict
from gitlib.errors import DataError, UserError
from sweeps import connect, search
from sweeps import results as rs
from sweeps.config import SweepConfig, load_config
from sweeps.paths import SweepPaths, default_storage, find_sweep, load_meta
from sweeps.tracking import mlflow_runs as mr
from sweeps.trials import trainable_for


def tracker_for(cfg: SweepConfig, parent_run_id: str | None) -> Any:
    from sweeps.tracking.tracker import SweepTracker

    artifact_root = mr.default_artifact_root(cfg.storage_path) if cfg.tracking_uri.startswith("sqlite:") else None
    return SweepTracker(cfg.tracking_uri, cfg.experiment, cfg.name, to_dict(cfg), artifact_root, parent_run_id)


def _run_config(cfg: SweepConfig, paths: SweepPaths, callback: Any) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return tune.RunConfig(
        name=paths.tune.name,
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


def sweep_paths(cfg: SweepConfig) -> SweepPaths:
    uri = cfg.storage_uri
    return SweepPaths(cfg.storage_path / "sweeps" / cfg.name, f"{uri}/sweeps/{cfg.name}" if uri else None)


def _exists(paths: SweepPaths) -> bool:
    if paths.remote is None:
        return paths.meta.exists()
    from sweeps.stores import remote

    return remote.exists(remote.join(paths.remote, "sweep.json"))


def free_name(cfg: SweepConfig) -> str:
    """The config's name, or name-2, name-3, ... when a sweep of that name is already stored."""
    name, i = cfg.name, 1
    while _exists(sweep_paths(replace(cfg, name=name))):
        i += 1
        name = f"{cfg.name}-{i}"
    return name


def _write_sweep(cfg: SweepConfig, paths: SweepPaths, tracker: Any) -> None:
    """config.yaml and sweep.json (with the MLflow parent run), locally and on a storage URI."""
    paths.root.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    paths.config.write_text(text)
    parent = tracker.open_parent(text)
    meta = {"name": cfg.name, "storage": cfg.storage_uri or str(cfg.storage_path), "tune_path": paths.tune_target,
            "tracking_uri": cfg.tracking_uri, "experiment": cfg.experiment, "parent_run_id": parent,
            "artifact_root": tracker.artifact_root}
    if paths.remote:
        from sweeps.stores import remote

        meta["remote"] = paths.remote
        remote.write_text(remote.join(paths.remote, "config.yaml"), text)
        remote.write_text(remote.join(paths.remote, "sweep.json"), json.dumps(meta, indent=1))
    paths.meta.write_text(json.dumps(meta, indent=1))


def _callback(cfg: SweepConfig, paths: SweepPaths, tracker: Any, verbose: bool) -> Any:
    from sweeps.search import configurations
    from sweeps.tracking.callback import SweepCallback, TrialIndex
    from sweeps.tracking.progress import Progress

    index = TrialIndex(paths)
    progress = Progress(configurations(cfg) * cfg.search.repeats, list(zip(cfg.search.metric, cfg.search.mode,
                        strict=True)), cfg.search.repeats, verbose)
    progress.done.update({r.trial_id: r.last for r in index.records.values() if r.status == "TERMINATED"})
    progress.failed.update(r.trial_id for r in index.records.values() if r.status == "ERROR")
    return SweepCallback(cfg, index, tracker, progress)


def start(cfg: SweepConfig, address: str | None = None, explicit_name: bool = True, verbose: bool = False) -> int:
    """A new sweep: check resources, save the config, open MLflow, fit. An existing sweep of the same
    name is refused when the name was given with --name, else the new one gets the next free name."""
    from ray import tune

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
    chatter = connect.quiet_logs()
    with connect.captured(chatter):
        started = connect.connect_ray(address)
    try:
        connect.check_resources(cfg)
        _stop_list(cfg)
        tracker = tracker_for(cfg, None)
        _write_sweep(cfg, paths, tracker)
        connect.log_to(chatter, paths.log)
        connect.tune_settings()
        callback = _callback(cfg, paths, tracker, verbose)
        tuner = tune.Tuner(trainable_for(cfg), tune_config=search.tune_config(cfg, paths.root),
                           run_config=_run_config(cfg, paths, callback))
        groups = f" x {cfg.search.repeats} repeats" if cfg.search.repeats > 1 else ""
        print(f"sweep {cfg.name}: {search.configurations(cfg)} configurations{groups}, {cfg.search.max_concurrent} "
              f"trials at a time, searching {', '.join(cfg.search.space) or 'nothing'}; results in "
              f"{paths.remote or paths.root}", flush=True)
        tuner.fit()
        return finish(cfg, paths, tracker, callback)
    finally:
        if started:
            connect.shutdown()


def resume(name_or_path: str, storage: str | None = None, restart_errored: bool = False,
           address: str | None = None, verbose: bool = False) -> int:
    """Tuner.restore on the saved experiment; the same parent run and trial runs continue."""
    from ray import tune

    paths = find_sweep(name_or_path, storage)
    cfg, _ = load_config(str(paths.config))
    meta = load_meta(paths)
    if not tune.Tuner.can_restore(paths.tune_target):
        raise DataError(paths.tune_target, "no restorable Tune experiment here (did the sweep start?)")
    chatter = connect.quiet_logs()
    with connect.captured(chatter):
        started = connect.connect_ray(address)
    connect.log_to(chatter, paths.log)  # after connecting: a failed connection writes nothing
    try:
        connect.check_resources(cfg)
        _stop_list(cfg)
        tracker = tracker_for(cfg, meta["parent_run_id"])
        tracker.open_parent(paths.config.read_text())
        connect.tune_settings()
        tuner = tune.Tuner.restore(paths.tune_target, trainable_for(cfg), resume_unfinished=True,
                                   resume_errored=False, restart_errored=restart_errored)
        callback = _callback(cfg, paths, tracker, verbose)
        _fresh_callback(tuner, callback)
        print(f"resuming sweep {cfg.name} from {paths.tune_target}", flush=True)
        tuner.fit()
        return finish(cfg, paths, tracker, callback)
    finally:
        if started:
            connect.shutdown()


def _stop_list(cfg: SweepConfig) -> None:
    """The actor through which trials learn they should stop early, made (and owned) by the driver."""
    from sweeps.trials import stops

    if stops.stoppable(cfg):
        stops.stop_list(cfg.name)


def _fresh_callback(tuner: Any, callback: Any) -> None:
    """A restored Tuner brings back the callback pickled when the sweep started (its trial index and
    progress display as they were then): put this session's in its place. Ray 2.60 keeps the run config
    on the local tuner; should that move, the restored callback still works (it re-reads the index)."""
    from sweeps.tracking.callback import SweepCallback

    run_config = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", lambda: None)()
    callbacks = getattr(run_config, "callbacks", None) or []
    for i, cb in enumerate(callbacks):
        if isinstance(cb, SweepCallback):
            callbacks[i] = callback


def tune_trials(paths: SweepPaths) -> list[Any]:
    """The trials of a sweep's Tune experiment, read from its saved state."""
    from ray.tune import ExperimentAnalysis

    if paths.remote is not None:
        from sweeps.stores import remote

        if not remote.exists(paths.tune_target):
            return []
        return list(ExperimentAnalysis(paths.tune_target).trials)
    if not paths.tune.is_dir():
        return []
    return list(ExperimentAnalysis(str(paths.tune)).trials)


def record(cfg: SweepConfig, paths: SweepPaths, tracker: Any, records: list[rs.TrialRecord]) -> int:
    """Bring MLflow in line with the trial index: held writes, groups, every trial's run, the parent's
    summary and state. Returns how many trials errored. Needs only MLflow (`gitsweep sync` runs it)."""
    from sweeps.tracking.callback import TrialIndex, group_update
    from sweeps.tracking.outbox import Outbox

    outbox = Outbox(tracker)
    for kind, args in Outbox.load(paths.root):  # what an earlier session could not write
        outbox.events.append((kind, args))
    outbox.drain(force=True)
    if outbox.events:
        raise OutageError(paths, outbox)
    (paths.root / "mlflow_outbox.json").unlink(missing_ok=True)
    if cfg.search.repeats > 1:  # groups whose repeats ended while no driver was watching
        index = TrialIndex(paths)
        for gid in sorted({r.group_id for r in records}):
            tracker.log_group(*group_update(cfg, index, next(r.config for r in records if r.group_id == gid)))
    errored = int(tracker.reconcile(records, paths.results))
    unfinished = [r for r in records if r.status not in ("TERMINATED", "ERROR")]
    tracker.log_summary(sweep_summary(cfg, records))
    tracker.close_parent(errored + len(unfinished))
    return errored


class OutageError(UserError):
    """The MLflow server was still away when the sweep ended: its writes are saved for `gitsweep sync`."""

    exit_code = 1

    def __init__(self, paths: SweepPaths, outbox: Any) -> None:
        saved = outbox.save(paths.root)
        super().__init__(f"the MLflow server is unreachable; the sweep's results are complete on disk and "
                         f"{len(outbox.events)} MLflow write(s) wait in {saved}: run `gitsweep sync "
                         f"{paths.root.name}` (or resume) when the server is back")


def finish(cfg: SweepConfig, paths: SweepPaths, tracker: Any, callback: Any = None) -> int:
    """Sync the index and MLflow to Tune's final states, print the summary; 0 only if every trial finished."""
    from sweeps.tracking.callback import TrialIndex
    from sweeps.tracking.outbox import is_outage

    records = TrialIndex(paths).sync(tune_trials(paths))
    prune_checkpoints(paths.tune_target)
    if callback is not None and not callback.outbox.drain(force=True):
        raise OutageError(paths, callback.outbox)  # what this session could not write goes to disk
    try:
        errored = record(cfg, paths, tracker, records)
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise OutageError(paths, getattr(callback, "outbox", None) or _empty_outbox(tracker)) from None
    unfinished = [r for r in records if r.status not in ("TERMINATED", "ERROR")]
    from sweeps.report.groups import collect_groups

    groups = collect_groups(cfg, records, paths.results) if cfg.search.repeats > 1 else []
    print_summary(cfg, records, tracker, groups)
    if groups:
        print_groups(cfg, groups)
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


def _empty_outbox(tracker: Any) -> Any:
    from sweeps.tracking.outbox import Outbox

    return Outbox(tracker)


def prune_checkpoints(tune_target: str) -> int:
    """Delete every trial's checkpoints but its newest (local folder or URI); returns how many went.

    Safe once fit() has returned: Tune's final experiment snapshot names each trial's newest checkpoint,
    which is what a later `resume --restart-errored` restores."""
    import pyarrow.fs as pafs

    from sweeps.stores import remote

    fs, root = remote.fs_path(tune_target) if remote.is_uri(tune_target) else (pafs.LocalFileSystem(), tune_target)
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


def sweep_summary(cfg: SweepConfig, records: list[rs.TrialRecord]) -> dict[str, float]:
    """The parent run's metrics: trials finished / failed / stopped early, and each objective's best value
    over the finished trials (over the group means when configurations run as groups)."""
    done = [r for r in records if r.status == "TERMINATED"]
    out = {"sweep/trials_finished": float(len(done)),
           "sweep/trials_failed": float(sum(r.status == "ERROR" for r in records)),
           "sweep/trials_stopped_early": float(sum(r.stopped_early for r in records))}
    values: list[dict[str, float]] = [r.last for r in done]
    if cfg.search.repeats > 1:
        from sweeps.group_stats import summarize

        by_group: dict[str, list[rs.TrialRecord]] = {}
        for r in done:
            by_group.setdefault(r.group_id, []).append(r)
        values = [{m: summarize(x.last.get(m, float("nan")) for x in g).mean for m in cfg.search.metric}
                  for g in by_group.values()]
    for metric, mode in zip(cfg.search.metric, cfg.search.mode, strict=True):
        found = [v[metric] for v in values if metric in v and v[metric] == v[metric]]
        if found:
            out[f"best/{metric}"] = max(found) if mode == "max" else min(found)
    return out


def best_record(cfg: SweepConfig, records: list[rs.TrialRecord]) -> rs.TrialRecord | None:
    """The best trial by the sweep's objectives in order (rs.best_rule)."""
    done = [r for r in records if r.status == "TERMINATED"]
    i = rs.best_of([r.last for r in done], list(zip(cfg.search.metric, cfg.search.mode, strict=True)))
    return None if i is None else done[i]


def print_summary(cfg: SweepConfig, records: list[rs.TrialRecord], tracker: Any, groups: Sequence[Any] = ()) -> None:
    """States, the best trial (with repeats: the best group), and where to look. `groups`: the sweep's
    groups (sweeps.report.groups.collect_groups) when it runs repeats."""
    states = Counter(r.status for r in records)
    print(f"\nsweep {cfg.name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    objectives = list(zip(cfg.search.metric, cfg.search.mode, strict=True))
    rule = rs.best_rule(objectives)
    if groups:
        print_best_group(groups, objectives, rule)
    elif (best := best_record(cfg, records)) is not None:
        r = best.last
        metrics = ", ".join(f"{m} {r[m]:.4f}" for m in cfg.search.metric if m in r)
        print(f"best trial {best.trial_id} ({rule}): {metrics} ({rs.describe(rs.sampled_values(best.config), True)})")
        if "ekld/head" in r:
            print(f"  eKLD head {r['ekld/head']:.4f} vs tail {r['ekld/tail']:.4f} "
                  f"(Spearman with class size {r.get('ekld/size_spearman', float('nan')):.2f})")
    print(f"MLflow: {mr.ui_command(tracker.uri, tracker.artifact_root)}")
    print(f"Optuna study: {mr.executable('gitsweep')} dashboard {cfg.name}"
          + ("" if Path(cfg.storage_path) == default_storage() else f" --storage {cfg.storage_uri or cfg.storage_path}"))
    print(f"experiment '{cfg.experiment}', parent run {tracker.parent_run_id}", flush=True)


def print_best_group(groups: Sequence[Any], objectives: Sequence[tuple[str, str]], rule: str) -> None:
    """The best configuration by its group means (what the search optimises), with their intervals."""
    i = rs.best_of([g.result.metrics for g in groups], objectives)
    if i is None:
        return
    g = groups[i]
    m = g.result.metrics
    shown = "; ".join(f"{k} {m[k]:.4f} [95% CI {m[f'{k}/ci95_low']:.4f}, {m[f'{k}/ci95_high']:.4f}]"
                      for k, _ in objectives if k in m)
    print(f"best group {g.result.group_id} ({rule}, over its {len(g.result.finals)} repeats): {shown} "
          f"({rs.describe(g.searched, True)})")


def print_groups(cfg: SweepConfig, groups: Sequence[Any]) -> None:
    """Group means with 95% CIs, and GIT against its baseline paired by repeat."""
    from sweeps.report import groups as gr

    print(f"groups ({cfg.search.repeats} repeats over {cfg.search.repeat_over}; mean [95% CI]):")
    metrics = list(dict.fromkeys([*cfg.search.metric, *gr.HEADLINE]))
    print(gr.format_groups(gr.group_table(cfg, groups), metrics))
    rows = gr.contrast_rows(gr.default_pairs(groups), list(cfg.search.space))
    if len(rows):
        print("GIT - baseline, paired by repeat:")
        print(gr.format_contrast(rows), flush=True)
