"""A real sweep of two configurations x 3 seed repeats (local Ray, SQLite MLflow, Optuna grid), one repeat
failing: group runs hold the statistics of their trials, the searcher got the group values, repeats pair
by seed, and status / report show groups and the GIT-vs-baseline contrast."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats
from support import artifacts, mlflow_runs, run_cli, tiny_config, write_config

METRICS = ("test/balanced_acc", "ekld/tail")


def test_groups_of_repeats(tmp_path: Path, storage: Path) -> None:
    cfg = tiny_config(
        "groups",
        classifier={"git_start_epoch": 0},
        search={"num_samples": 2, "max_concurrent": 2, "sampler": "grid", "repeats": 3,
                "metric": list(METRICS), "mode": ["max", "min"],
                "space": {"classifier.gen_frac": {"type": "categorical", "choices": [0.0, 0.5]}}},
        debug={"fail_at_epoch": 2, "fail_mode": "nan", "fail_when": "classifier.gen_frac=0.5,seed=1"},
    )
    res = run_cli(["run", str(write_config(tmp_path / "groups.yaml", cfg)), "--storage", str(storage)], timeout=500)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out  # one repeat failed: the sweep says so
    assert "GIT - baseline, paired by repeat:" in res.stdout and "n=2" in res.stdout  # the closing contrast
    # Not a terminal: a line per trial start and end, no per-epoch lines, no Ray / MLflow start-up chatter.
    per_epoch = re.search(r" epoch \d+/\d+ ", out)  # what --verbose prints for every epoch
    assert not per_epoch and "Token authentication" not in out and "INFO mlflow" not in out, out
    assert res.stdout.count(" started ") == 6 and len(out.splitlines()) < 60, out

    runs = mlflow_runs(storage, "groups")
    parent = next(r for r in runs if r.data.tags.get("gitsweep.role") == "sweep")
    groups = {r.data.tags["gitsweep.group_id"]: r for r in runs if r.data.tags.get("gitsweep.role") == "group"}
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "classifier"]
    assert len(groups) == 2 and len(trials) == 6  # 2 configurations x 3 repeats
    assert all(g.data.tags["mlflow.parentRunId"] == parent.info.run_id for g in groups.values())
    assert all(g.info.status == "FINISHED" for g in groups.values())  # finished with their last repeat
    by_group: dict[str, list] = {gid: [] for gid in groups}
    group_of_run = {g.info.run_id: gid for gid, g in groups.items()}
    for t in trials:
        by_group[group_of_run[t.data.tags["mlflow.parentRunId"]]].append(t)  # repeats nest in their group

    for gid, group in groups.items():
        members = by_group[gid]
        assert sorted(int(t.data.params["seed"]) for t in members) == [0, 1, 2]  # repeat r runs seed 0 + r
        assert "seed" not in group.data.params and group.data.params["group.repeats"] == "3"
        assert group.data.params["group.repeat_over"] == "seed"
        done = [t for t in members if t.info.status == "FINISHED"]
        assert group.data.metrics["group/n_finished"] == len(done)
        for m in METRICS:
            values = np.array([t.data.metrics[m] for t in done])
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            close = {"rel": 1e-5, "abs": 1e-9}  # MLflow holds 7 significant digits
            assert group.data.metrics[m] == pytest.approx(values.mean(), **close)  # the group's m is the mean
            assert group.data.metrics[f"{m}/std"] == pytest.approx(values.std(ddof=1), **close)
            assert group.data.metrics[f"{m}/ci95_low"] == pytest.approx(values.mean() - half, **close)
            assert group.data.metrics[f"{m}/ci95_high"] == pytest.approx(values.mean() + half, **close)
        assert {"per_class.parquet", "per_class.json", "ekld_vs_class_size.png"} <= artifacts(storage, group)

    finished = {gid: g.data.metrics["group/n_finished"] for gid, g in groups.items()}
    assert sorted(finished.values()) == [2.0, 3.0]  # the failed repeat is left out, and n says so
    failed = [t for t in trials if t.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.params["seed"] == "1"

    # The searcher got one value per group and objective: the group means, as the group runs hold them.
    study = optuna.load_study(study_name="groups", storage=f"sqlite:///{storage}/sweeps/groups/optuna.db")
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    by_params = {g.data.params["classifier.gen_frac"]: g for g in groups.values()}
    for t in study.trials:
        group = by_params[str(t.params["classifier.gen_frac"])]
        assert t.values == pytest.approx([group.data.metrics[m] for m in METRICS], rel=1e-5)

    status = run_cli(["status", "groups", "--storage", str(storage)], timeout=120)
    assert status.returncode == 0 and "2/3" in status.stdout and "3/3" in status.stdout, status.stdout
    report = run_cli(["report", "groups", "--storage", str(storage)], timeout=180)
    assert report.returncode == 0, report.stdout + report.stderr
    folder = storage / "sweeps" / "groups" / "report"
    table = pd.read_csv(folder / "groups.csv")
    assert len(table) == 2 and sorted(table["finished"]) == [2, 3]
    contrast = pd.read_csv(folder / "contrast.csv")
    tail = contrast[contrast["metric"] == "ekld/tail"].iloc[0]
    assert tail["n"] == 2  # paired over the repeats both groups finished (seeds 0 and 2)
    git = by_params["0.5"]
    base = by_params["0.0"]
    seeds = {t.data.params["seed"]: t for t in by_group[git.data.tags["gitsweep.group_id"]]}
    pairs = [seeds[s].data.metrics["ekld/tail"] - t.data.metrics["ekld/tail"]
             for t in by_group[base.data.tags["gitsweep.group_id"]] for s in (t.data.params["seed"],)
             if seeds[s].info.status == "FINISHED"]
    assert tail["diff"] == pytest.approx(np.mean(pairs), rel=1e-5, abs=1e-9)  # repeat r of one group against repeat r of the other
    assert list(folder.glob("contrast_*_vs_*.png")) and (folder / "contrast_per_class.csv").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["ekld_curves"] == ["g0000", "g0001"]  # with repeats: every group's band in one figure

    # The study is live for optuna-dashboard: `gitsweep dashboard` serves it on 127.0.0.1.
    import socket
    import subprocess
    import time
    import urllib.request

    from support import GITSWEEP, cli_env, kill_tree

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dash = subprocess.Popen([*GITSWEEP, "dashboard", "groups", "--storage", str(storage), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(),
                            start_new_session=True)
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
