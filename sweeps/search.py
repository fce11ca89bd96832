"""Search space -> Optuna sampler -> groups of repeats, raced or not (+ optional ASHA) -> a Tune `TuneConfig`.

Samplers and schedulers are registry entries (sweeps.config.SAMPLERS / SCHEDULERS): TPE (default, also
multi-objective), random, grid (every key categorical, int or float with a step) and NSGA-II
(multi-objective); no scheduler, or ASHA. Several `search.metric`s make the study multi-objective; "best"
in summaries and reports then means the first metric. Every configuration runs as a group of up to
`search.repeats` trials (one trial when 1); with `search.racing` a group may be dropped early
(sweeps.race). The Optuna study, in SQLite next to the sweep, holds one trial per group with the group
statistic (`search.group_stat`) as its values.

The search's state lives in an append-only log (sweeps.search_state), written before each change takes
effect, so a sweep killed at any moment resumes from exactly where it was: Tune's own experiment snapshot
(every few seconds) only tells which trials Tune will restore, and the repeats it lost are run again.
The sampler is seeded anew for every configuration from `search.seed` and the configuration's index, so a
resumed search proposes what an uninterrupted one would, never the first proposals over again.
"""

from __future__ import annotations

import math
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from gitlib.errors import ConfigError
from sweeps import results as rs
from sweeps.config import SAMPLERS, SCHEDULERS, SearchConfig, SweepConfig, race_plan
from sweeps.kinds import kind_of, steps_of
from sweeps.paths import study_storage
from sweeps.race import NEW, Race
from sweeps.search_state import FILE, LogReader, SearchState
from sweeps.space import configurations, distributions, grid_values

# ---- samplers (registry entries of sweeps.config.SAMPLERS) ----------------------------------------------
# (search config, index of the configuration to propose) -> an Optuna sampler. A fresh sampler proposes
# each configuration, seeded by (search.seed, index): its proposals depend on the study and the index
# alone, so a resumed search goes on where the killed one was instead of repeating its first proposals.

def _seed(search: SearchConfig, index: int) -> int:
    return int(np.random.SeedSequence([search.seed, index]).generate_state(1)[0])


def tpe_sampler(search: SearchConfig, index: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=_seed(search, index), multivariate=True)


def random_sampler(search: SearchConfig, index: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=_seed(search, index))


def grid_sampler(search: SearchConfig, index: int) -> Any:
    """The grid is shuffled by the seed, so every proposal uses search.seed itself: the same order each
    time, and the next point is drawn from the ones the study has not started."""
    import optuna

    return optuna.samplers.GridSampler({k: grid_values(k, p) for k, p in search.params().items()}, seed=search.seed)


def nsga2_sampler(search: SearchConfig, index: int) -> Any:
    import optuna

    if len(search.metric) < 2:
        raise ConfigError("search.sampler", "nsga2 is for several metrics (multi-objective)")
    return optuna.samplers.NSGAIISampler(seed=_seed(search, index))


def sampler(search: SearchConfig, index: int = 0) -> Any:
    """The sampler that proposes configuration number `index`."""
    return SAMPLERS.get(search.sampler)(search, index)


def check(cfg: SweepConfig) -> None:
    """Raise ConfigError for a search setup that cannot run, before anything starts."""
    distributions(cfg.search)
    sampler(cfg.search)


def repeat_base(cfg: SweepConfig) -> int:
    """The configured value of the repeat key: repeat r of every group uses base + r."""
    return int(cfg.seed if cfg.search.repeat_over == "seed" else cfg.dataset.instance)


class GroupSearch(Searcher):
    """Optuna's ask / tell over groups of repeats, raced or not (sweeps.race decides which repeat runs next
    and which groups are dropped). Repeat r of a group sets the repeat key to base + r. Optuna is told one
    value per objective, the group statistic over the finished repeats, when the group is dropped or its
    last repeat has ended; a group whose repeats all failed is told as failed."""

    def __init__(self, cfg: SweepConfig, storage: str | None, study_name: str, root: Path | None = None) -> None:
        s = cfg.search
        super().__init__(metric=s.metric[0], mode=s.mode[0])
        self.search = s
        self.objectives = list(zip(s.metric, s.mode, strict=True))
        self.race = Race(race_plan(cfg))
        self.recorded = list(dict.fromkeys([*s.metric, self.race.plan.metric]))  # what a repeat's result keeps
        self.space, self.points = distributions(s), [dict(p) for p in s.points_to_evaluate]
        self.repeat_key, self.base = s.repeat_over, repeat_base(cfg)
        self.configs = configurations(s)
        self.storage, self.study_name = storage, study_name
        self.log_path = root / FILE if root is not None else None
        self.state = SearchState.load(self.log_path) if self.log_path else SearchState()
        self.budget_s = s.time_budget_s
        self.max_concurrent: int | None = None  # set by Tune (set_max_concurrency); None: no limit
        self._study: Any = None
        self._deadline: float | None = None  # this session's: the budget counts from when it starts
        self._resumed = bool(self.state.groups)  # a log to go on from: some repeats may be lost
        self._tune_known: set[str] = set()  # the trials Tune's restored snapshot holds
        self._lost: list[tuple[str, int]] = []
        self._adopt: list[int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the log is the state; a database connection does not pickle
        return {**self.__dict__, "_study": None, "_deadline": None, "state": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled by a restored Tuner: the state is the log's, and the repeats handed to trials that
        Tune's snapshot does not hold (`restore` says which it holds) are run again."""
        self.__dict__.update(state)
        self.state = SearchState.load(self.log_path) if self.log_path else SearchState()
        self._resumed, self._tune_known, self._lost, self._adopt = True, set(), [], None

    # ---- Tune's Searcher interface ----------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the objectives come from the sweep config

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        # Tune's ConcurrencyLimiter forgets a trial once it has ended, and then drops the end of a trial
        # that `resume --restart-errored` runs again: Optuna would never hear of the restarted repeat.
        # True: the search counts its running repeats itself, and the limiter passes every call through.
        self.max_concurrent = max_concurrent
        return True

    def _busy(self) -> int:
        """Repeats running now: handed to a trial and not ended, less those whose trials Tune lost."""
        running = sum(rep.status == "RUNNING" for g in self.state.groups.values() for rep in g.repeats.values())
        return running - len(self._lost)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._resumed:
            self._find_lost()
        if self.out_of_time():
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel: no more trials
        limit = getattr(self, "max_concurrent", None)
        if limit is not None and self._busy() >= limit:
            return None
        slot = self._next_slot()
        if slot is None:
            done = self.race.done(self.state, self._can_add())
            return Searcher.FINISHED if done else None  # type: ignore[return-value]
        gid, r = slot
        self.state.assign(gid, r, trial_id)  # logged before Tune learns of the trial
        config = {**self.state.groups[gid].params, rs.GROUP_KEY: gid, rs.REPEAT_KEY: r}
        if self.race.plan.repeats > 1:
            config[self.repeat_key] = self.base + r
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._resumed:
            self._find_lost()
        if trial_id not in self.state.trial_slot and result:
            self._restarted(trial_id, result)
        if error:
            status, values = "ERROR", None
        elif result and result.get(rs.FINAL_KEY):
            status, values = "TERMINATED", {m: float(result.get(m, math.nan)) for m in self.recorded}
        else:
            status, values = "STOPPED", None  # stopped before its final result (by the race)
        if not self.state.end(trial_id, status, values):
            return
        self.race.decide(self.state)
        self._tell_due()

    def _restarted(self, trial_id: str, result: dict) -> None:
        """`resume --restart-errored`: Tune runs a failed trial again as a new trial (a new id, the same
        config). Its repeat is handed to it, so its end counts and its group is told again."""
        gid, r = result.get(f"config/{rs.GROUP_KEY}"), result.get(f"config/{rs.REPEAT_KEY}")
        group = self.state.groups.get(str(gid))
        if group is not None and r is not None and group.repeats.get(int(r)) is not None \
                and group.repeats[int(r)].status == "ERROR":
            self.state.assign(str(gid), int(r), trial_id)

    def save(self, checkpoint_path: str) -> None:
        # Tune asks for it with every experiment snapshot; the search's state is in its own log already.
        Path(checkpoint_path).write_bytes(pickle.dumps({"log": str(self.log_path)}))

    def restore(self, checkpoint_path: str) -> None:
        pass  # the log is read when Tune unpickles the searcher (__setstate__)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Called by a restored Tuner once it has read its experiment snapshot (into `checkpoint_dir`): the
        trials that snapshot holds are the ones Tune will run or knows ended. A trial created just before
        the snapshot but not yet started can be missing from it, so this reads the snapshot itself."""
        import json

        from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

        newest = _find_newest_experiment_checkpoint(checkpoint_dir)
        if newest is not None:
            data = json.loads(Path(newest).read_text())
            self._tune_known = {json.loads(state)["trial_id"] for state, _ in data.get("trial_data", [])}

    # ---- the plan -----------------------------------------------------------------------------------

    def out_of_time(self) -> bool:
        """Past `search.time_budget_s` of this session: no new trials (the running ones are asked to stop)."""
        if self.budget_s is None:
            return False
        if self._deadline is None:
            self._deadline = time.monotonic() + self.budget_s
        return time.monotonic() >= self._deadline

    def _can_add(self) -> bool:
        return len(self.state.groups) < self.configs

    def _next_slot(self) -> tuple[str, int] | None:
        while self._lost:
            gid, r = self._lost.pop(0)
            if not self.state.dropped(gid):
                return gid, r
            self.state.end(self.state.repeat(gid, r).trial_id, "STOPPED", None)
        while True:
            slot = self.race.next_slot(self.state, self._can_add())
            if slot != NEW:
                return slot
            self._new_group()

    def _find_lost(self) -> None:
        """After a resume: the repeats handed to trials Tune's snapshot does not hold (started after it)
        are run again first, under new trial ids."""
        self._resumed = False
        for gid, g in self.state.groups.items():
            for r, rep in sorted(g.repeats.items()):
                if rep.status == "RUNNING" and rep.trial_id not in self._tune_known:
                    self._lost.append((gid, r))
        self.race.decide(self.state)  # decisions a kill cut short (deterministic in the state)
        self._tell_due()

    # ---- Optuna ---------------------------------------------------------------------------------------

    @property
    def study(self) -> Any:
        if self._study is None:
            import optuna

            directions: list[Any] = ["maximize" if m == "max" else "minimize" for _, m in self.objectives]
            self._study = optuna.create_study(storage=self.storage, study_name=self.study_name, load_if_exists=True,
                                              directions=directions, sampler=sampler(self.search))
            if not self._study.trials:
                with warnings.catch_warnings():  # experimental since Optuna 3.2, and still the way to name them
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._study.set_metric_names([m for m, _ in self.objectives])  # named in optuna-dashboard
                for point in self.points:
                    self._study.enqueue_trial(point)
        return self._study

    def _new_group(self) -> str:
        """Ask Optuna for the next configuration (or adopt one it was asked for before a kill)."""
        import optuna

        if self._adopt is None:  # trials asked before a kill that no group holds
            held = {g.number for g in self.state.groups.values()}
            running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            self._adopt = sorted(t.number for t in running if t.number not in held)
        gid = f"g{len(self.state.groups):04d}"
        if self._adopt:
            number = self._adopt.pop(0)
            params = dict(self.study.trials[number].params)
        else:
            self.study.sampler = sampler(self.search, len(self.state.groups))
            trial = self.study.ask(self.space)
            number, params = trial.number, dict(trial.params)
        self._set_attrs(number, {"group_id": gid})  # the MLflow group run's id
        self.state.add_group(gid, number, params)
        return gid

    def _set_attrs(self, number: int, attrs: dict[str, Any]) -> None:
        """The trial's user attributes, in one transaction where the storage is a database: Optuna's public
        call commits each on its own (6-7 commits per told group, on Tune's loop)."""
        storage, study = self.study._storage, self.study
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        backend = getattr(storage, "_backend", storage)  # Optuna wraps a database storage in a cache
        batch = getattr(backend, "_set_trial_attr_without_commit", None)
        if batch is None or len(attrs) < 2:
            for k, v in attrs.items():
                storage.set_trial_user_attr(trial_id, k, v)
            return
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(backend.scoped_session, True) as session:
            for k, v in attrs.items():
                batch(session, models.TrialUserAttributeModel, trial_id, k, v)

    def _tell_due(self) -> None:
        """Tell Optuna every group that is dropped or whose repeats have all ended, once; a told group
        whose numbers changed since (a repeat restarted with --restart-errored) is told again."""
        for gid, g in self.state.groups.items():
            over = self.state.dropped(gid) or self.state.ended(g) >= self.race.plan.repeats
            if over and gid not in self.state.told:
                self._tell(g)

    def _tell(self, g: Any) -> None:
        import optuna

        values = [g.stats(m).value(self.search.group_stat, mode) for m, mode in self.objectives]
        d = self.state.decisions.get(g.group_id)
        attrs: dict[str, Any] = {"n": len(g.finished), "raced_out": bool(d and d.decision == "dropped"),
                 "p_value": None if d is None or math.isnan(d.p) else d.p}
        attrs.update({f"{m}/ci95": [g.stats(m).ci95_low, g.stats(m).ci95_high] for m, _ in self.objectives})
        # the values again, named and with their interval: optuna-dashboard's trial page lists values unnamed
        attrs.update({m: f"{v:.4f} ({self.search.group_stat} of {g.stats(m).n}) [95% CI {g.stats(m).ci95_low:.4f}, "
                         f"{g.stats(m).ci95_high:.4f}]" for v, (m, _) in zip(values, self.objectives, strict=True)})
        ok = all(math.isfinite(v) for v in values)
        try:
            self._set_attrs(g.number, attrs)
            if ok:
                self.study.tell(g.number, values)
            else:
                self.study.tell(g.number, state=optuna.trial.TrialState.FAIL)
        except (RuntimeError, ValueError):  # finished already: told before a kill, or told with older numbers
            if ok and self.study.trials[g.number].values != values:
                self._retell(g, values, attrs)
        self.state.mark_told(g.group_id)

    def _retell(self, g: Any, values: list[float], attrs: dict[str, Any]) -> None:
        """A finished Optuna trial cannot change: its group's new numbers go in as a new trial that says
        which one it supersedes."""
        import optuna

        old = self.study.trials[g.number].user_attrs  # with the group run's MLflow id (the tracker's)
        trial = optuna.trial.create_trial(params=g.params, distributions={k: self.space[k] for k in g.params},
                                          values=values, user_attrs={**old, **attrs, "group_id": g.group_id,
                                                                      "supersedes": g.number})
        self.study.add_trial(trial)
        g.number = self.study.trials[-1].number


class RaceScheduler(FIFOScheduler):
    """Stops the running repeats of a group the race has dropped, at their next result: they end without
    a final result, recorded as stopped by the race. Reads the drops from the search's log."""

    def __init__(self, log_path: str) -> None:
        super().__init__()
        self.log_path = log_path
        self._reader: LogReader | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self._reader is None:
            self._reader = LogReader(Path(self.log_path))
        if not result.get(rs.FINAL_KEY) and self._reader.dropped(str(trial.config.get(rs.GROUP_KEY))):
            return str(self.STOP)
        return str(self.CONTINUE)


class StoppingASHA(ASHAScheduler):
    """ASHA whose STOP asks the trial to stop (sweeps.trials.stops) instead of ending it: the trial then
    evaluates the model it has and reports its final metrics, tagged as stopped early. The rungs and the
    trials asked are saved next to the sweep as they change and read back when a resumed sweep unpickles
    the scheduler, so a resumed sweep stops the trials an uninterrupted one would."""

    def __init__(self, sweep: str, state_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from sweeps.trials.stops import ask_to_stop

        self.sweep, self.state_path = sweep, state_path
        self.asked: set[str] = set()
        self.ask = ask_to_stop  # how a STOP reaches the trial

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.trial_id in self.asked:
            return str(self.CONTINUE)  # already asked; its remaining results do not enter the rungs
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP and not result.get(rs.FINAL_KEY):
            self.asked.add(trial.trial_id)
            self.ask(self.sweep, [trial.trial_id])
            action = self.CONTINUE
        self._save()
        return str(action)

    def _save(self) -> None:
        state = {"rungs": [b._rungs for b in self._brackets], "asked": self.asked, "stopped": self._num_stopped}
        tmp = Path(f"{self.state_path}.tmp")
        tmp.write_bytes(pickle.dumps(state))
        tmp.replace(self.state_path)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "ask"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from sweeps.trials.stops import ask_to_stop

        self.__dict__.update(state)
        self.ask = ask_to_stop
        path = Path(self.state_path)
        if path.is_file():  # a resumed sweep: the rungs as they were when it stopped
            saved = pickle.loads(path.read_bytes())
            for bracket, rungs in zip(self._brackets, saved["rungs"], strict=True):
                bracket._rungs = rungs
            self.asked, self._num_stopped = saved["asked"], saved["stopped"]


# ---- schedulers (registry entries of sweeps.config.SCHEDULERS): (cfg, sweep folder) -> scheduler ----

def no_scheduler(cfg: SweepConfig, root: Path) -> Any:
    """Every trial runs to its end, except the repeats of a group the race drops (with search.racing)."""
    return RaceScheduler(str(root / FILE)) if cfg.search.racing is not None else None


def asha_scheduler(cfg: SweepConfig, root: Path) -> Any:
    s = cfg.search
    length = steps_of(kind_of(cfg.trial), cfg)
    return StoppingASHA(cfg.name, str(root / "asha.pkl"), metric=s.asha_metric, mode=s.asha_mode,
                        time_attr="training_iteration", grace_period=s.grace_period,
                        reduction_factor=s.reduction_factor, max_t=max(length, s.grace_period))


def make_scheduler(cfg: SweepConfig, root: Path) -> Any:
    return SCHEDULERS.get(cfg.search.scheduler)(cfg, root)


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def tune_config(cfg: SweepConfig, root: Path) -> tune.TuneConfig:
    searcher = GroupSearch(cfg, study_storage(cfg.search.storage, root), cfg.name, root)
    return tune.TuneConfig(
        search_alg=searcher,
        scheduler=make_scheduler(cfg, root),
        num_samples=searcher.configs * cfg.search.repeats,  # at most: configurations x repeats
        max_concurrent_trials=cfg.search.max_concurrent,
        # One worker process per concurrent slot, reused by the next trial: a trial then pays no
        # process start and no torch import (seconds each, against trials of tens of seconds).
        reuse_actors=True,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
