"""Handlers of `gitsweep run | resume | status | report | presets` (wired in sweeps.cli)."""

from __future__ import annotations

import argparse
import math
from importlib import resources
from typing import Any

from gitlib.configs import flatten, to_dict
from sweeps.config import preset_names


def run(args: argparse.Namespace) -> int:
    from sweeps import runner, search

    cfg, pinned = runner.resolve_config(args.config, args.overrides, args.name, args.storage, args.tracking_uri)
    values = flatten(to_dict(cfg))
    for key in pinned:
        print(f"pinned {key}={values.get(key)} (removed from search.space)", flush=True)
    search.check(cfg)  # every config problem surfaces here, before Ray starts or anything is written
    return runner.start(cfg, args.address, explicit_name=bool(args.name))


def resume(args: argparse.Namespace) -> int:
    from sweeps import runner

    return runner.resume(args.sweep, args.storage, args.restart_errored, getattr(args, "address", None))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return "-" if v is None else str(v)


STATUS_METRICS = ("epoch", "val/balanced_acc", "test/balanced_acc", "ekld/head", "ekld/tail")


def status(args: argparse.Namespace) -> int:
    from sweeps import runner
    from sweeps.tracking import trial_error

    paths = runner.find_sweep(args.sweep, args.storage)
    trials = runner.load_trials(paths)
    meta = runner.load_meta(paths)
    print(f"sweep {meta['name']} ({paths.root}): {len(trials)} trials")
    keys = sorted({k for t in trials for k in (t.config or {})})
    header = ["trial", "state", *[k.split(".")[-1] for k in keys], *STATUS_METRICS]
    rows = []
    errors = []
    for t in trials:
        r = t.last_result or {}
        rows.append([t.trial_id, t.status, *[_fmt(t.config.get(k)) for k in keys],
                     *[_fmt(r.get(m)) for m in STATUS_METRICS]])
        if t.status == "ERROR":
            errors.append(f"  {t.trial_id}: {trial_error(t)}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    if errors:
        print("errors:")
        print("\n".join(errors))
    return 0


def report(args: argparse.Namespace) -> int:
    from sweeps import report as rep
    from sweeps import runner

    paths = runner.find_sweep(args.sweep, args.storage)
    out = rep.write_report(paths)
    print(f"report written to {out}")
    return 0


def presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        text = (resources.files("sweeps") / "presets" / f"{name}.yaml").read_text()
        desc = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
        print(f"{name:<16} {desc}")
    return 0
