"""`gitsweep run` and `gitsweep resume`."""

from __future__ import annotations

import argparse

from sweeps.config import load_config, resolve_config
from sweeps.paths import find_sweep
from sweeps.preflight import preflight


def run(args: argparse.Namespace) -> int:
    from sweeps import driver, search

    cfg, pinned = resolve_config(args.config, args.overrides, args.name, args.storage, args.tracking_uri)
    values = cfg.flat()
    for key in pinned:
        print(f"pinned {key}={values.get(key)} (removed from search.space)", flush=True)
    search.check(cfg)  # every config problem surfaces here, before Ray starts or anything is written
    preflight(cfg)  # and every data source a trial can read
    return driver.start(cfg, args.address, explicit_name=bool(args.name), verbose=args.verbose)


def resume(args: argparse.Namespace) -> int:
    from sweeps import driver

    # The saved config's data may have moved or changed since the sweep started: check before Ray starts.
    preflight(load_config(str(find_sweep(args.sweep, args.storage).config))[0])
    return driver.resume(args.sweep, args.storage, args.restart_errored, args.address, args.verbose)


def sync(args: argparse.Namespace) -> int:
    """Write what MLflow lacks of a sweep (writes held while its server was away, final states, the report
    and the answer), from the sweep's index and kept results: no Ray, no torch."""
    from sweeps import connect, driver, results
    from sweeps.paths import load_meta
    from sweeps.report import write_report
    from sweeps.tracking import mlflow_runs as mr

    paths = find_sweep(args.sweep, args.storage)
    cfg, _ = load_config(str(paths.config))
    connect.log_to(connect.quiet_logs(), paths.log)  # MLflow's own lines go to the sweep's log
    tracker = driver.tracker_for(cfg, load_meta(paths)["parent_run_id"])
    records = results.read_index(paths.index)
    errored = driver.record(cfg, paths, tracker, records, write_report(cfg, paths, records))
    print(f"MLflow holds sweep {cfg.name}: {len(records)} trials, {errored} errored "
          f"({mr.redact_uri(tracker.uri)})")
    return 0
