"""The search space: `search.space` as Optuna distributions, the grid sampler's grid, and how many
configurations a search proposes. Ray-free (the report reads it); Optuna loads when used."""

from __future__ import annotations

import math
from typing import Any

from gitlib.errors import ConfigError
from sweeps.config import ParamSpace, SearchConfig


def distributions(search: SearchConfig) -> dict[str, Any]:
    """`search.space` as Optuna distributions keyed by dotted config path."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, p in search.params().items():
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


def grid_size(search: SearchConfig) -> int | None:
    """Points in the grid sampler's grid (None for the other samplers)."""
    if search.sampler != "grid":
        return None
    return math.prod(len(grid_values(k, p)) for k, p in search.params().items())


def configurations(search: SearchConfig) -> int:
    """Configurations the search proposes: num_samples, at most the grid's size with the grid sampler."""
    return min(search.num_samples, grid_size(search) or search.num_samples)
