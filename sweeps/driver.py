"""Run and resume: resolved config -> Ray -> Tuner (fit or restore) -> MLflow reconcile -> report -> summary.

The order of one sweep, each step in its own module: sweeps.config (resolve), sweeps.connect (Ray),
sweeps.search (Optuna, racing, scheduler), sweeps.trials (what a trial trains), sweeps.stores (shared
data sets and generators), sweeps.tracking (index, results, MLflow), sweeps.report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from gitlib.errors import UserError
from sweeps import connect, env, paths, search
from sweeps import results as rs
from sweeps.config import SweepConfig, load_config
from sweeps.kinds import kind_of, steps_of
from sweeps.paths import SweepPaths, find_sweep, load_meta, sweep_paths
from sweeps.space import configurations
from sweeps.tracking import mlflow_runs as mr
from sweeps.trials.entry import trainable_for


def tracker_for(cfg: SweepConfig, parent_run_id: str | None, uri: str | None = None) -> Any:
    """The sweep's MLflow tracker; `uri`: where the sweep logged (sweep.json's), else the config's store."""
    from sweeps.tracking.tracker import SweepTracker

    uri = uri or paths.tracking_uri(cfg.tracking.uri, cfg.storage)
    artifact_root = mr.default_artifact_root(paths.local_root(cfg.storage)) if uri.startswith("sqlite:") else None
    study = (paths.study_storage(cfg.search.storage, sweep_paths(cfg.name, cfg.storage).root), cfg.name)
    return SweepTracker(uri, cfg.experiment, cfg.name, cfg, artifact_root, parent_run_id, study)


def _run_config(cfg: SweepConfig, where: SweepPaths, callback: Any) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    storage, name = where.tune_target.rsplit("/", 1)  # Tune writes the experiment to <storage_path>/<name>
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        # Keep every checkpoint while the sweep runs: a resume restores what Tune's experiment snapshot
        # names, and that snapshot (written every 10 s or more) can name one many epochs old; with
        # num_to_keep=2 a killed sweep's trial could point at a deleted checkpoint and fail to resume.
        # finish() prunes each trial to its newest once fit() has returned.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        verbose=0,
    )


CLAIM = ".driver.lock"  # in a sweep's folder: held by the driver that starts the sweep, while it runs


def claim_name(cfg: SweepConfig, explicit_name: bool) -> tuple[SweepConfig, SweepPaths, Any]:
    """The sweep's name, taken for this driver: the config's, or name-2, name-3, ... (refused with --name)
    when a sweep of that name is stored or another driver is starting one (several `gitsweep run` of one
    config on one home at once, a job array). The claim is a file lock in the sweep's folder, held until
    this process ends (the kernel drops it if the process dies); returns (config, paths, lock)."""
    from filelock import FileLock, Timeout

    i = 1
    while True:
        name = cfg.name if i == 1 else f"{cfg.name}-{i}"
        where = sweep_paths(name, cfg.storage)
        if not where.exists():
            where.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(where.root / CLAIM))
            try:
                lock.acquire(timeout=0)
            except Timeout:  # another driver is starting a sweep of this name right now
                pass
            else:
                if not where.exists():  # checked again under the claim: one that just finished has its sweep.json
                    if i > 1:
                        print(f"a sweep named {cfg.name} exists already; this one is {name}", flush=True)
                    return replace(cfg, name=name), where, lock
                lock.release()
        if explicit_name:
            raise UserError(f"sweep '{name}' already exists in {where.remote or where.root} (or another gitsweep "
                            f"is starting it): `gitsweep resume {name}` continues it, another --name starts a new one")
        i += 1


def _write_sweep(cfg: SweepConfig, where: SweepPaths, tracker: Any) -> None:
    """config.yaml and sweep.json (with the MLflow parent run), locally and on a storage URI."""
    where.root.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.as_dict(), sort_keys=False)
    where.config.write_text(text)
    parent = tracker.open_parent(text)
    meta = {"name": cfg.name, "storage": paths.absolute(cfg.storage), "tune_name": where.tune_name,
            "tune_path": where.tune_target,
            "tracking_uri": tracker.uri, "experiment": cfg.experiment, "parent_run_id": parent,
            "artifact_root": tracker.artifact_root}
    if where.remote:
        meta["remote"] = where.remote
        paths.write_text(paths.join(where.remote, "config.yaml"), text)
        paths.write_text(paths.join(where.remote, "sweep.json"), json.dumps(meta, indent=1))
    where.meta.write_text(json.dumps(meta, indent=1))


def _callback(cfg: SweepConfig, where: SweepPaths, tracker: Any, verbose: bool) -> Any:
    from sweeps.tracking.callback import SweepCallback, TrialIndex
    from sweeps.tracking.progress import Progress

    kind = kind_of(cfg.trial)
    index = TrialIndex(where, kind.result_files)
    objectives: list[tuple[str, str]] = list(zip(cfg.search.metric, cfg.search.mode, strict=True))
    store = None if paths.storage_uri(cfg.storage) else paths.local_root(cfg.storage)  # generators in training
    progress = Progress(configurations(cfg.search) * cfg.search.repeats, objectives, cfg.trial, cfg.search.repeats,
                        verbose, steps_of(kind, cfg), cfg.search.racing is not None, store)
    progress.done.update({r.trial_id: r.last for r in index.records.values()
                          if r.status == "TERMINATED" and not r.stopped_by_race})
    progress.stopped_by_race.update(r.trial_id for r in index.records.values() if r.stopped_by_race)
    progress.failed.update(r.trial_id for r in index.records.values() if r.status == "ERROR")
    return SweepCallback(cfg, index, tracker, progress)


def start(cfg: SweepConfig, address: str | None = None, explicit_name: bool = True, verbose: bool = False) -> int:
    """A new sweep: check resources, save the config, open MLflow, fit. An existing sweep of the same
    name is refused when the name was given with --name, else the new one gets the next free name."""
    from ray import tune

    search.check(cfg)
    if explicit_name and sweep_paths(cfg.name, cfg.storage).exists():  # before Ray starts: nothing to wait for
        claim_name(cfg, explicit_name)
    chatter = connect.quiet_logs()
    with connect.captured(chatter):
        started = connect.connect_ray(address, kind_of(cfg.trial).preload)
    try:
        connect.check_resources(cfg)
        _check_nodes(cfg, address)
        cfg, where, _claim = claim_name(cfg, explicit_name)  # held until this returns
        _stop_list(cfg)
        tracker = tracker_for(cfg, None)
        _write_sweep(cfg, where, tracker)
        connect.log_to(chatter, where.log)
        connect.tune_settings()
        callback = _callback(cfg, where, tracker, verbose)
        tuner = tune.Tuner(trainable_for(cfg), tune_config=search.tune_config(cfg, where.root),
                           run_config=_run_config(cfg, where, callback))
        print(_opening(cfg, where), flush=True)
        tuner.fit()
        return finish(cfg, where, tracker, callback)
    finally:
        if started:
            connect.shutdown()


def _opening(cfg: SweepConfig, where: SweepPaths) -> str:
    s = cfg.search
    groups = f" x up to {s.repeats} repeats" if s.repeats > 1 else ""
    raced = f" (raced: dropped once worse than the best at alpha {s.racing.alpha:g})" if s.racing else ""
    return (f"sweep {cfg.name}: {configurations(s)} configurations{groups}{raced}, {s.max_concurrent} trials at a "
            f"time, searching {', '.join(s.space) or 'nothing'}; results in {where.remote or where.root}")


def resume(name_or_path: str, storage: str | None = None, restart_errored: bool = False,
           address: str | None = None, verbose: bool = False) -> int:
    """Tuner.restore on the saved experiment; the same parent run and trial runs continue."""
    from ray import tune

    where = find_sweep(name_or_path, storage)
    cfg, _ = load_config(str(where.config))
    meta = load_meta(where)
    chatter = connect.quiet_logs()
    with connect.captured(chatter):
        started = connect.connect_ray(address, kind_of(cfg.trial).preload)
    connect.log_to(chatter, where.log)  # after connecting: a failed connection writes nothing
    try:
        connect.check_resources(cfg)
        _check_nodes(cfg, address)
        _stop_list(cfg)
        tracker = tracker_for(cfg, meta["parent_run_id"])
        connect.tune_settings()
        callback = _callback(cfg, where, tracker, verbose)
        # Through the outbox like every other write: a tracking server that is away when the resume starts
        # holds it (and the trials go on) instead of ending the resume.
        callback.outbox.send("open_parent", where.config.read_text())
        if _has_snapshot(where.tune_target):
            tuner = tune.Tuner.restore(where.tune_target, trainable_for(cfg), resume_unfinished=True,
                                       resume_errored=False, restart_errored=restart_errored)
            _fresh_callback(tuner, callback)
        else:  # killed before Tune's first snapshot: the search's own log says what ran, Tune starts afresh
            tuner = tune.Tuner(trainable_for(cfg), tune_config=search.tune_config(cfg, where.root),
                               run_config=_run_config(cfg, where, callback))
        print(f"resuming sweep {cfg.name} from {where.tune_target}", flush=True)
        tuner.fit()
        return finish(cfg, where, tracker, callback)
    finally:
        if started:
            connect.shutdown()


def _check_nodes(cfg: SweepConfig, address: str | None) -> None:
    """On a cluster the trials run on other machines: the data pre-flight again, on each of them."""
    if not (address or env.ray_address()):  # a local Ray: this machine is its one node, checked already
        return
    from sweeps.preflight import preflight_on_nodes

    for note in preflight_on_nodes(cfg):
        print(note, flush=True)


def _has_snapshot(tune_target: str) -> bool:
    """Whether Tune wrote an experiment snapshot there (at its first step): without one, Tuner.restore
    would run a one-trial experiment, since the sample count lives in the snapshot."""
    import pyarrow.fs as pafs

    fs, root = paths.fs_path(tune_target) if paths.is_uri(tune_target) else (pafs.LocalFileSystem(), tune_target)
    found = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = {i.base_name for i in found}
    return "tuner.pkl" in names and any(n.startswith("experiment_state-") for n in names)


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


def tune_trials(where: SweepPaths) -> list[Any]:
    """The trials of a sweep's Tune experiment, read from its saved state."""
    from ray.tune import ExperimentAnalysis

    if where.remote is not None:
        if not paths.exists(where.tune_target):
            return []
        return list(ExperimentAnalysis(where.tune_target).trials)
    if not where.tune.is_dir():
        return []
    return list(ExperimentAnalysis(str(where.tune)).trials)


def record(cfg: SweepConfig, where: SweepPaths, tracker: Any, records: list[rs.TrialRecord],
           report: Any = None) -> int:
    """Bring MLflow in line with the trial index: held writes, groups and the race's decisions, every
    trial's run, the parent's summary, the answer and report (`report`, sweeps.report.write_report's) and
    state. Returns how many trials errored. Needs only MLflow (`gitsweep sync` runs it)."""
    from sweeps.search_state import read_decisions
    from sweeps.summary import state_answer
    from sweeps.tracking.callback import TrialIndex, group_update
    from sweeps.tracking.outbox import Outbox

    outbox = Outbox(tracker)
    for kind, args in Outbox.load(where.root):  # what an earlier session could not write
        outbox.events.append((kind, args))
    outbox.drain(force=True)
    if outbox.events:
        raise OutageError(where, outbox)
    (where.root / "mlflow_outbox.json").unlink(missing_ok=True)
    decisions = read_decisions(where.root) if cfg.search.racing is not None else {}
    if cfg.search.repeats > 1:  # groups whose repeats ended while no driver was watching
        index = TrialIndex(where, kind_of(cfg.trial).result_files)
        for gid in sorted({r.group_id for r in records}):
            if tracker.group_ended(gid):  # its last update, and any race decision before it, are in MLflow
                continue
            d = decisions.get(gid)
            args = group_update(cfg, index.of_group(gid), where.results, d is not None and d.decision == "dropped")
            if d is not None:
                tracker.log_race(args[0], d)
            tracker.log_group(*args)
    errored = int(tracker.reconcile(records, where.results))
    unfinished = [r for r in records if r.status not in ("TERMINATED", "ERROR")]
    tracker.log_summary(sweep_summary(cfg, records, where.results))
    if report is not None:
        state_answer(cfg, tracker, report)
    tracker.close_parent(errored + len(unfinished))
    return errored


class OutageError(UserError):
    """The MLflow server was still away when the sweep ended: its writes are saved for `gitsweep sync`."""

    exit_code = 1

    def __init__(self, where: SweepPaths, outbox: Any) -> None:
        saved = outbox.save(where.root)
        super().__init__(f"the MLflow server is unreachable; the sweep's results are complete on disk and "
                         f"{len(outbox.events)} MLflow write(s) wait in {saved}: run `gitsweep sync "
                         f"{where.root.name}` (or resume) when the server is back")


def finish(cfg: SweepConfig, where: SweepPaths, tracker: Any, callback: Any = None) -> int:
    """Sync the index and MLflow to Tune's final states, print the summary; 0 only if every trial finished."""
    from sweeps.report import write_report
    from sweeps.tracking.callback import TrialIndex
    from sweeps.tracking.outbox import is_outage

    records = TrialIndex(where, kind_of(cfg.trial).result_files).sync(tune_trials(where))
    prune_checkpoints(where.tune_target)
    report = write_report(cfg, where, records)  # on disk first: it stands even if MLflow is away
    if callback is not None:
        callback.outbox.close()  # fit() may have ended without on_experiment_end: the tracker is ours alone now
    if callback is not None and not callback.outbox.drain(force=True):
        raise OutageError(where, callback.outbox)  # what this session could not write goes to disk
    try:
        errored = record(cfg, where, tracker, records, report)
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise OutageError(where, getattr(callback, "outbox", None) or _empty_outbox(tracker)) from None
    from sweeps.summary import closing_summary

    print(closing_summary(cfg, records, tracker, report), flush=True)
    unfinished = [r for r in records if r.status not in ("TERMINATED", "ERROR")]
    if errored or unfinished:
        flag = " --restart-errored" if errored else ""  # unfinished trials need no flag to continue
        print(f"{errored} trial(s) errored, {len(unfinished)} unfinished. To rerun them:\n"
              f"  gitsweep resume {cfg.name}{flag}{paths.storage_flag(cfg.storage)}", flush=True)
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

    fs, root = paths.fs_path(tune_target) if paths.is_uri(tune_target) else (pafs.LocalFileSystem(), tune_target)
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


def sweep_summary(cfg: SweepConfig, records: list[rs.TrialRecord], results: Path) -> dict[str, float]:
    """The parent run's metrics: trials finished / failed / stopped early (and by the race), each
    objective's best value over the finished trials, or over the group means with repeats (sweeps.groups)."""
    from sweeps.groups import collect

    done = [r for r in records if r.status == "TERMINATED" and not r.stopped_by_race]
    states = Counter(r.status for r in records)
    out = {"sweep/trials_finished": float(len(done)), "sweep/trials_failed": float(states["ERROR"]),
           "sweep/trials_stopped_early": float(sum(r.stopped_early for r in records))}
    grouped = cfg.search.repeats > 1
    groups = collect(records, results, cfg.search.repeat_over if grouped else None)
    for metric, mode in zip(cfg.search.metric, cfg.search.mode, strict=True):
        found = [g.stats(metric).mean for g in groups] if grouped else [r.last.get(metric, float("nan")) for r in done]
        found = [v for v in found if v == v]
        if found:
            out[f"best/{metric}"] = max(found) if mode == "max" else min(found)
    if cfg.search.racing is not None:
        run = len(records)
        out.update({"race/trials_run": float(run),
                    "race/trials_saved": float(len(groups) * cfg.search.repeats - run)})
    return out
