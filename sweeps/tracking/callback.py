"""The driver's Tune callback: keeps the trial index and each finished trial's results (sweeps.results),
feeds the MLflow tracker, and prints progress.

Everything here runs in the Ray driver, in Tune's loop; the MLflow writes go to the outbox's writer thread
(sweeps.tracking.outbox), so the loop starts the next trial while they are written. Tune calls
`get_state` while it writes its experiment snapshot (the state a resume restores): the index and every
MLflow write handed over so far are written first, so a resume never finds MLflow or the index behind
the snapshot. The race's decisions reach MLflow from the search's log (sweeps.search_state), which
the searcher writes as it decides.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ray import tune

from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.groups import Group, align_by, collect, colour, ekld_band, group_per_class
from sweeps.kinds import kind_of
from sweeps.paths import SweepPaths
from sweeps.search_state import FILE, LogReader
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
    """The driver's record of every trial (`<sweep>/trials.json` and its journal) and of their kept results.
    A trial's end appends one line to the journal; Tune's snapshots (rate-limited by Tune) rewrite the whole
    index, so a long sweep's driver does not rewrite every record at every event."""

    def __init__(self, paths: SweepPaths, result_files: tuple[str, ...] = (rs.FINAL,)) -> None:
        self.paths, self.result_files = paths, result_files
        self.records = {r.trial_id: r for r in rs.read_index(paths.index)}

    def record(self, trial: Any) -> rs.TrialRecord:
        rec = self.records.get(trial.trial_id)
        if rec is None:
            rec = rs.TrialRecord(trial.trial_id, trial.status, dict(trial.config))
            rs.add_record(self.records, rec)
        rec.status = trial.status
        return rec

    def of_group(self, gid: str) -> list[rs.TrialRecord]:
        return [r for r in self.records.values() if r.group_id == gid]

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
            if not rs.keep_results(Path(d), dest, self.result_files):
                return None
        self.records[trial_id].final = True
        return dest

    def save(self) -> None:
        rs.write_index(self.paths.index, list(self.records.values()))

    def note(self, rec: rs.TrialRecord) -> None:
        rs.append_record(self.paths.index, rec)

    def sync(self, trials: list[Any]) -> list[rs.TrialRecord]:
        """Match Tune's saved trials (the truth after fit() or a killed driver): states, errors, results.
        Trials Tune's last snapshot missed keep their record if they finished; the others ran again."""
        for t in trials:
            rec = self.update(t, t.last_result)
            if t.status == "TERMINATED" and not rec.final and t.checkpoint is not None:
                self.keep(t.trial_id, t.checkpoint)
        known = {t.trial_id for t in trials}
        self.records = {k: r for k, r in self.records.items()
                        if k in known or (r.status == "TERMINATED" and (r.final or r.stopped_by_race))}
        self.save()
        return sorted(self.records.values(), key=lambda r: r.slot)


def group_figure(group: Group, table: Any, folder: Path, title: str) -> Path | None:
    """eKLD against class size: the group's mean over its repeats with the 95% band, in the group's colour."""
    from gitlib.plots import ekld_bands

    band = ekld_band(table)
    if band is None:
        return None
    label = f"{group.group_id}: mean of {len(group.finished)} repeats"
    return ekld_bands({label: band}, folder / "ekld_vs_class_size.png", title, {label: colour(group.group_id)})


def group_update(cfg: SweepConfig, records: list[rs.TrialRecord], results: Path, dropped: bool = False) -> list[Any]:
    """The arguments of the tracker's log_group for a group (`records`: its trials), as plain data: its
    statistics over the repeats kept so far, its per-class summary rows and, once every repeat has ended
    (or the race dropped it and its last running repeat stopped), its band figure (kept under
    results/groups/<group>/)."""
    group = collect(records, results, cfg.search.repeat_over)[0]
    n_ended = sum(r.status in ("TERMINATED", "ERROR") for r in records)
    ended = n_ended >= cfg.search.repeats or (dropped and n_ended == len(records))
    table = group_per_class(group, results, align_by(cfg.search.repeat_over))
    png = None
    if ended:
        folder = results / "groups" / group.group_id
        folder.mkdir(parents=True, exist_ok=True)
        png = group_figure(group, table, folder, f"{cfg.name} group {group.group_id}: eKLD, mean and 95% CI over repeats")
    rows = table.to_dict("records") if table is not None else None
    return [records[0].config, group.metrics(), rows, str(png) if png else None, ended]


def _group_event(cfg: SweepConfig, records: list[rs.TrialRecord], results: Path, dropped: bool) -> tuple[str, list[Any]]:
    return "log_group", group_update(cfg, records, results, dropped)


class SweepCallback(tune.Callback):
    """Tune hooks -> trial index, kept results, MLflow and the progress display."""

    def __init__(self, cfg: SweepConfig, index: TrialIndex, tracker: SweepTracker, progress: Progress) -> None:
        self.cfg, self.index, self.tracker, self.progress = cfg, index, tracker, progress
        self.kind = kind_of(cfg.trial)
        self.outbox = Outbox(tracker, progress.note, background=True)  # every MLflow write, off Tune's loop
        self.race = LogReader(index.paths.root / FILE)  # the race's decisions, as the searcher logs them
        self._final_due: dict[str, bool] = {}  # trial id -> its latest result carried the final metrics
        self._deadline: float | None = None  # search.time_budget_s, counted from this session's first step
        self._asked: set[str] = set()
        self._quiet_restart: set[str] = set()  # trials whose restart after a non-retryable failure goes unannounced

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "paths": self.index.paths, "tracker": self.tracker, "progress": self.progress.args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled by a restored Tuner: the index is read again from disk, the display starts afresh."""
        kind = kind_of(state["cfg"].trial)
        self.__init__(state["cfg"], TrialIndex(state["paths"], kind.result_files), state["tracker"],  # type: ignore[misc]
                      Progress(*state["progress"]))

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
        self.progress.result(trial.trial_id, trial.config, result)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Only the final report's checkpoint has results to keep: skip the per-step ones (driver CPU on a
        # small machine). on_trial_complete keeps the final anyway if this callback order ever differs.
        if self._final_due.pop(trial.trial_id, False):
            self._final(trial, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self.index.update(trial)
        rec.status = "TERMINATED"
        self._final(trial, trial.checkpoint)
        if not rec.final and not (trial.last_result or {}).get(rs.FINAL_KEY):  # stopped before its end: the race
            rec.stopped_by_race = True
            self.outbox.send("finish_trial", trial.trial_id, trial.config, "KILLED",
                             "stopped by the race: its group was dropped", {"gitsweep.stopped_by": "race"})
            self.progress.stopped(trial.trial_id, trial.config)
        else:
            self.outbox.send("finish_trial", trial.trial_id, trial.config, "FINISHED")
            self.progress.finished(trial.trial_id, trial.config, rec.last)
        self.index.note(rec)
        self._groups_changed(rec.group_id)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = trial_error(trial)
        if "NonRetryable" in error:  # the retry only reads the failure back and ends: its FAILED line says it
            self._quiet_restart.add(trial.trial_id)
            return
        self.progress.note(f"{trial.trial_id} failed, retrying from its last checkpoint: {error}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self.index.update(trial, failed=True)
        self.outbox.send("finish_trial", trial.trial_id, trial.config, "FAILED", rec.error)
        self.index.note(rec)
        self.progress.errored(trial.trial_id, trial.config, rec.error)
        self._groups_changed(rec.group_id)

    def _groups_changed(self, gid: str) -> None:
        """MLflow's group runs after a repeat ended: the race's new decisions, then the group's numbers."""
        decisions = {d.group: d for d in self.race.poll()}
        for d in decisions.values():
            config = next((r.config for r in self.index.records.values() if r.group_id == d.group), None)
            if config is not None:
                self.outbox.send("log_race", config, d)
                self.progress.raced(d)
        if self.cfg.search.repeats > 1:
            for group in dict.fromkeys([gid, *decisions]):
                # copies: Tune's loop goes on changing the index while the writer thread reads them
                records = [replace(r, last=dict(r.last)) for r in self.index.of_group(group)]
                if records:
                    self.outbox.send_later(partial(_group_event, self.cfg, records, self.index.paths.results,
                                                   self.race.dropped(group)))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune's loop steps at least every 0.1 s, results or not: buffered metric points go out from here
        # (held writes are retried by the outbox's writer thread)
        if not self.outbox.events:
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
        # the MLflow server is away), waiting for the writer thread. Nothing of ours to save in it.
        self.outbox.send("flush")
        self.outbox.drain()
        self.index.save()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.outbox.send("flush")
        self.outbox.close()
        self.outbox.drain()
        self.index.save()
        self.progress.close()
