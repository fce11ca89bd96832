"""`gitsweep status`, `gitsweep report` and `gitsweep presets`: read a sweep without torch (and, for status
and presets, without Ray)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from gitlib.errors import ConfigError, DataError
from sweeps import results as rs
from sweeps.config import SweepConfig, load_config, preset_names, preset_text
from sweeps.paths import SweepPaths, find_sweep, load_meta

STATUS_METRICS = ("epoch", "val/balanced_acc", "test/balanced_acc", "ekld/head", "ekld/tail")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return "-" if v is None else str(v)


def trial_records(paths: SweepPaths) -> list[rs.TrialRecord]:
    """The sweep's trial index; rebuilt from Tune's saved experiment where a driver never wrote one."""
    records = rs.read_index(paths.index)
    if records or (paths.remote is None and not paths.tune.is_dir()):
        return records
    from sweeps.driver import tune_trials
    from sweeps.tracking.callback import TrialIndex

    return TrialIndex(paths).sync(tune_trials(paths))


def _state(r: rs.TrialRecord) -> str:
    return f"STOPPED EARLY (epoch {int(r.last.get('epoch', 0))})" if r.stopped_early else r.status


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *rows])


def status(args: argparse.Namespace) -> int:
    paths = find_sweep(args.sweep, args.storage)
    records = trial_records(paths)
    meta = load_meta(paths)
    print(f"sweep {meta['name']} ({paths.root}): {len(records)} trials")
    keys = sorted({k for r in records for k in rs.sampled_values(r.config)})
    header = ["trial", "state", *[k.split(".")[-1] for k in keys], *STATUS_METRICS]
    rows = [[r.trial_id, _state(r), *[_fmt(r.config.get(k)) for k in keys],
             *[_fmt(r.last.get(m)) for m in STATUS_METRICS]] for r in records]
    print(_table(header, rows))
    cfg, _ = load_config(str(paths.config))
    if cfg.search.repeats > 1:
        print(f"\ngroups: {cfg.search.repeats} repeats over {cfg.search.repeat_over}; mean ± 95% CI half-width")
        print(group_status(cfg, paths, records))
    errors = [f"  {r.trial_id}: {r.error}" for r in records if r.status == "ERROR"]
    if errors:
        print("errors:\n" + "\n".join(errors))
    return 0


GROUP_METRICS = ("test/balanced_acc", "ekld/head", "ekld/tail")


def group_status(cfg: SweepConfig, paths: SweepPaths, records: list[rs.TrialRecord]) -> str:
    """One line per group: searched values, repeats finished / total, mean ± CI of the key metrics."""
    from sweeps.group_stats import group_result, summarize

    by_group: dict[str, list[rs.TrialRecord]] = {}
    for r in records:
        by_group.setdefault(r.group_id, []).append(r)
    keys = sorted({k for r in records for k in rs.sampled_values(r.config) if k != cfg.search.repeat_over})
    header = ["group", *[k.split(".")[-1] for k in keys], "finished", *GROUP_METRICS]
    rows = []
    for gid, recs in sorted(by_group.items()):
        result = group_result(gid, recs, paths.results, cfg.search.repeat_over, per_class=False)
        cells = []
        for m in GROUP_METRICS:
            s = summarize(result.repeat_values(m).values())
            cells.append("-" if s.n == 0 else f"{s.mean:.4f}" + (f" ± {s.half_width:.4f}" if s.n > 1 else ""))
        rows.append([gid, *[_fmt(recs[0].config.get(k)) for k in keys],
                     f"{len(result.finals)}/{cfg.search.repeats}", *cells])
    return _table(header, rows)


def report(args: argparse.Namespace) -> int:
    from sweeps.report import write_report
    from sweeps.report.groups import parse_selector

    if bool(args.contrast) != bool(args.vs):
        raise ConfigError("--vs" if args.contrast else "--contrast", "a contrast needs both --contrast and --vs")
    selectors = (parse_selector(args.contrast, "--contrast"), parse_selector(args.vs, "--vs")) if args.vs else None
    paths = find_sweep(args.sweep, args.storage)
    cfg, _ = load_config(str(paths.config))
    if selectors and cfg.search.repeats < 2:
        raise ConfigError("--contrast", f"pairs the repeats of two groups, and sweep '{args.sweep}' ran one trial "
                          "per configuration (search.repeats: 1)")
    out = write_report(cfg, paths, trial_records(paths), selectors, args.group_by)
    print(f"report written to {out}")
    return 0


def presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        desc = next((ln.lstrip("# ").strip() for ln in preset_text(name).splitlines() if ln.startswith("#")), "")
        print(f"{name:<16} {desc}")
    return 0


def dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on 127.0.0.1 for the sweep's Optuna study (history, importances, parallel
    coordinates); runs until interrupted."""
    import optuna_dashboard

    paths = find_sweep(args.sweep, args.storage)
    cfg, _ = load_config(str(paths.config))
    storage = cfg.search.storage or f"sqlite:///{paths.root / 'optuna.db'}"
    if cfg.search.storage is None and not (paths.root / "optuna.db").is_file():
        raise DataError(str(paths.root / "optuna.db"), "no Optuna study here yet (has the sweep started?)")
    print(f"Optuna dashboard of study '{cfg.name}': http://127.0.0.1:{args.port}/dashboard (Ctrl-C stops it)",
          flush=True)
    optuna_dashboard.run_server(storage, host="127.0.0.1", port=args.port)
    return 0
