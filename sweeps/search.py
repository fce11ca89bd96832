"""Search space -> Optuna sampler -> groups of repeats (+ optional ASHA) -> a Tune `TuneConfig`.

Samplers: TPE (default, seeded; also multi-objective), random, grid (every key categorical, int or
float with a step) and NSGA-II (multi-objective). Several `search.metric`s make the study
multi-objective; "best" in summaries and reports then means the first metric. Every configuration runs
as a group of `search.repeats` trials (one trial when 1), and the Optuna study, in SQLite next to the
sweep, holds one trial per group with the group statistic (`search.group_stat`) as its values.
"""

from __future__ import annotations

import math
import pickle
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from gitlib.errors import ConfigError
from sweeps import results as rs
from sweeps.config import ParamSpace, SweepConfig
from sweeps.group_stats import group_value


def distributions(cfg: SweepConfig) -> dict[str, Any]:
    """`search.space` as Optuna distributions keyed by dotted config path."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, p in cfg.search.params().items():
        if p.type == "categorical":
            assert p.choices is not None
            out[key] = CategoricalDistribution(list(p.choices))
        elif p.type == "int":
            step = int(p.step or 1)
            out[key] = IntDistribution(int(p.low or 0), int(p.high or 0), step=step)
        elif p.type == "loguniform":
            if p.step:
                raise ConfigError(f"search.space.{key}.step", "loguniform takes no step")
            out[key] = FloatDistribution(float(p.low or 0), float(p.high or 0), log=True)
        else:
            out[key] = FloatDistribution(float(p.low or 0), float(p.high or 0), step=p.step)
    return out


def grid_values(key: str, p: ParamSpace) -> list[Any]:
    """The grid of one key: its choices, every int in range, or a float range cut by its step."""
    if p.type == "categorical":
        return list(p.choices or ())
    if p.step is None and p.type != "int":
        raise ConfigError(f"search.space.{key}", "grid sampler needs categorical, int or a float step")
    low, high = float(p.low or 0), float(p.high or 0)
    step = float(p.step or 1)
    n = math.floor((high - low) / step + 1e-9) + 1
    values = [low + i * step for i in range(n)]
    return [int(v) for v in values] if p.type == "int" else [round(v, 12) for v in values]


def sampler(cfg: SweepConfig) -> Any:
    import optuna

    s = cfg.search
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "grid":
        grid = {k: grid_values(k, p) for k, p in s.params().items()}
        return optuna.samplers.GridSampler(grid, seed=s.seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, multivariate=True)


def grid_size(cfg: SweepConfig) -> int | None:
    """Points in the grid sampler's grid (None for the other samplers)."""
    if cfg.search.sampler != "grid":
        return None
    return math.prod(len(grid_values(k, p)) for k, p in cfg.search.params().items())


def configurations(cfg: SweepConfig) -> int:
    """Configurations the search proposes: num_samples, at most the grid's size with the grid sampler."""
    return min(cfg.search.num_samples, grid_size(cfg) or cfg.search.num_samples)


def check(cfg: SweepConfig) -> None:
    """Raise ConfigError for a search setup that cannot run, before anything starts."""
    distributions(cfg)
    sampler(cfg)
    if cfg.search.sampler == "nsga2" and len(cfg.search.metric) < 2:
        raise ConfigError("search.sampler", "nsga2 is for several metrics (multi-objective)")


def study_storage(cfg: SweepConfig, root: Path) -> str:
    """The Optuna study's storage: `search.storage` (for teams, e.g. a database of its own on the MLflow
    server's PostgreSQL: Optuna's and MLflow's tables would collide in one), else SQLite next to the sweep."""
    return cfg.search.storage or f"sqlite:///{root / 'optuna.db'}"


@dataclass
class Group:
    """One configuration of the search and its repeats."""

    number: int  # the Optuna trial that proposed it
    params: dict[str, Any]
    trials: dict[int, str] = field(default_factory=dict)  # repeat -> Tune trial id
    values: dict[int, list[float] | None] = field(default_factory=dict)  # repeat -> objectives (None: failed)
    told: bool = False


class GroupSearch(Searcher):
    """Optuna's ask / tell over groups: every configuration it proposes runs as `search.repeats` Tune
    trials (repeat r sets the repeat key to base + r), and Optuna is told one value per objective, the
    group statistic over the finished repeats, when the last repeat ends. A group whose repeats all
    failed is told as failed. The state (groups, repeats handed out) is saved with Tune's experiment
    snapshot, and the study lives in a real storage, so a resumed sweep continues both."""

    def __init__(self, cfg: SweepConfig, storage: str, study_name: str) -> None:
        s = cfg.search
        super().__init__(metric=s.metric[0], mode=s.mode[0])
        self.objectives = list(zip(s.metric, s.mode, strict=True))
        self.space, self.points = distributions(cfg), [dict(p) for p in s.points_to_evaluate]
        self.repeats, self.stat = s.repeats, s.group_stat
        self.repeat_key, self.base = s.repeat_over, repeat_base(cfg)
        self.configs = configurations(cfg)
        self.storage, self.study_name, self.sampler = storage, study_name, sampler(cfg)
        self.groups: dict[str, Group] = {}
        self.trial_group: dict[str, tuple[str, int]] = {}
        self.queue: list[tuple[str, int]] = []  # repeats not handed to Tune yet
        self.adopt: list[int] = []  # Optuna trials asked before a crash that no group holds
        self.budget_s = s.time_budget_s
        self._study: Any = None
        self._deadline: float | None = None  # this session's: the budget counts from when it starts

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None, "_deadline": None}  # a database connection does not pickle

    def out_of_time(self) -> bool:
        """Past `search.time_budget_s` of this session: no new trials (the running ones are asked to stop)."""
        if self.budget_s is None:
            return False
        if self._deadline is None:
            self._deadline = time.monotonic() + self.budget_s
        return time.monotonic() >= self._deadline

    @property
    def study(self) -> Any:
        if self._study is None:
            import optuna

            directions: list[Any] = ["maximize" if m == "max" else "minimize" for _, m in self.objectives]
            self._study = optuna.create_study(storage=self.storage, study_name=self.study_name, load_if_exists=True,
                                              directions=directions, sampler=self.sampler)
            if not self._study.trials:
                with warnings.catch_warnings():  # experimental since Optuna 3.2, and still the way to name them
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._study.set_metric_names([m for m, _ in self.objectives])  # named in optuna-dashboard
                for point in self.points:
                    self._study.enqueue_trial(point)
        return self._study

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the objectives come from the sweep config

    def _new_group(self) -> str | None:
        if len(self.groups) >= self.configs:
            return None
        if self.adopt:
            number = self.adopt.pop(0)
            params = next(t.params for t in self.study.get_trials(deepcopy=False) if t.number == number)
        else:
            trial = self.study.ask(self.space)
            number, params = trial.number, dict(trial.params)
        gid = f"g{len(self.groups):04d}"
        trial_id = next(t._trial_id for t in self.study.get_trials(deepcopy=False) if t.number == number)
        self.study._storage.set_trial_user_attr(trial_id, "group_id", gid)  # the MLflow group run's id
        self.groups[gid] = Group(number, params)
        self.queue.extend((gid, r) for r in range(self.repeats))
        return gid

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.out_of_time():
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel: no more trials
        if not self.queue and self._new_group() is None:
            return None  # every configuration is out; Tune asks for exactly configurations x repeats
        gid, r = self.queue.pop(0)
        group = self.groups[gid]
        group.trials[r] = trial_id
        self.trial_group[trial_id] = (gid, r)
        config = {**group.params, rs.GROUP_KEY: gid, rs.REPEAT_KEY: r}
        if self.repeats > 1:
            config[self.repeat_key] = self.base + r
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.trial_group:
            return
        gid, r = self.trial_group[trial_id]
        group = self.groups[gid]
        values = [float((result or {}).get(m, math.nan)) for m, _ in self.objectives]
        group.values[r] = None if error or not result else values
        if len(group.values) == self.repeats and not group.told:
            self._tell(group)

    def group_values(self, group: Group) -> list[float] | None:
        """The statistic of each objective over the group's finished repeats; None if all failed."""
        done = [v for v in group.values.values() if v is not None]
        if not done:
            return None
        return [group_value([v[i] for v in done], self.stat, mode) for i, (_, mode) in enumerate(self.objectives)]

    def _tell(self, group: Group) -> None:
        import optuna

        values = self.group_values(group)
        group.told = True
        try:
            if values is None or not all(math.isfinite(v) for v in values):
                self.study.tell(group.number, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(group.number, values)
        except (RuntimeError, ValueError):  # told already, before a crash the snapshot did not see
            pass

    def save(self, checkpoint_path: str) -> None:
        state = {k: getattr(self, k) for k in ("groups", "trial_group", "queue", "adopt")}
        Path(checkpoint_path).write_bytes(pickle.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))
        import optuna

        held = {g.number for g in self.groups.values()} | set(self.adopt)
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        self.adopt += sorted(t.number for t in running if t.number not in held)


def repeat_base(cfg: SweepConfig) -> int:
    """The configured value of the repeat key: repeat r of every group uses base + r."""
    return int(cfg.seed if cfg.search.repeat_over == "seed" else cfg.dataset.instance)


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


def make_scheduler(cfg: SweepConfig, root: Path) -> Any:
    if cfg.search.scheduler != "asha":
        return None
    return StoppingASHA(cfg.name, str(root / "asha.pkl"), metric=cfg.search.asha_metric, mode=cfg.search.asha_mode,
                        time_attr="training_iteration", grace_period=cfg.search.grace_period,
                        reduction_factor=cfg.search.reduction_factor,
                        max_t=max(cfg.classifier.epochs, cfg.search.grace_period))


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def tune_config(cfg: SweepConfig, root: Path) -> tune.TuneConfig:
    searcher = GroupSearch(cfg, study_storage(cfg, root), cfg.name)
    return tune.TuneConfig(
        search_alg=searcher,
        scheduler=make_scheduler(cfg, root),
        num_samples=searcher.configs * searcher.repeats,  # trials: configurations x repeats
        max_concurrent_trials=cfg.search.max_concurrent,
        # One worker process per concurrent slot, reused by the next trial: a trial then pays no
        # process start and no torch import (seconds each, against trials of tens of seconds).
        reuse_actors=True,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
