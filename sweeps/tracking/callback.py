"""The driver's Tune callback: keeps the trial index and each finished trial's results (sweeps.results),
feeds the MLflow tracker, and prints progress.

Everything here runs in the Ray driver. Tune calls `get_state` while it writes its experiment snapshot
(the state a resume restores): the index and the buffered MLflow metrics are written first, so a resume
never finds MLflow or the index behind the snapshot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import tune

from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.group_stats import GroupResult, group_result
from sweeps.paths import SweepPaths
from sweeps.tracking.outbox import Outbox
from sweeps.tracking.progress import Progress
from sweeps.tracking.tracker import SweepTracker


def trial_error(trial: Any) -> str:
    """The last line of a failed trial's traceback: the exception and its reason."""
    text = ""
    for where in ("error_file", "path"):  # driver staging copy (needs Ray), then the storage copy
        try:
            path = getattr(trial, where, None)
        except Exception:  # error_file needs a live Ray session
            continue
        if path and where == "path":
            path = Path(path, trial.run_metadata.error_filename or "error.txt")
        if path and Path(path).is_file():
            text = Path(path).read_text(errors="replace")
            break
    text = text or str(getattr(trial, "error_msg", "") or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


class TrialIndex:
    """The driver's record of every trial (`<sweep>/trials.json`) and of their kept results."""

    def __init__(self, paths: SweepPaths) -> None:
        self.paths = paths
        self.records = {r.trial_id: r for r in rs.read_index(paths.index)}

    def record(self, trial: Any) -> rs.TrialRecord:
        rec = self.records.get(trial.trial_id)
        if rec is None:
            rec = self.records[trial.trial_id] = rs.TrialRecord(trial.trial_id, trial.status, dict(trial.config))
        rec.status = trial.status
        return rec

    def update(self, trial: Any, result: dict[str, Any] | None = None, failed: bool = False) -> rs.TrialRecord:
        rec = self.record(trial)
        if result:
            rec.last.update(rs.numbers(result))
            rec.stopped_early = rec.stopped_early or bool(result.get("trial/stopped_early"))
        if failed or trial.status == "ERROR":
            rec.status, rec.error = "ERROR", trial_error(trial)
        return rec

    def keep(self, trial_id: str, checkpoint: Any) -> Path | None:
        """Copy a final checkpoint's results into results/<trial_id>/; the folder, or None without a final."""
        dest = self.paths.results / trial_id
        with checkpoint.as_directory() as d:
            if not rs.keep_results(Path(d), dest):
                return None
        self.records[trial_id].final = True
        return dest

    def save(self) -> None:
        rs.write_index(self.paths.index, list(self.records.values()))

    def sync(self, trials: list[Any]) -> list[rs.TrialRecord]:
        """Match Tune's saved trials (the truth after fit() or a killed driver): states, errors, results."""
        for t in trials:
            rec = self.update(t, t.last_result)
            if t.status == "TERMINATED" and not rec.final and t.checkpoint is not None:
                self.keep(t.trial_id, t.checkpoint)
        known = {t.trial_id for t in trials}
        # A trial the killed driver started after Tune's last snapshot is gone: its repeat runs again
        # under a new id, so the old record would be a ghost.
        self.records = {k: r for k, r in self.records.items() if k in known}
        self.save()
        return [self.records[t.trial_id] for t in trials]


def group_figure(result: GroupResult, folder: Path, title: str) -> Path | None:
    """eKLD against class size: the group's mean over its repeats with the 95% band."""
    from gitlib.plots import ekld_bands

    curve = result.ekld_band
    if curve is None:
        return None
    return ekld_bands({f"mean of {len(result.finals)} repeats": curve}, folder / "ekld_vs_class_size.png", title)


def _band_figure(sweep: str, gid: str, records: list[Any], result: GroupResult, folder: Path) -> Path | None:
    """group_figure, drawn again only if the group's repeats changed since it was last drawn (a resume,
    the closing reconcile): a drawing costs the driver ~0.5 s of CPU, which the running trials pay on a
    small machine."""
    png, drawn_of = folder / "ekld_vs_class_size.png", folder / "ekld_vs_class_size.of"
    of = ",".join(sorted(f"{r.trial_id}:{r.status}" for r in records))
    if png.is_file() and drawn_of.is_file() and drawn_of.read_text() == of:
        return png
    drawn = group_figure(result, folder, f"{sweep} group {gid}: eKLD, mean and 95% CI over repeats")
    drawn_of.write_text(of)
    return drawn


def group_update(cfg: SweepConfig, index: TrialIndex, config: dict[str, Any]) -> list[Any]:
    """The arguments of the tracker's log_group for a group, as plain data: its statistics over the repeats
    kept so far, its per-class summary rows and, once every repeat has ended, its band figure (kept under
    results/groups/<group>/)."""
    gid = str(config[rs.GROUP_KEY])
    records = [r for r in index.records.values() if r.group_id == gid]
    result = group_result(gid, records, index.paths.results, cfg.search.repeat_over)
    ended = sum(r.status in ("TERMINATED", "ERROR") for r in records) >= cfg.search.repeats
    folder = index.paths.results / "groups" / gid
    folder.mkdir(parents=True, exist_ok=True)
    png = _band_figure(cfg.name, gid, records, result, folder) if ended else None  # once it has ended
    rows = result.per_class.to_dict("records") if result.per_class is not None else None
    return [config, result.metrics, rows, str(png) if png else None, ended]


class SweepCallback(tune.Callback):
    """Tune hooks -> trial index, kept results, MLflow and the progress display."""

    def __init__(self, cfg: SweepConfig, index: TrialIndex, tracker: SweepTracker, progress: Progress) -> None:
        self.cfg, self.index, self.tracker, self.progress = cfg, index, tracker, progress
        self.outbox = Outbox(tracker, progress.note)  # every MLflow write goes through it
        self._final_due: dict[str, bool] = {}  # trial id -> its latest result carried the final metrics
        self._deadline: float | None = None  # search.time_budget_s, counted from this session's first step
        self._asked: set[str] = set()
        self._quiet_restart: set[str] = set()  # trials whose restart after a non-retryable failure goes unannounced

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "paths": self.index.paths, "tracker": self.tracker,
                "progress": (self.progress.total, self.progress.objectives, self.progress.repeats,
                             self.progress.verbose)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled by a restored Tuner: the index is read again from disk, the display starts afresh."""
        self.cfg, self.tracker, self._final_due = state["cfg"], state["tracker"], {}
        self._deadline, self._asked, self._quiet_restart = None, set(), set()
        self.index = TrialIndex(state["paths"])
        self.progress = Progress(*state["progress"])
        self.outbox = Outbox(self.tracker, self.progress.note)

    def _final(self, trial: Any, checkpoint: Any) -> None:
        if checkpoint is None or self.index.records[trial.trial_id].final:
            return
        folder = self.index.keep(trial.trial_id, checkpoint)
        if folder is not None:
            self.outbox.send("log_final", trial.trial_id, trial.config, str(folder))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.index.update(trial)
        self.outbox.send("trial_run", trial.trial_id, trial.config)
        if trial.trial_id in self._quiet_restart:
            self._quiet_restart.discard(trial.trial_id)
            return
        self.progress.started(trial.trial_id, trial.config)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.index.update(trial, result)
        self.outbox.send("log_result", trial.trial_id, trial.config, rs.loggable(result))
        self._final_due[trial.trial_id] = bool(result.get(rs.FINAL_KEY))
        self.progress.result(trial.trial_id, trial.config, result, self.cfg.classifier.epochs)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Only the final report's checkpoint has results to keep: skip the per-epoch ones (driver CPU on a
        # small machine). on_trial_complete keeps the final anyway if this callback order ever differs.
        if self._final_due.pop(trial.trial_id, False):
            self._final(trial, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self.index.update(trial)
        rec.status = "TERMINATED"
        self._final(trial, trial.checkpoint)
        self.outbox.send("finish_trial", trial.trial_id, trial.config, "FINISHED")
        self.index.save()
        if self.cfg.search.repeats > 1:
            self.outbox.send("log_group", *group_update(self.cfg, self.index, trial.config))
        self.progress.finished(trial.trial_id, trial.config, rec.last)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = trial_error(trial)
        if "NonRetryable" in error:  # the retry only reads the failure back and ends: its FAILED line says it
            self._quiet_restart.add(trial.trial_id)
            return
        self.progress.note(f"{trial.trial_id} failed, retrying from its last checkpoint: {error}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self.index.update(trial, failed=True)
        self.outbox.send("finish_trial", trial.trial_id, trial.config, "FAILED", rec.error)
        self.index.save()
        if self.cfg.search.repeats > 1:
            self.outbox.send("log_group", *group_update(self.cfg, self.index, trial.config))
        self.progress.errored(trial.trial_id, trial.config, rec.error)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune's loop steps at least every 0.1 s, results or not: held writes are retried from here
        if self.outbox.events:
            self.outbox.drain()
        else:
            self.outbox.send("flush_if_due")
        self.progress.tick()
        self._enforce_budget(trials)

    def _enforce_budget(self, trials: list) -> None:
        """Past the time budget, every running trial is asked to stop: it evaluates what it has."""
        budget = self.cfg.search.time_budget_s
        if budget is None:
            return
        if self._deadline is None:
            self._deadline = time.monotonic() + budget
        if time.monotonic() < self._deadline:
            return
        running = [t.trial_id for t in trials if t.status == "RUNNING" and t.trial_id not in self._asked]
        if running:
            from sweeps.trials.stops import ask_to_stop

            ask_to_stop(self.cfg.name, running)
            self._asked.update(running)
            self.progress.note(f"time budget of {budget:g} s reached: {len(running)} running trial(s) asked to "
                               "stop and report what they have")

    def get_state(self) -> dict | None:
        # Called while Tune writes its experiment snapshot: what it covers is written first (held, while
        # the MLflow server is away). Nothing of ours to save in it.
        self.outbox.send("flush")
        self.index.save()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.outbox.send("flush")
        self.index.save()
        self.progress.close()
