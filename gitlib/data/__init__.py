"""Long-tailed data sets with known nuisances: profiles, nuisances, real sources, content-addressed builds.

`DatasetSpec` and the registries (`SOURCES`, `NUISANCES`, `PROFILES`) load without torch; the rest loads on
first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gitlib.data.profiles import PROFILES, class_counts
from gitlib.data.sources import SOURCES, check_source
from gitlib.data.spec import NUISANCES, DatasetSpec

__all__ = [
    "NUISANCES",
    "PROFILES",
    "SOURCES",
    "BalancedSampler",
    "BuiltDataset",
    "DatasetSpec",
    "Nuisance",
    "SourceArrays",
    "check_source",
    "class_counts",
    "ensure_built",
    "get_dataset",
    "get_nuisance",
    "load_source",
    "nuisance_for_spec",
]

_LAZY = {
    "BuiltDataset": "gitlib.data.dataset",
    "BalancedSampler": "gitlib.data.sampling",
    "Nuisance": "gitlib.data.nuisances",
    "get_nuisance": "gitlib.data.nuisances",
    "nuisance_for_spec": "gitlib.data.nuisances",
    "SourceArrays": "gitlib.data.sources",
    "load_source": "gitlib.data.sources",
    "ensure_built": "gitlib.data.builds",
    "get_dataset": "gitlib.data.builds",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gitlib.data' has no attribute {name!r}")
