"""Racing end to end through Ray on the synthetic trial kind (8 configurations, up to 6 repeats, dropped
from 3): the race's decisions in MLflow and in race.csv are those scipy's paired t-test gives on the trials'
own metrics, the parent run counts the trials run and saved; and a sweep killed (SIGKILL) mid-race and
resumed makes the same decisions and runs the same trials as one that was not killed."""

from __future__ import annotations

import contextlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats
from support import mlflow_runs, ray_head, run_cli, start_cli, synthetic_config, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ARMS, REPEATS = 8, 6


def _config(tmp_path: Path, name: str) -> Path:
    # one trial at a time: the order of events, and so every decision, is the same in every run
    cfg = synthetic_config(name, synthetic={"epochs": 1, "noise_sd": 0.01, "arm_gap": 0.004},
                           search={"num_samples": ARMS, "max_concurrent": 1, "sampler": "grid", "repeats": REPEATS,
                                   "racing": {"min_repeats": 3, "alpha": 0.05},
                                   "space": {"synthetic.arm": {"type": "categorical", "choices": list(range(ARMS))}}})
    return write_config(tmp_path / f"{name}.yaml", cfg)


def _decisions(storage: Path, name: str) -> tuple[dict[int, tuple[str, int, int]], int]:
    """arm -> (decision, repeats at the decision, the incumbent's arm), and the trials run, from race.csv."""
    race = pd.read_csv(storage / "sweeps" / name / "report" / "race.csv")
    arm = dict(zip(race["group_id"], race["synthetic.arm"], strict=True))
    out = {int(r["synthetic.arm"]): (r["decision"], int(r["at_repeat"]), int(arm[r["vs"]])) for _, r in race.iterrows()}
    return out, int(race["repeats_run"].sum())


def _kill_mid_race_and_resume(tmp_path: Path, address: str, auth: dict[str, str]) -> Path:
    killed = tmp_path / "killed"
    proc = start_cli(["run", str(_config(tmp_path, "race")), "--storage", str(killed), "--address", address], env=auth)
    seen = 0
    for line in proc.stdout:
        seen += "race: " in line
        if seen == 2:  # mid-race: two decisions made, more to come
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert seen == 2
    res = run_cli(["resume", "race", "--storage", str(killed), "--address", address], timeout=400, env=auth)
    assert res.returncode == 0, res.stdout + res.stderr
    return killed


def test_race_decisions_are_scipys_and_survive_a_kill(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    with ray_head(tmp_path) as (address, auth), ThreadPoolExecutor(1) as pool:
        killed = pool.submit(_kill_mid_race_and_resume, tmp_path, address, auth)  # both at once, on one cluster
        res = run_cli(["run", str(_config(tmp_path, "race")), "--storage", str(whole), "--address", address],
                      timeout=400, env=auth)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "race on test/balanced_acc:" in res.stdout and "dropped at 3" in res.stdout
        _check_against_scipy(whole)
        assert _decisions(killed.result(), "race") == _decisions(whole, "race")  # same decisions, same trials


def _check_against_scipy(storage: Path) -> None:
    runs = mlflow_runs(storage, "race")
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "synthetic" and r.info.status == "FINISHED"]
    groups = {r.data.tags["gitsweep.group_id"]: r for r in runs if r.data.tags.get("gitsweep.role") == "group"}
    value = {(t.data.tags["gitsweep.in_group"], int(t.data.params["seed"])): t.data.metrics["test/balanced_acc"]
             for t in trials}
    race = pd.read_csv(storage / "sweeps" / "race" / "report" / "race.csv").set_index("group_id")
    assert len(race) == ARMS and set(race["decision"]) == {"dropped", "survived"}
    for gid, row in race.iterrows():
        run = groups[gid]
        assert run.data.tags["gitsweep.race"] == row["decision"] and run.data.tags["gitsweep.race_vs"] == row["vs"]
        if row["decision"] == "dropped":
            pairs = [int(r) for r in str(row["paired_repeats"]).split()]
            x = [value[(gid, r)] for r in pairs]
            y = [value[(row["vs"], r)] for r in pairs]
            p = stats.ttest_rel(x, y, alternative="less").pvalue  # the challenger worse than the incumbent
            assert row["p_value"] == pytest.approx(p, rel=1e-3) and p < 0.05
            assert run.data.metrics["race/p_value"] == pytest.approx(p, rel=1e-3)
            assert run.data.metrics["race/n_at_decision"] == len(pairs) and row["at_repeat"] >= 3
            assert row["repeats_run"] <= row["at_repeat"] + 1  # nothing after the drop but what was running
        else:
            assert row["repeats_run"] == REPEATS
    parent = next(r for r in runs if r.data.tags.get("gitsweep.role") == "sweep")
    assert parent.data.metrics["race/trials_run"] == race["repeats_run"].sum()
    assert parent.data.metrics["race/trials_saved"] == ARMS * REPEATS - race["repeats_run"].sum()
    assert (storage / "sweeps" / "race" / "report" / "race.png").is_file()
