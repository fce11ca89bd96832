"""`gitsweep status`, `gitsweep report` and `gitsweep presets`: read a sweep without torch (and, for status
and presets, without Ray)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from gitlib.errors import ConfigError, DataError
from sweeps import results as rs
from sweeps.config import SweepConfig, load_config
from sweeps.config_yaml import preset_names, preset_text
from sweeps.groups import collect, format_groups, table_text
from sweeps.kinds import kind_of
from sweeps.paths import SweepPaths, find_sweep, load_meta


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


def _state(r: rs.TrialRecord, step: str) -> str:
    if r.stopped_by_race:
        return "STOPPED (race)"
    return f"STOPPED EARLY ({step} {int(r.last.get(step, 0))})" if r.stopped_early else r.status


def status(args: argparse.Namespace) -> int:
    paths = find_sweep(args.sweep, args.storage)
    records = trial_records(paths)
    meta = load_meta(paths)
    cfg, _ = load_config(str(paths.config))
    kind = kind_of(cfg.trial)
    print(f"sweep {meta['name']} ({paths.root}): {len(records)} trials")
    keys = sorted({k for r in records for k in rs.sampled_values(r.config)})
    shown = [kind.step, *dict.fromkeys([*cfg.search.metric, *kind.headline])]
    header = ["trial", "state", *[k.split(".")[-1] for k in keys], *shown]
    rows = [[r.trial_id, _state(r, kind.step), *[_fmt(r.config.get(k)) for k in keys],
             *[_fmt(r.last.get(m)) for m in shown]] for r in records]
    print(table_text([header, *rows]))
    if cfg.search.repeats > 1:
        print(f"\ngroups: up to {cfg.search.repeats} repeats over {cfg.search.repeat_over}; mean [95% CI]")
        print(group_status(cfg, paths, records))
    errors = [f"  {r.trial_id}: {r.error}" for r in records if r.status == "ERROR"]
    if errors:
        print("errors:\n" + "\n".join(errors))
    return 0


def group_status(cfg: SweepConfig, paths: SweepPaths, records: list[rs.TrialRecord]) -> str:
    """The groups' table (sweeps.groups.format_groups, as the closing summary and the report print it),
    with the race's decisions when the sweep races."""
    from sweeps.report.race import race_notes
    from sweeps.search_state import read_decisions

    groups = collect(records, paths.results, cfg.search.repeat_over)
    notes = race_notes(read_decisions(paths.root)) if cfg.search.racing is not None else None
    metrics = list(dict.fromkeys([*cfg.search.metric, *kind_of(cfg.trial).headline]))
    return format_groups(groups, metrics, cfg.search.repeats, notes)


def report(args: argparse.Namespace) -> int:
    from sweeps.driver import tracker_for
    from sweeps.report import write_report
    from sweeps.report.biases import check_population
    from sweeps.report.groups import parse_selector
    from sweeps.summary import state_answer

    if bool(args.contrast) != bool(args.vs):
        raise ConfigError("--vs" if args.contrast else "--contrast", "a contrast needs both --contrast and --vs")
    selectors = (parse_selector(args.contrast, "--contrast"), parse_selector(args.vs, "--vs")) if args.vs else None
    paths = find_sweep(args.sweep, args.storage)
    cfg, _ = load_config(str(paths.config))
    if selectors and cfg.search.repeats < 2:
        raise ConfigError("--contrast", f"pairs the repeats of two groups, and sweep '{args.sweep}' ran one trial "
                          "per configuration (search.repeats: 1)")
    check_population(cfg, args.population)  # before anything is written
    written = write_report(cfg, paths, trial_records(paths), selectors, args.group_by, args.population)
    meta = load_meta(paths)
    state_answer(cfg, tracker_for(cfg, meta["parent_run_id"], meta["tracking_uri"]), written)  # the parent, up to date
    print("\n".join(written.lines))
    print(f"report written to {written.folder}")
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

    from sweeps.paths import study_storage

    paths = find_sweep(args.sweep, args.storage)
    cfg, _ = load_config(str(paths.config))
    storage = study_storage(cfg.search.storage, paths.root)
    if cfg.search.storage is None and not (paths.root / "optuna.db").is_file():
        raise DataError(str(paths.root / "optuna.db"), "no Optuna study here yet (has the sweep started?)")
    print(f"Optuna dashboard of study '{cfg.name}': http://127.0.0.1:{args.port}/dashboard (Ctrl-C stops it)",
          flush=True)
    optuna_dashboard.run_server(storage, host="127.0.0.1", port=args.port)
    return 0
