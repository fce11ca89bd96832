"""Long-tailed data sets with known nuisances: profiles, nuisances, real sources, a Parquet store.

Heavy modules (torch, torchvision, pyarrow, sklearn) load only when their function is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gitlib.data.spec import DatasetSpec

__all__ = [
    "BuiltDataset",
    "DatasetSpec",
    "Nuisance",
    "SourceArrays",
    "class_counts",
    "get_dataset",
    "get_nuisance",
    "load_source",
    "nuisance_for_spec",
]

_LAZY = {
    "BuiltDataset": "gitlib.data.dataset",
    "Nuisance": "gitlib.data.nuisances",
    "get_nuisance": "gitlib.data.nuisances",
    "nuisance_for_spec": "gitlib.data.nuisances",
    "class_counts": "gitlib.data.profiles",
    "SourceArrays": "gitlib.data.sources",
    "load_source": "gitlib.data.sources",
    "get_dataset": "gitlib.data.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gitlib.data' has no attribute {name!r}")
