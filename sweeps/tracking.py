"""MLflow records of a sweep, written from the Ray driver only.

`SweepTracker` knows the parent run and finds (or creates) the nested run of a trial by its tags
(`gitsweep.sweep`, `gitsweep.role`, `gitsweep.trial_id`), so a restored trial continues its own run and
a retried trial never leaves a twin. `MlflowCallback` feeds it from Tune's callback hooks; after
`fit()` the runner calls `reconcile()` so no run is left RUNNING (a driver killed mid-sweep leaves
some that way; the next `resume` closes them). Trials write nothing to MLflow themselves: with one
writer, the default SQLite store sees no lock contention however many trials run at once.

Per-epoch metrics are buffered and written every FLUSH_S seconds, one log_batch per run: a write costs
the driver about the same CPU (SQLite) or round trip (`mlflow server`) for one epoch as for twenty, and
on a small machine that CPU comes out of the trials. The buffer is also written before every Tune
experiment snapshot (`MlflowCallback.get_state`), so what a killed driver loses is only results after
the last snapshot, and those the resumed trials train and report again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ray import tune

from gitlib.configs import flatten, to_dict
from gitlib.tracking import mlflow_runs as mr
from sweeps import trainables

# Result keys worth logging: everything namespaced (train/, val/, test/, ekld/, loss/, ...) plus lr.
SKIP_PREFIXES = ("config/", "generator/", "trial/final", "trial/device")
PLAIN_KEYS = ("lr", "epoch", "iteration")
FLUSH_S = 5.0  # longest a per-epoch metric point waits in the driver before it is written


def trial_error(trial: Any) -> str:
    """The last line of a failed trial's traceback: the exception and its reason."""
    text = ""
    for where in ("error_file", "path"):  # driver staging copy (needs Ray), then the storage copy
        try:
            path = getattr(trial, where, None)
        except Exception:  # error_file needs a live Ray session; status / report run without one
            continue
        if path and where == "path":
            path = Path(path, trial.run_metadata.error_filename or "error.txt")
        if path and Path(path).is_file():
            text = Path(path).read_text(errors="replace")
            break
    text = text or str(getattr(trial, "error_msg", "") or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


class SweepTracker:
    """MLflow writes of one sweep (picklable: the client is made lazily in each process)."""

    def __init__(self, uri: str, experiment: str, sweep: str, base: dict[str, Any],
                 artifact_root: str | None, parent_run_id: str | None = None) -> None:
        self.uri, self.experiment, self.sweep, self.base = uri, experiment, sweep, base
        self.artifact_root = artifact_root
        self.parent_run_id = parent_run_id
        self._client: Any = None
        self._exp_id: str | None = None
        self._runs: dict[str, str] = {}
        self._final: set[str] = set()
        self._generators: set[str] = set()
        self._device_tagged: set[str] = set()
        self._pending: dict[str, list[Any]] = {}  # run id -> metric points not yet written
        self._flushed_at = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _exp_id=None, _runs={}, _final=set(), _generators=set(), _device_tagged=set(),
                     _pending={})
        return state

    def flush(self) -> None:
        """Write the buffered metric points: one log_batch per run."""
        pending, self._pending = self._pending, {}
        for run_id, points in pending.items():
            mr.log_points(self.client, run_id, points)
        self._flushed_at = time.monotonic()

    def flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._flushed_at >= FLUSH_S:
            self.flush()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mr.client(self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._exp_id is None:
            self._exp_id = mr.ensure_experiment(self.client, self.experiment, self.artifact_root)
        return self._exp_id

    # ---- parent ---------------------------------------------------------------------------------

    def open_parent(self, config_yaml: str) -> str:
        """Create (or reopen, on resume) the sweep's parent run with config and provenance."""
        tags = {mr.SWEEP_TAG: self.sweep, mr.ROLE_TAG: "sweep"}
        run_id = self.parent_run_id
        if run_id is None:
            run_id, created = mr.get_or_create_run(self.client, self.experiment_id, tags, run_name=self.sweep,
                                                   extra_tags=mr.provenance_tags())
            if created:
                flat = flatten(self.base)
                mr.log_params(self.client, run_id, {k: v for k, v in flat.items() if not k.startswith("search.space")})
                mr.log_params(self.client, run_id, {"search.space": json.dumps(self.base["search"]["space"])})
                mr.log_config_artifact(self.client, run_id, config_yaml)
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

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

    # ---- trials ---------------------------------------------------------------------------------

    @property
    def role(self) -> str:
        return "generator" if self.base.get("trial") == "generator" else "classifier"

    def trial_run(self, trial_id: str, config: dict[str, Any]) -> str:
        if trial_id in self._runs:
            return self._runs[trial_id]
        tags = {mr.SWEEP_TAG: self.sweep, mr.ROLE_TAG: self.role, mr.TRIAL_TAG: trial_id}
        run_id, created = mr.get_or_create_run(self.client, self.experiment_id, tags, run_name=f"trial_{trial_id}",
                                               parent_run_id=self.parent_run_id, extra_tags=mr.provenance_tags())
        if created:
            cfg = trainables.trial_config(self.base, config)
            mr.log_params(self.client, run_id, flatten(to_dict(cfg)))
            for key, value in config.items():  # the searched values, easy to filter on in the UI
                self.client.set_tag(run_id, f"gitsweep.param.{key}", str(value))
        elif self._has_error(run_id):  # restarted after a failure: the old reason no longer holds
            self.client.delete_tag(run_id, mr.ERROR_TAG)
        self._runs[trial_id] = run_id
        return run_id

    def log_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        run_id = self.trial_run(trial_id, config)
        step = int(result.get("epoch") or result.get("iteration") or result.get("training_iteration") or 0)
        values = {k: v for k, v in result.items()
                  if ("/" in k and not k.startswith(SKIP_PREFIXES)) or k in PLAIN_KEYS}
        self._pending.setdefault(run_id, []).extend(mr.metric_points(values, step))
        device = result.get("trial/device")
        if device and trial_id not in self._device_tagged:  # where the trial ran (GPU name, or CPU threads)
            self.client.set_tag(run_id, mr.DEVICE_TAG, str(device))
            self._device_tagged.add(trial_id)
        digest, folder = result.get("generator/digest"), result.get("generator/folder")
        if digest and folder and digest not in self._generators:
            self.log_generator(str(digest), Path(str(folder)))

    def log_final(self, trial_id: str, config: dict[str, Any], checkpoint: Any) -> bool:
        """Final metrics and artifacts from the trial's last checkpoint, once (tagged when done)."""
        if checkpoint is None or trial_id in self._final:
            return False
        run_id = self.trial_run(trial_id, config)
        self.flush()  # the run's metrics as logged, to tell what the final result still lacks
        run = self.client.get_run(run_id)
        if mr.FINAL_TAG in run.data.tags:
            self._final.add(trial_id)
            return False
        with checkpoint.as_directory() as d:
            folder = Path(d)
            if not (folder / trainables.FINAL).is_file():
                return False
            final = json.loads((folder / trainables.FINAL).read_text())
            step = int(final.get("epoch") or final.get("iteration") or 0)
            # Normally the last result already carried these; log only what a killed driver missed.
            missing = {k: v for k, v in final.items() if "/" in k and k not in run.data.metrics}
            mr.log_metrics(self.client, run_id, missing, step=step)
            if (folder / trainables.PER_CLASS).is_file():
                import pyarrow.parquet as pq

                png = folder / trainables.EKLD_PNG
                mr.log_per_class(self.client, run_id, pq.read_table(folder / trainables.PER_CLASS),
                                 png if png.is_file() else None)
            if (folder / "samples.png").is_file():
                self.client.log_artifact(run_id, str(folder / "samples.png"))
        self.client.set_tag(run_id, mr.FINAL_TAG, "true")
        self._final.add(trial_id)
        return True

    def finish_trial(self, trial_id: str, config: dict[str, Any], status: str, error: str | None = None) -> None:
        self.flush()
        mr.finish_run(self.client, self.trial_run(trial_id, config), status, error)

    # ---- shared generators ----------------------------------------------------------------------

    def log_generator(self, digest: str, folder: Path) -> None:
        """One nested generator run per generator used by this sweep: losses, quality, sample grid."""
        from sweeps.generator_store import READY, StoredGenerator

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

    # ---- after fit() / on resume ----------------------------------------------------------------

    def reconcile(self, trials: list[Any]) -> int:
        """Bring every trial's run to its Tune state; returns how many errored. Runs of this sweep
        still RUNNING without a live trial (a killed driver's) are closed as KILLED."""
        self.flush()
        errored = 0
        seen: set[str] = set()
        for t in trials:
            status = t.status
            seen.add(t.trial_id)
            if status == "TERMINATED":
                self.log_final(t.trial_id, t.config, t.checkpoint)
                self.finish_trial(t.trial_id, t.config, "FINISHED")
            elif status == "ERROR":
                errored += 1
                self.finish_trial(t.trial_id, t.config, "FAILED", trial_error(t))
            elif t.trial_id in self._runs or mr.find_run(self.client, self.experiment_id, self._tags(t.trial_id)):
                self.finish_trial(t.trial_id, t.config, "KILLED", f"trial left {status} when the sweep stopped")
        where = f"tags.`{mr.SWEEP_TAG}` = '{self.sweep}' and attributes.status = 'RUNNING'"
        for run in self.client.search_runs([self.experiment_id], filter_string=where, max_results=1000):
            if run.info.run_id == self.parent_run_id:
                continue
            if run.data.tags.get(mr.TRIAL_TAG) in seen and run.data.tags.get(mr.ROLE_TAG) != "generator":
                continue
            mr.finish_run(self.client, run.info.run_id, "KILLED", "left running by an interrupted driver")
        return errored

    def _tags(self, trial_id: str) -> dict[str, str]:
        return {mr.SWEEP_TAG: self.sweep, mr.ROLE_TAG: self.role, mr.TRIAL_TAG: trial_id}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class MlflowCallback(tune.Callback):
    """Tune hooks -> SweepTracker, plus one progress line per trial result on stdout."""

    SHOW = ("train/loss", "val/balanced_acc", "test/balanced_acc", "ekld/tail", "loss/gen_total")

    def __init__(self, tracker: SweepTracker, epochs: int) -> None:
        self.tracker = tracker
        self.epochs = epochs
        self._final_due: dict[str, bool] = {}  # trial id -> its latest result carried the final metrics

    def _say(self, trial: Any, text: str) -> None:
        params = " ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in sorted(trial.config.items()))
        print(f"[{time.strftime('%H:%M:%S')}] {trial.trial_id} {text}  ({params})", flush=True)
        sys.stdout.flush()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.trial_run(trial.trial_id, trial.config)
        self._say(trial, "started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.tracker.log_result(trial.trial_id, trial.config, result)
        self._final_due[trial.trial_id] = bool(result.get(trainables.FINAL_KEY))
        if "epoch" in result:
            head = f"epoch {int(result['epoch'])}/{self.epochs}"
        else:
            head = f"iteration {int(result.get('iteration', result.get('training_iteration', 0)))}"
        shown = " ".join(f"{k} {_fmt(result[k])}" for k in self.SHOW if k in result)
        self._say(trial, f"{head} {shown}")

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Only the final report's checkpoint has artifacts to log: skip the per-epoch ones (driver CPU on a
        # small machine). on_trial_complete logs the final anyway if this callback order ever differs.
        if self._final_due.pop(trial.trial_id, False):
            self.tracker.log_final(trial.trial_id, trial.config, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.log_final(trial.trial_id, trial.config, trial.checkpoint)
        self.tracker.finish_trial(trial.trial_id, trial.config, "FINISHED")
        self._say(trial, "finished")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, f"failed, retrying from its last checkpoint: {trial_error(trial)}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.tracker.flush_if_due()  # Tune's loop steps at least every 0.1 s, results or not

    def get_state(self) -> dict | None:
        # Tune calls this while writing its experiment snapshot, the state a resume restores: the metrics
        # of every result the snapshot covers are written first. Nothing of ours to save in it.
        self.tracker.flush()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.tracker.flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = trial_error(trial)
        self.tracker.finish_trial(trial.trial_id, trial.config, "FAILED", reason)
        self._say(trial, f"FAILED: {reason}")
