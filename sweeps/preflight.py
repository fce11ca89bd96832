"""Pre-flight: every data source a command can read, checked from file headers before anything starts.

`run`, `resume`, `train classifier|generator` and `data build` call `preflight` once the config has
validated, before Ray starts, torch loads or anything is written: a missing root or a corrupt file is
then one line naming the file (exit 2) instead of a sweep whose trials all fail. Only `dataset.source`
and `dataset.root` decide which files are read; the other dataset keys change the recipe, not the files.
Torch-free: `gitlib.data.sources` checks headers, dtypes and shapes without reading whole arrays.
"""

from __future__ import annotations

from itertools import product
from typing import Any

from gitlib.data.sources import SOURCES, check_source
from gitlib.errors import DataError
from sweeps.config import SweepConfig
from sweeps.kinds import kind_of

FILE_KEYS = ("dataset.source", "dataset.root")


def _values(cfg: SweepConfig, key: str) -> list[Any]:
    """The configured value of `key` (what `train` and `data build` read), then every value a sweep can
    give it: each categorical choice and each warm-start point."""
    values = [getattr(cfg.dataset, key.removeprefix("dataset."))]
    spec = cfg.search.params().get(key)
    if spec is not None:
        # SweepConfig.validate has checked each proposal; for these string keys only choices pass it
        values += list(spec.choices or ())
        values += [point[key] for point in cfg.search.points_to_evaluate if key in point]
    return list(dict.fromkeys(values))  # unique, in order: the configured value is checked first


def data_sources(cfg: SweepConfig) -> list[tuple[str, str | None]]:
    """The distinct (source, root) pairs the config can read, the configured pair first. The sampler
    draws searched keys independently, so every searched source can meet every searched root."""
    pairs: list[tuple[str, str | None]] = []
    for source, root in product(_values(cfg, "dataset.source"), _values(cfg, "dataset.root")):
        needs_root = SOURCES.get(str(source)).needs_root
        pair = (str(source), str(root) if needs_root and root is not None else None)
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def preflight(cfg: SweepConfig) -> None:
    """Check every data source `cfg` can touch (root present, expected files present, headers, dtypes and
    shapes); DataError (exit 2) naming the file, and the searched values that lead to it."""
    if not kind_of(cfg.trial).data:
        return  # the kind reads no data set (MSR's task families and the synthetic objective are generated)
    searched = [key for key in FILE_KEYS if key in cfg.search.space]
    pairs = data_sources(cfg)
    for source, root in pairs:
        try:
            check_source(source, root)
        except DataError as exc:
            if not searched or (source, root) == pairs[0]:  # the configured pair: no search involved
                raise
            values = {"dataset.source": source, "dataset.root": root}
            where = ", ".join(f"{key}={values[key]!r}" for key in searched)
            raise DataError(exc.path, f"{exc.message} (search.space can set {where})") from None
