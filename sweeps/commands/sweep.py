"""`gitsweep run` and `gitsweep resume`."""

from __future__ import annotations

import argparse

from gitlib.configs import flatten, to_dict
from sweeps.config import load_config, resolve_config
from sweeps.paths import find_sweep
from sweeps.preflight import preflight


def run(args: argparse.Namespace) -> int:
    from sweeps import driver, search

    cfg, pinned = resolve_config(args.config, args.overrides, args.name, args.storage, args.tracking_uri)
    values = flatten(to_dict(cfg))
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
