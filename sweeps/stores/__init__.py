"""Shared stores of a sweep's storage: built data sets and trained generators, each made once and reused
by every trial (and single run) that needs it. A POSIX storage folder uses the local stores directly; a
storage URI (`s3://...`) goes through the local cache with a cluster-wide lock (sweeps.stores.remote)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps import paths

if TYPE_CHECKING:
    import torch

    from gitlib.data.dataset import BuiltDataset
    from sweeps.config import SweepConfig
    from sweeps.stores.generators import StoredGenerator


def dataset_for(cfg: SweepConfig) -> BuiltDataset:
    """The built data set of `cfg.dataset` from the storage's shared store, built first if absent."""
    uri = paths.storage_uri(cfg.storage)
    if uri is None:
        from gitlib.data.builds import get_dataset

        return get_dataset(cfg.dataset, paths.local_root(cfg.storage))
    from sweeps.stores import remote

    return remote.get_dataset(cfg.dataset, uri)


def generator_for(cfg: SweepConfig, data: BuiltDataset, device: torch.device) -> StoredGenerator:
    """The shared generator for the data set and `cfg.generator`: trained once, waited for, or reused."""
    uri = paths.storage_uri(cfg.storage)
    if uri is None:
        from sweeps.stores.generators import get_generator

        return get_generator(cfg.generator, data, paths.local_root(cfg.storage), device)
    from sweeps.stores import remote

    return remote.get_generator(cfg.generator, data, uri, device)
