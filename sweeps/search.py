"""Search space -> Optuna distributions -> OptunaSearch (+ optional ASHA) -> a Tune `Tuner`.

Samplers: TPE (default, seeded; also multi-objective), random, grid (every key categorical, int or
float with a step) and NSGA-II (multi-objective). Several `search.metric`s make the study
multi-objective; "best" in summaries and reports then means the first metric.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from gitlib.errors import ConfigError
from sweeps.config import ParamSpace, SweepConfig


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


def check(cfg: SweepConfig) -> None:
    """Raise ConfigError for a search setup that cannot run, before anything starts."""
    distributions(cfg)
    sampler(cfg)
    if cfg.search.sampler == "nsga2" and len(cfg.search.metric) < 2:
        raise ConfigError("search.sampler", "nsga2 is for several metrics (multi-objective)")


class LenientOptunaSearch(OptunaSearch):
    """OptunaSearch that skips intermediate results lacking the objective: trials report the test
    metrics only with their last epoch; per-epoch results carry train/* and val/* only."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric in result:
            super().on_trial_result(trial_id, result)


def make_searcher(cfg: SweepConfig) -> LenientOptunaSearch:
    metric: list[str] = list(cfg.search.metric)
    mode: list[str] = list(cfg.search.mode)
    return LenientOptunaSearch(
        space=distributions(cfg),
        metric=metric if len(metric) > 1 else metric[0],
        mode=mode if len(mode) > 1 else mode[0],
        sampler=sampler(cfg),
        # Pinned keys left the space, so they leave the points too; a point needs every searched key.
        points_to_evaluate=[p for p in (dict(p) for p in cfg.search.points_to_evaluate)
                            if set(p) == set(cfg.search.space)] or None,
    )


def make_scheduler(cfg: SweepConfig) -> Any:
    if cfg.search.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(metric=cfg.search.asha_metric, mode=cfg.search.asha_mode, time_attr="training_iteration",
                         grace_period=cfg.search.grace_period, reduction_factor=cfg.search.reduction_factor,
                         max_t=max(cfg.classifier.epochs, cfg.search.grace_period))


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def tune_config(cfg: SweepConfig) -> tune.TuneConfig:
    return tune.TuneConfig(
        # No searched key (all pinned): num_samples repeats of the one config, no searcher needed.
        search_alg=make_searcher(cfg) if cfg.search.space else None,
        scheduler=make_scheduler(cfg),
        num_samples=cfg.search.num_samples,
        max_concurrent_trials=cfg.search.max_concurrent,
        time_budget_s=cfg.search.time_budget_s,
        # One worker process per concurrent slot, reused by the next trial: a trial then pays no
        # process start and no torch import (seconds each, against trials of tens of seconds).
        reuse_actors=True,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )


def disable_strict_metric_check() -> None:
    """Per-epoch results lack the test metrics the searcher optimises; Tune would reject them."""
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
