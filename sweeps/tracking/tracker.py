"""MLflow records of a sweep, written from the Ray driver only.

`SweepTracker` knows the parent run and finds (or creates) the nested run of a trial by the repeat it
runs for the search (`gitsweep.slot` = group/repeat), so a restored trial continues its own run, a
retried trial never leaves a twin, and a repeat that a killed driver's Tune lost and the resume runs
again under a new trial id continues the same run. The Tune callback (sweeps.tracking.callback) feeds
it; after `fit()` the driver calls `reconcile()` so no run is left RUNNING. Trials write nothing to
MLflow themselves: with one writer, the default SQLite store sees no lock contention from its trials.

Per-epoch metrics are buffered and written every FLUSH_S seconds, one log_batch per run: a write costs
the driver about the same CPU (SQLite) or round trip (`mlflow server`) for one epoch as for twenty, and
on a small machine that CPU comes out of the trials. The buffer is also written before every Tune
experiment snapshot (`SweepCallback.get_state`) and when a trial ends.

What a trial kind reports is read from its record (sweeps.kinds): which result keys are per-step series
(logged at step = its step key) and which describe the final model (step 0), and which result files are
figures (logged as MLflow images too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeps import results as rs
from sweeps.config import SweepConfig, trial_config
from sweeps.kinds import kind_of
from sweeps.search_state import Decision
from sweeps.tracking import mlflow_runs as mr

# Result keys worth logging: everything namespaced (train/, val/, test/, ekld/, loss/, ...) plus lr.
SKIP_PREFIXES = ("config/", "generator/", "trial/final", "trial/device")
PLAIN_KEYS = ("lr", "epoch", "iteration", "step")
FLUSH_S = 5.0  # longest a per-epoch metric point waits in the driver before it is written
Slot = tuple[str, int]


def slot_of(trial_id: str, config: dict[str, Any]) -> Slot:
    """(group, repeat) of a trial's Tune config; a trial outside any group is its own."""
    return str(config.get(rs.GROUP_KEY, trial_id)), int(config.get(rs.REPEAT_KEY, 0))


class SweepTracker:
    """MLflow writes of one sweep (picklable: the client is made lazily in each process)."""

    def __init__(self, uri: str, experiment: str, sweep: str, base: SweepConfig,
                 artifact_root: str | None, parent_run_id: str | None = None,
                 study: tuple[str, str] | None = None) -> None:
        self.uri, self.experiment, self.sweep, self.base = uri, experiment, sweep, base
        self.artifact_root = artifact_root
        self.parent_run_id = parent_run_id
        self.study = study  # (storage, name) of the sweep's Optuna study: its trials learn their group's run
        self._reset()

    def _reset(self) -> None:
        self._client: Any = None
        self._exp_id: str | None = None
        self._runs: dict[Slot, str] = {}
        self._groups: dict[str, str] = {}  # group id -> its run (only with search.repeats > 1)
        self._existing: dict[str, dict[str, str]] | None = None  # runs of this sweep found in MLflow
        self._final: set[Slot] = set()
        self._ended: dict[Slot, str] = {}  # trial runs this tracker ended, with the status it gave them
        self._groups_ended: set[str] = set()  # group runs this tracker ended (their last update logged)
        self._generators: set[str] = set()
        self._device_tagged: set[Slot] = set()
        self._pending: dict[str, list[Any]] = {}  # run id -> metric points not yet written
        self._steps: dict[str, dict[str, set[int]]] = {}  # run id -> key -> steps logged (or pending)
        self._unsure: set[str] = set()  # runs whose last batch may have reached a server that then went away
        self._flushed_at = time.monotonic()
        self._study_storage: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in ("uri", "experiment", "sweep", "base", "artifact_root", "parent_run_id",
                                              "study")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"study": None, **state})  # a tracker pickled before studies were linked has none
        self._reset()

    @property
    def kind(self) -> Any:
        return kind_of(self.base.trial)

    @property
    def repeats(self) -> int:
        return self.base.search.repeats

    # ---- buffered metric points ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write the buffered metric points: one log_batch per run. If the server goes away, the unwritten
        points stay buffered, and a run whose batch may have arrived is re-read before its next write."""
        pending, self._pending = self._pending, {}
        try:
            for run_id in list(pending):
                points = pending[run_id]
                if run_id in self._unsure:
                    self._steps[run_id] = self._logged_steps(run_id)
                    points = [m for m in points if m.step not in self._steps[run_id].get(m.key, set())]
                    self._unsure.discard(run_id)
                mr.log_points(self.client, run_id, points)
                for m in points:
                    self._steps.setdefault(run_id, {}).setdefault(m.key, set()).add(m.step)
                del pending[run_id]
        except Exception:
            for run_id, points in pending.items():  # back in front of anything reported meanwhile
                self._pending[run_id] = [*points, *self._pending.get(run_id, [])]
            self._unsure.update(pending)
            raise
        self._flushed_at = time.monotonic()

    def take_pending(self) -> list[dict[str, Any]]:
        """The buffered points as plain data (to save them while the server is away); the buffer empties."""
        pending, self._pending = self._pending, {}
        return [{"run": run_id, "key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
                for run_id, points in pending.items() for m in points]

    def log_points(self, points: list[dict[str, Any]]) -> None:
        """Write saved points (take_pending's), skipping any step a run already holds."""
        from mlflow.entities import Metric

        for p in points:
            run_id = p["run"]
            if run_id not in self._steps:
                self._steps[run_id] = self._logged_steps(run_id)
            if self._new_point(run_id, p["key"], int(p["step"])):
                self._pending.setdefault(run_id, []).append(Metric(p["key"], p["value"], p["timestamp"], p["step"]))
        self.flush()

    def flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._flushed_at >= FLUSH_S:
            self.flush()

    @property
    def client(self) -> Any:
        if self._client is None:
            # A failed request must come back fast: the outbox holds and retries writes itself, and a
            # request retried for minutes inside MLflow would stall every write behind it, and Tune's
            # snapshots, which wait for the writes handed over before them.
            import os

            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no line per finished run
            self._client = mr.client(self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._exp_id is None:
            self._exp_id = mr.ensure_experiment(self.client, self.experiment, self.artifact_root)
        return self._exp_id

    # ---- parent ---------------------------------------------------------------------------------------

    def open_parent(self, config_yaml: str) -> str:
        """Create (or reopen, on resume) the sweep's parent run with config and provenance."""
        tags = {mr.SWEEP_TAG: self.sweep, mr.ROLE_TAG: "sweep"}
        run_id = self.parent_run_id
        if run_id is None:
            run_id, created = mr.get_or_create_run(self.client, self.experiment_id, tags, run_name=self.sweep,
                                                   extra_tags=mr.provenance_tags())
            if created:
                mr.log_params(self.client, run_id, self.sweep_params())
                mr.log_config_artifact(self.client, run_id, config_yaml)
                self.client.set_tag(run_id, mr.NOTE_TAG, self.describe())
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

    def sweep_params(self) -> dict[str, Any]:
        """The sweep's own params, all under `sweep.`: what it searches and how, and the base config every
        trial starts from (`sweep.base.<key>`, the sections its trial kind reads), so the parent never
        reads as one more trial."""
        search = self.base.as_dict()["search"]
        params: dict[str, Any] = {f"sweep.search.{k}": v for k, v in search.items() if k not in ("space", "racing")}
        params["sweep.search.space"] = json.dumps(search["space"])
        params.update({f"sweep.search.racing.{k}": v for k, v in (search["racing"] or {}).items()})
        params.update({f"sweep.base.{k}": v for k, v in self.base.read_by_trials().items()})
        return params

    def describe(self, answer: str = "", files: Sequence[tuple[str, str]] = ()) -> str:
        """The parent run's description (MLflow's note): the answer first (sweeps.report.answer), what the
        sweep is, and the report's files as they are, each linked to its place in the Artifacts tab."""
        s = self.base.search
        space = ", ".join(s.space) or "nothing (repeats of one configuration)"
        repeats = f", each as a group of {s.repeats} repeats over `{s.repeat_over}`" if s.repeats > 1 else ""
        raced = " (raced)" if s.racing is not None else ""
        parts = [answer] if answer else []
        parts.append(f"**Sweep `{self.sweep}`**: {s.num_samples} configurations{repeats}{raced}, searching {space} "
                     f"with `{s.sampler}` for {', '.join(s.metric)} ({', '.join(s.mode)}).")
        if files:
            run = self.parent_run_id or ""
            parts.append("**Report** (Artifacts tab, folder `report/`):\n\n" + "\n".join(
                f"- [{name}]({mr.run_path(self.experiment_id, run, f'report/{name}')})" + (f": {what}" if what else "")
                for name, what in files))
        else:
            parts.append("The report (Artifacts tab, folder `report/`) is written and logged here when the sweep ends.")
        parts.append("Trials (and groups) are the runs nested below; the chart view's `per_class/ekld` line chart "
                     "draws eKLD against class-size rank (step 0 = the largest class) for the shown runs.")
        return "\n\n".join(parts)

    def state_answer(self, answer: str, tags: dict[str, str], metrics: dict[str, float], folder: Path | None,
                     files: Sequence[tuple[str, str]]) -> None:
        """The sweep's answer on the parent run: the report's files under `report/`, the tags that name the
        best group and its contrast, the contrast's metrics (step 0), and the description opening with it."""
        run_id = self.parent_run_id
        if run_id is None:
            return
        if folder is not None and folder.is_dir():
            self.client.log_artifacts(run_id, str(folder), artifact_path="report")
        mr.set_tags(self.client, run_id, {**tags, mr.NOTE_TAG: self.describe(answer, files)})
        mr.log_metrics(self.client, run_id, metrics, step=0)

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Sweep-level metrics on the parent: trials finished / failed / stopped early, best values."""
        if self.parent_run_id is not None:
            mr.log_metrics(self.client, self.parent_run_id, metrics, step=0)

    def close_parent(self, errored: int) -> None:
        if self.parent_run_id is None:
            return
        if errored:
            mr.finish_run(self.client, self.parent_run_id, "FAILED", f"{errored} trial(s) errored")
        else:
            if self._has_error(self.parent_run_id):  # a resume fixed what failed before
                self.client.delete_tag(self.parent_run_id, mr.ERROR_TAG)
            mr.finish_run(self.client, self.parent_run_id, "FINISHED")

    def _has_error(self, run_id: str) -> bool:
        return mr.ERROR_TAG in self.client.get_run(run_id).data.tags

    # ---- finding runs -------------------------------------------------------------------------------

    def _existing_runs(self) -> dict[str, dict[str, str]]:
        """The runs this sweep already has, read once (one paged search, not one per trial): slot -> run
        of the trials, group id -> run of the groups."""
        if self._existing is None:
            found: dict[str, dict[str, str]] = {"slot": {}, "group": {}}
            for run in mr.search_all(self.client, self.experiment_id, {mr.SWEEP_TAG: self.sweep}):
                tags = run.data.tags
                if tags.get(mr.ROLE_TAG) == "group" and mr.GROUP_TAG in tags:
                    found["group"].setdefault(tags[mr.GROUP_TAG], run.info.run_id)
                elif mr.SLOT_TAG in tags:
                    found["slot"].setdefault(tags[mr.SLOT_TAG], run.info.run_id)
            self._existing = found
        return self._existing

    def _run(self, known: str | None, tags: dict[str, str], name: str, parent: str | None) -> tuple[str, bool]:
        """(run id, created): the known run reopened, else a new one."""
        if known is not None:
            self.client.update_run(known, status="RUNNING")
            return known, False
        all_tags = {**tags, **mr.provenance_tags(), **({mr.PARENT_TAG: parent} if parent else {})}
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id, True

    # ---- trials -------------------------------------------------------------------------------------

    def trial_run(self, trial_id: str, config: dict[str, Any]) -> str:
        slot = slot_of(trial_id, config)
        if slot in self._runs:
            return self._runs[slot]
        key = f"{slot[0]}/{slot[1]}"
        grouped = self.repeats > 1 and rs.GROUP_KEY in config
        parent = self.group_run(config) if grouped else self.parent_run_id  # repeats nest in their group
        tags = {mr.SWEEP_TAG: self.sweep, mr.ROLE_TAG: self.base.trial, mr.SLOT_TAG: key}
        if grouped:
            tags[mr.IN_GROUP_TAG] = slot[0]  # trial runs only: MLflow's "Group by" then pools a group's trials
        run_id, created = self._run(self._existing_runs()["slot"].get(key), tags, f"trial_{trial_id}", parent)
        values = rs.sampled_values(config)
        # Also for a found run: a driver killed between creating the run and logging its params left it
        # without them (log_params writes only what is missing).
        params = {**trial_config(self.base, config).resolved().read_by_trials(), **values}
        mr.log_params(self.client, run_id, params, fresh=created)
        mr.set_tags(self.client, run_id, {mr.TRIAL_TAG: trial_id,  # the Tune trial running it now
                                          **{f"{mr.PARAM_TAG}{k}": str(v) for k, v in values.items()}})
        if not created:
            if self._has_error(run_id):  # restarted after a failure: the old reason no longer holds
                self.client.delete_tag(run_id, mr.ERROR_TAG)
            self._steps[run_id] = self._logged_steps(run_id)  # a resumed run: what it holds already
            self.client.set_tag(run_id, "mlflow.runName", f"trial_{trial_id}")
        self._runs[slot] = run_id
        return run_id

    def _logged_steps(self, run_id: str) -> dict[str, set[int]]:
        keys = self.client.get_run(run_id).data.metrics
        return {k: {m.step for m in self.client.get_metric_history(run_id, k)} for k in keys}

    def _new_point(self, run_id: str, key: str, step: int) -> bool:
        """True the first time (run, key, step) comes: a resumed or retried trial re-reports the epochs
        after its checkpoint, and each step keeps the point it got first (an exact resume repeats it)."""
        steps = self._steps.setdefault(run_id, {}).setdefault(key, set())
        if step in steps:
            return False
        steps.add(step)
        return True

    def log_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """Series (train/*, val/*, ...) at step = the kind's step key, the final model's metrics at step 0
        (they are one value, not a time series); a step this run already holds is not logged again."""
        run_id = self.trial_run(trial_id, config)
        kind = self.kind
        step = int(result.get(kind.step) or result.get("training_iteration") or 0)
        values = {k: v for k, v in result.items()
                  if ("/" in k and not k.startswith(SKIP_PREFIXES)) or k in PLAIN_KEYS}
        series = {k: v for k, v in values.items() if kind.is_series(k)}
        finals = {k: v for k, v in values.items() if not kind.is_series(k)}
        points = [*mr.metric_points(series, step), *mr.metric_points(finals, 0)]
        self._pending.setdefault(run_id, []).extend(p for p in points if self._new_point(run_id, p.key, p.step))
        if result.get("trial/stopped_early"):  # evaluated where ASHA or the time budget stopped it
            mr.set_tags(self.client, run_id, {mr.STOPPED_TAG: "true", mr.STOPPED_EPOCH_TAG: str(step)})
        slot = slot_of(trial_id, config)
        device = result.get("trial/device")
        if device and slot not in self._device_tagged:  # where the trial ran (GPU name, or CPU threads)
            self.client.set_tag(run_id, mr.DEVICE_TAG, str(device))
            self._device_tagged.add(slot)
        digest, folder = result.get("generator/digest"), result.get("generator/folder")
        if digest and folder and digest not in self._generators:
            self.log_generator(str(digest), Path(str(folder)))

    def log_final(self, trial_id: str, config: dict[str, Any], folder: Path | str) -> bool:
        """Final metrics and artifacts from a trial's kept results (sweeps.results), once (tagged when done)."""
        folder, slot = Path(folder), slot_of(trial_id, config)
        final = rs.read_final(folder)
        if final is None or slot in self._final:
            return False
        run_id = self.trial_run(trial_id, config)
        self.flush()  # the run's metrics as logged, to tell what the final result still lacks
        run = self.client.get_run(run_id)
        if mr.FINAL_TAG in run.data.tags:
            self._final.add(slot)
            return False
        kind = self.kind
        # Normally the last result already carried these; log only what a killed driver missed.
        missing = {k: v for k, v in final.items() if "/" in k and not kind.is_series(k) and k not in run.data.metrics}
        mr.log_metrics(self.client, run_id, missing, step=0)
        mr.log_series(self.client, run_id, rs.read_curves(folder))
        table = rs.read_per_class(folder)
        if table is not None:
            mr.log_per_class(self.client, run_id, table)
            mr.log_series(self.client, run_id, rs.per_class_series(table.to_pylist()))
        for name in kind.figures:
            if (folder / name).is_file():
                mr.log_figure(self.client, run_id, folder / name, name.removesuffix(".png"))
        self.client.set_tag(run_id, mr.FINAL_TAG, "true")
        self._final.add(slot)
        return True

    def finish_trial(self, trial_id: str, config: dict[str, Any], status: str, error: str | None = None,
                     tags: dict[str, str] | None = None) -> None:
        slot = slot_of(trial_id, config)
        if self._ended.get(slot) == status:  # the final reconcile of a run this session already ended
            return
        self.flush()
        run_id = self.trial_run(trial_id, config)
        if tags:
            mr.set_tags(self.client, run_id, tags)
        mr.finish_run(self.client, run_id, status, error)
        self._ended[slot] = status

    def group_ended(self, gid: str) -> bool:
        """Whether this tracker already logged the group's last update (and ended its run)."""
        return gid in self._groups_ended

    # ---- groups (search.repeats > 1) ------------------------------------------------------------------

    def group_run(self, config: dict[str, Any]) -> str:
        """The run of the trial's group, nested under the parent; its params are the configuration
        without the repeat key, plus group.repeat_over and group.repeats."""
        gid = str(config[rs.GROUP_KEY])
        if gid in self._groups:
            return self._groups[gid]
        repeat_key = self.base.search.repeat_over
        searched = {k: v for k, v in sorted(rs.sampled_values(config).items()) if k != repeat_key}
        values = rs.describe(searched)
        name = f"group_{gid}" + (f" ({values})" if values else "")  # legends of the chart view read as configs
        tags = {mr.SWEEP_TAG: self.sweep, mr.ROLE_TAG: "group", mr.GROUP_TAG: gid}
        run_id, created = self._run(self._existing_runs()["group"].get(gid), tags, name, self.parent_run_id)
        # Written for a found run too: a driver killed right after creating it left it bare (both are no-ops
        # when already there).
        note = (f"Group {gid}: {values or 'the one configuration'}, run as up to {self.repeats} repeats over "
                f"`{repeat_key}` (nested below). Its metrics are means over the finished repeats with std and "
                "Student-t 95% intervals (m/std, m/ci95_low, m/ci95_high; step = repeats finished).")
        cfg = trial_config(self.base, config).resolved()
        params = {k: v for k, v in {**cfg.read_by_trials(), **searched}.items() if k != repeat_key}
        mr.log_params(self.client, run_id, {**params, "group.repeat_over": repeat_key, "group.repeats": self.repeats},
                      fresh=created)
        mr.set_tags(self.client, run_id, {mr.NOTE_TAG: note, **({mr.RACE_TAG: "running"}
                                                                if created and self.base.search.racing else {})})
        self._groups[gid] = run_id
        self._link_study(gid, run_id)
        return run_id

    def _link_study(self, gid: str, run_id: str) -> None:
        """The group run's id and page as user attributes of the group's Optuna trial (the searcher set its
        `group_id`), so optuna-dashboard's trial page leads back to MLflow. The study's SQLite (or database)
        is the place the searcher and this tracker share. Optuna takes attributes only while a trial runs,
        which it does from the group's first repeat, when its run is made, until the group is told."""
        if self.study is None:
            return
        import optuna

        storage, name = self.study
        try:
            if self._study_storage is None:
                self._study_storage = optuna.storages.get_storage(storage)
            study = optuna.load_study(study_name=name, storage=self._study_storage)
        except KeyError:  # no study (a sweep without a searcher's study, e.g. in a test)
            return
        url = f"{mr.ui_address(self.uri)}/{mr.run_path(self.experiment_id, run_id)}"
        for trial in study.get_trials(deepcopy=False):
            if trial.user_attrs.get("group_id") != gid or trial.user_attrs.get("mlflow_run_id") == run_id:
                continue
            try:
                for key, value in (("mlflow_run_id", run_id), ("mlflow_run", url)):
                    self._study_storage.set_trial_user_attr(trial._trial_id, key, value)
            except RuntimeError:  # told already (finished trials are read-only)
                continue

    def log_group(self, config: dict[str, Any], metrics: dict[str, float], rows: list[dict[str, Any]] | None,
                  png: str | None, done: bool) -> None:
        """The group's statistics so far (step = repeats finished, so each update is one new point), its
        per-class summary table (rows) and band figure; the run ends with the group's last repeat.
        Idempotent: a resume syncs every group again."""
        import pandas as pd

        table = pd.DataFrame(rows) if rows else None
        png_path = Path(png) if png else None
        run_id = self.group_run(config)
        n = metrics.get("group/n_finished", 0.0)
        run = self.client.get_run(run_id)
        if run.data.metrics.get("group/n_finished") != n:
            mr.log_metrics(self.client, run_id, metrics, step=int(n))
            if table is not None:
                mr.log_group_table(self.client, run_id, table, png_path)
        if done and run.info.status == "RUNNING" and table is not None:  # the final means, one point a class
            mr.log_series(self.client, run_id, rs.per_class_series(table.to_dict("records")))
        if done and run.info.status == "RUNNING":
            if table is not None:
                self.client.log_table(run_id, data=table, artifact_file="per_class.json")  # appends: log once
            if png_path is not None and png_path.is_file():
                mr.log_figure(self.client, run_id, png_path, "ekld_vs_class_size")
            mr.finish_run(self.client, run_id, "FINISHED" if n else "FAILED",
                          None if n else "every repeat of the group failed")
        if done:
            self._groups_ended.add(str(config.get(rs.GROUP_KEY)))

    def log_race(self, config: dict[str, Any], d: Decision) -> None:
        """The race's decision on a group: `gitsweep.race` (dropped | survived), the incumbent it was
        compared with, the pairs and p-value of the test."""
        run_id = self.group_run(config)
        mr.set_tags(self.client, run_id, {mr.RACE_TAG: d.decision, mr.RACE_VS_TAG: d.vs})
        mr.log_metrics(self.client, run_id, {"race/n_at_decision": float(d.n), "race/p_value": d.p,
                                             "race/repeats_at_decision": float(d.k)}, step=0)

    # ---- shared generators ----------------------------------------------------------------------------

    def log_generator(self, digest: str, folder: Path | str) -> None:
        """One nested generator run per generator used by this sweep: losses, quality, sample grid."""
        from sweeps.stores.generators import READY, StoredGenerator

        folder = Path(folder)
        entry = StoredGenerator(digest, folder)
        if not (folder / READY).is_file():
            return
        tags = {mr.SWEEP_TAG: self.sweep, mr.ROLE_TAG: "generator", mr.GENERATOR_TAG: digest}
        run_id, _ = mr.get_or_create_run(self.client, self.experiment_id, tags, run_name=f"generator_{digest[:8]}",
                                         parent_run_id=self.parent_run_id, extra_tags=mr.provenance_tags())
        if mr.FINAL_TAG not in self.client.get_run(run_id).data.tags:
            ready = json.loads((folder / READY).read_text())
            params = {f"generator.{k}": v for k, v in ready.get("config", {}).items()}
            params.update({"dataset.digest": ready.get("dataset", ""), "generator.digest": digest,
                           "generator.folder": str(folder), "generator.times_trained": entry.times_trained()})
            mr.log_params(self.client, run_id, params)
            for rec in entry.losses():
                step = int(rec.get("iteration", 0))
                mr.log_metrics(self.client, run_id, {f"loss/{k}": v for k, v in rec.items() if k != "iteration"}, step)
            mr.log_metrics(self.client, run_id, entry.metrics(), step=int(ready.get("config", {}).get("iterations", 0)))
            if (folder / "samples.png").is_file():
                self.client.log_artifact(run_id, str(folder / "samples.png"))
            self.client.set_tag(run_id, mr.FINAL_TAG, "true")
        mr.finish_run(self.client, run_id, "FINISHED")
        self._generators.add(digest)

    # ---- after fit() / on resume --------------------------------------------------------------------

    def reconcile(self, records: list[rs.TrialRecord], results: Path) -> int:
        """Bring every trial's run to its recorded state; returns how many errored. Runs of this sweep
        still RUNNING without a live trial (a killed driver's) are closed as KILLED."""
        self.flush()
        errored = 0
        seen: set[str] = set()
        for t in records:
            seen.add(f"{t.group_id}/{t.repeat}")
            if t.stopped_by_race:
                self.finish_trial(t.trial_id, t.config, "KILLED", tags=RACE_STOPPED)
            elif t.status == "TERMINATED":
                self.log_final(t.trial_id, t.config, results / t.trial_id)
                self.finish_trial(t.trial_id, t.config, "FINISHED")
            elif t.status == "ERROR":
                errored += 1
                self.finish_trial(t.trial_id, t.config, "FAILED", t.error or "unknown error")
            elif f"{t.group_id}/{t.repeat}" in self._existing_runs()["slot"] or slot_of(t.trial_id, t.config) in self._runs:
                self.finish_trial(t.trial_id, t.config, "KILLED", f"trial left {t.status} when the sweep stopped")
        where = f"tags.`{mr.SWEEP_TAG}` = '{self.sweep}' and attributes.status = 'RUNNING'"
        for run in mr.search_all(self.client, self.experiment_id, None, where):
            if run.info.run_id == self.parent_run_id:
                continue
            if run.data.tags.get(mr.SLOT_TAG) in seen:
                continue
            mr.finish_run(self.client, run.info.run_id, "KILLED", "left running by an interrupted driver")
        return errored


RACE_STOPPED = {"gitsweep.stopped_by": "race"}  # a repeat of a group the race dropped, stopped before its end
