"""A real sweep of two configurations x 3 seed repeats (local Ray, SQLite MLflow, Optuna grid) on the synthetic
trial kind, one repeat failing (`synthetic.fail_p`): the numbers of a group are the same wherever they
appear, the value told to Optuna, the group run in MLflow, `status`, the report's groups.csv and the
closing summary; repeats pair by seed in a contrast; the study is live in optuna-dashboard."""

from __future__ import annotations

import json
import math
import re
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats
from support import artifacts, kill_tree, mlflow_runs, run_cli, start_cli, synthetic_config, write_config

from sweeps.synthetic import SyntheticConfig, draw

pytestmark = pytest.mark.slow
METRICS = ("test/balanced_acc", "ekld/tail")
FAIL_P = 0.2  # with it, exactly one of the six trials fails (checked below)


def _cell(values: list[float]) -> tuple[float, float, float]:
    """mean and 95% t-interval, from scipy."""
    mean = float(np.mean(values))
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def test_a_groups_numbers_are_the_same_everywhere(tmp_path: Path, storage: Path) -> None:
    failing = [(arm, seed) for arm in (0, 1) for seed in range(3)
               if draw(SyntheticConfig(arm=arm, epochs=3, fail_p=FAIL_P), seed, 0).fails_at]
    assert failing == [(0, 0)]  # the setup: one failed repeat, in the first group
    cfg = synthetic_config("groups", synthetic={"fail_p": FAIL_P},
                           search={"repeats": 3, "metric": list(METRICS), "mode": ["max", "min"],
                                   "space": {"synthetic.arm": {"type": "categorical", "choices": [0, 1]}}})
    res = run_cli(["run", str(write_config(tmp_path / "groups.yaml", cfg)), "--storage", str(storage)], timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out  # one repeat failed: the sweep says so
    assert "SyntheticFailure" in res.stdout and "gitsweep resume groups --restart-errored" in res.stdout
    # Not a terminal: a line per trial start and end, no per-epoch lines, no Ray / MLflow start-up chatter.
    assert not re.search(r" epoch \d+/\d+ ", out) and "INFO mlflow" not in out, out
    assert res.stdout.count(" started ") == 6 and len(out.splitlines()) < 40, out

    runs = mlflow_runs(storage, "groups")
    parent = next(r for r in runs if r.data.tags.get("gitsweep.role") == "sweep")
    groups = {r.data.tags["gitsweep.group_id"]: r for r in runs if r.data.tags.get("gitsweep.role") == "group"}
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "synthetic"]
    assert len(groups) == 2 and len(trials) == 6  # 2 configurations x 3 repeats
    assert all(g.data.tags["mlflow.parentRunId"] == parent.info.run_id for g in groups.values())
    assert all(g.info.status == "FINISHED" for g in groups.values())  # finished with their last repeat
    study = optuna.load_study(study_name="groups", storage=f"sqlite:///{storage}/sweeps/groups/optuna.db")
    told = {t.user_attrs["group_id"]: t for t in study.trials}
    table = pd.read_csv(storage / "sweeps" / "groups" / "report" / "groups.csv").set_index("group_id")
    status = run_cli(["status", "groups", "--storage", str(storage)], timeout=60)
    assert status.returncode == 0, status.stderr
    report = run_cli(["report", "groups", "--storage", str(storage), "--contrast", "synthetic.arm=1",
                      "--vs", "synthetic.arm=0"], timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr

    for gid, group in groups.items():
        members = [t for t in trials if t.data.tags["mlflow.parentRunId"] == group.info.run_id]
        assert sorted(int(t.data.params["seed"]) for t in members) == [0, 1, 2]  # repeat r runs seed 0 + r
        assert "seed" not in group.data.params and group.data.params["group.repeats"] == "3"
        done = [t for t in members if t.info.status == "FINISHED"]
        assert group.data.metrics["group/n_finished"] == len(done) == table.loc[gid, "finished"]
        assert told[gid].user_attrs["n"] == len(done)
        lines = {name: next(ln for ln in text.splitlines() if ln.startswith(gid))
                 for name, text in (("status", status.stdout), ("summary", res.stdout), ("report", report.stdout))}
        for i, m in enumerate(METRICS):
            mean, low, high = _cell([t.data.metrics[m] for t in done])
            close = {"rel": 1e-5, "abs": 1e-9}  # MLflow holds 7 significant digits
            assert group.data.metrics[m] == pytest.approx(mean, **close)  # the group run: the mean ...
            assert group.data.metrics[f"{m}/ci95_low"] == pytest.approx(low, **close)  # ... and its t-interval
            assert group.data.metrics[f"{m}/ci95_high"] == pytest.approx(high, **close)
            assert told[gid].values[i] == pytest.approx(mean, **close)  # what Optuna was told
            assert told[gid].user_attrs[f"{m}/ci95"] == pytest.approx([low, high], **close)
            assert table.loc[gid, m] == told[gid].values[i]  # groups.csv: the very same number
            assert table.loc[gid, f"{m}_ci95_low"] == pytest.approx(told[gid].user_attrs[f"{m}/ci95"][0], rel=1e-12)
            exact, (lo, hi) = told[gid].values[i], told[gid].user_attrs[f"{m}/ci95"]
            cell = f"{exact:.4f} [{lo:.4f}, {hi:.4f}]"
            # optuna-dashboard's trial page: the value named, with its statistic, n and interval
            assert told[gid].user_attrs[m] == f"{exact:.4f} (mean of {len(done)}) [95% CI {lo:.4f}, {hi:.4f}]"
            for name, line in lines.items():
                assert cell in line, (name, cell, line)  # status, the closing summary and the report print it
    arm0 = next(gid for gid, g in groups.items() if g.data.params["synthetic.arm"] == "0")
    # its failed repeat is counted as such, in every table
    assert all("2/3 (1 failed)" in next(ln for ln in text.splitlines() if ln.startswith(arm0))
               for text in (status.stdout, res.stdout, report.stdout))

    # The contrast pairs repeats by seed: only seeds finished in both groups (1 and 2). contrast.parquet holds
    # it exactly, contrast.csv rounded for reading.
    contrast = pd.read_parquet(storage / "sweeps" / "groups" / "report" / "contrast.parquet")
    row = contrast[contrast["metric"] == "test/balanced_acc"].iloc[0]
    by_seed = {(t.data.params["synthetic.arm"], t.data.params["seed"]): t.data.metrics.get("test/balanced_acc")
               for t in trials if t.info.status == "FINISHED"}
    diffs = [by_seed[("1", s)] - by_seed[("0", s)] for s in ("1", "2")]
    assert row["n"] == 2 and row["diff"] == pytest.approx(np.mean(diffs), rel=1e-5)
    shown = pd.read_csv(storage / "sweeps" / "groups" / "report" / "contrast.csv")
    assert shown[shown["metric"] == "test/balanced_acc"]["diff"].iloc[0] == float(f"{row['diff']:.4g}")
    assert {"per_class.parquet", "per_class.json", "ekld_vs_class_size.png"} <= artifacts(storage, groups[arm0])
    summary = json.loads((storage / "sweeps" / "groups" / "report" / "summary.json").read_text())
    assert summary["ekld_curves"] == ["g0000", "g0001"]  # with repeats: every group's band in one figure
    _dashboard_serves(storage)


def _dashboard_serves(storage: Path) -> None:
    """The study is live for optuna-dashboard: `gitsweep dashboard` serves it on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dash = start_cli(["dashboard", "groups", "--storage", str(storage), "--port", str(port)])
    try:
        studies = None
        deadline = time.monotonic() + 60
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
                    studies = json.loads(resp.read())["study_summaries"]
            except OSError:
                assert dash.poll() is None, dash.communicate()[0]
                time.sleep(0.5)
        assert studies is not None, "the dashboard never answered"
        assert [s["study_name"] for s in studies] == ["groups"]  # the sweep's study, through the dashboard's API
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=5) as r:
            assert len(json.loads(r.read())["trials"]) == 2  # one trial per group
    finally:
        kill_tree(dash)
