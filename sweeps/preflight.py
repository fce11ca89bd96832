"""Pre-flight: every data source a command can read, checked from file headers before anything starts.

`run`, `resume`, `train classifier|generator` and `data build` call `preflight` once the config has
validated, before Ray starts, torch loads or anything is written: a missing root or a corrupt file is
then one line naming the file (exit 2) instead of a sweep whose trials all fail. Only `dataset.source`
and `dataset.root` decide which files are read; the other dataset keys change the recipe, not the files.
Torch-free: `gitlib.data.sources` checks headers, dtypes and shapes without reading whole arrays.

On a Ray cluster (`--address`) the trials run on other machines, which may not see what the driver's
host sees (a file system mounted on some nodes only, a path under a home that differs per node):
`preflight_on_nodes` runs the same check as a task pinned to every node that can take a trial, before
the sweep writes anything, and a miss names the node and the path.
"""

from __future__ import annotations

import socket
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


# ---- where the trials run ----------------------------------------------------------------------------

NODE_TIMEOUT_S = 120.0  # a node whose check has not answered by then is reported unchecked


def check_here(cfg: SweepConfig) -> tuple[str, str] | None:
    """The pre-flight on this machine, as a Ray task runs it: None, or (path, what is wrong)."""
    try:
        preflight(cfg)
    except DataError as exc:
        return exc.path, exc.message
    return None


def _fits(node: dict[str, Any], cfg: SweepConfig) -> bool:
    """Whether the node has the CPUs and GPUs of one trial (resources.*): Tune can place a trial there."""
    have = node.get("Resources", {})
    return bool(node.get("Alive")) and have.get("CPU", 0) >= cfg.resources.cpu and \
        have.get("GPU", 0) >= cfg.resources.gpu


def _node_name(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')} ({node.get('NodeManagerHostname', '?')}, id {node['NodeID'][:8]})"


def preflight_on_nodes(cfg: SweepConfig) -> list[str]:
    """The pre-flight as a task on every alive node that can take a trial (connected to a cluster). A miss
    is a DataError naming the node and the path; returns a note for each node it could not check (no
    answer in NODE_TIMEOUT_S, or the task itself failed there): nodes an autoscaler adds later are not
    checked either. Each task asks for no CPU, so a node busy with other work answers at once."""
    if not kind_of(cfg.trial).data or all(root is None for _, root in data_sources(cfg)):
        return []  # nothing on a file system to see or miss (digits ships with scikit-learn)
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if _fits(n, cfg)]
    task = ray.remote(num_cpus=0, max_retries=0)(check_here)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(cfg): n
            for n in nodes}
    done, late = ray.wait(list(refs), num_returns=len(refs), timeout=NODE_TIMEOUT_S)
    notes = [f"pre-flight: node {_node_name(refs[r])} did not answer in {NODE_TIMEOUT_S:.0f} s: its data "
             "sources are unchecked" for r in late]
    for ref in done:
        try:
            miss = ray.get(ref)
        except Exception as exc:  # the task could not run there (its Python, its gitsweep): trials would fail too
            notes.append(f"pre-flight: could not check node {_node_name(refs[ref])}: {type(exc).__name__}")
            continue
        if miss is not None:  # the driver's own pre-flight passed: this node sees something else
            raise DataError(miss[0], f"{miss[1]}, on node {_node_name(refs[ref])}, where trials run (the "
                                     f"driver's host {socket.gethostname()} sees it: is it there on every node?)")
    return notes
