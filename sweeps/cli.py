"""`gitsweep` command line: parses arguments and hands each command to its module.

Bad input (UserError) prints one line and exits 2, with no traceback and nothing written.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from gitlib.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="preset name (see `gitsweep presets`) or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config key (repeatable)")


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep name or path")
    p.add_argument("--storage", help="storage path or URI (default: GITSWEEP_HOME, else ./gitsweep-runs)")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contrast", metavar="KEY=VALUE[,KEY=VALUE]",
                   help="groups A of a paired contrast (default: GIT against its baseline)")
    p.add_argument("--vs", metavar="KEY=VALUE[,KEY=VALUE]", help="groups B of the contrast")
    p.add_argument("--group-by", metavar="KEY", help="bias correlations within each value of a searched key")
    p.add_argument("--population", choices=("trials", "groups"),
                   help="the models the bias correlations run over (default: groups with repeats, else trials)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gitsweep", description="Generative Invariance Transfer sweeps")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sweep (Ray Tune + Optuna, recorded in MLflow)")
    _config_args(run)
    run.add_argument("--name", help="sweep name (default: the config's name)")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite)")
    run.add_argument("--storage", help="storage path or URI (default: GITSWEEP_HOME, else ./gitsweep-runs)")
    run.add_argument("--verbose", action="store_true", help="one line per trial result (every epoch)")
    run.set_defaults(module="sweeps.commands.sweep", func="run")

    resume = sub.add_parser("resume", help="resume an interrupted sweep")
    _sweep_args(resume)
    resume.add_argument("--restart-errored", action="store_true", help="also rerun errored trials")
    resume.add_argument("--address", help="Ray cluster address")
    resume.add_argument("--verbose", action="store_true", help="one line per trial result (every epoch)")
    resume.set_defaults(module="sweeps.commands.sweep", func="resume")

    for name, text in (("status", "trials and groups: state, config, key metrics"),
                       ("report", "tables and plots, also logged to the parent run")):
        p = sub.add_parser(name, help=text)
        _sweep_args(p)
        p.set_defaults(module="sweeps.commands.inspect", func=name)
        if name == "report":
            _report_args(p)

    sync = sub.add_parser("sync", help="write what MLflow lacks of a sweep (after its server was away)")
    _sweep_args(sync)
    sync.set_defaults(module="sweeps.commands.sweep", func="sync")

    dash = sub.add_parser("dashboard", help="optuna-dashboard on 127.0.0.1 for the sweep's Optuna study")
    _sweep_args(dash)
    dash.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    dash.set_defaults(module="sweeps.commands.inspect", func="dashboard")

    presets = sub.add_parser("presets", help="list the bundled configs")
    presets.set_defaults(module="sweeps.commands.inspect", func="presets")

    train = sub.add_parser("train", help="one training run without Ray (for debugging)")
    train_sub = train.add_subparsers(dest="what", required=True)
    tc = train_sub.add_parser("classifier", help="train one classifier and print its per-class table")
    _config_args(tc)
    tc.add_argument("--generator", metavar="GENERATOR_PT",
                    help="with augment=git: a generator.pt from `train generator` (default: the shared store's)")
    tc.set_defaults(module="sweeps.commands.train", func="classifier")
    tg = train_sub.add_parser("generator", help="train one MUNIT generator")
    _config_args(tg)
    tg.set_defaults(module="sweeps.commands.train", func="generator")

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="what", required=True)
    build = data_sub.add_parser("build", help="build and store the data set, print class counts")
    _config_args(build)
    build.set_defaults(module="sweeps.commands.data", func="build")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MLflow draws a progress bar for every small artifact it reads back (per-class tables on resume);
    # the sweep's own progress line is the one that tells the truth.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        handler = getattr(importlib.import_module(args.module), args.func)
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"gitsweep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gitsweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
