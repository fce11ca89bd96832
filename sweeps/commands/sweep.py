"""`gitsweep run` and `gitsweep resume`."""

from __future__ import annotations

import argparse

from gitlib.configs import flatten, to_dict
from sweeps.config import resolve_config


def run(args: argparse.Namespace) -> int:
    from sweeps import driver, search

    cfg, pinned = resolve_config(args.config, args.overrides, args.name, args.storage, args.tracking_uri)
    values = flatten(to_dict(cfg))
    for key in pinned:
        print(f"pinned {key}={values.get(key)} (removed from search.space)", flush=True)
    search.check(cfg)  # every config problem surfaces here, before Ray starts or anything is written
    return driver.start(cfg, args.address, explicit_name=bool(args.name))


def resume(args: argparse.Namespace) -> int:
    from sweeps import driver

    return driver.resume(args.sweep, args.storage, args.restart_errored, getattr(args, "address", None))
