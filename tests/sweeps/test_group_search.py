"""The searcher over groups (sweeps.search.GroupSearch) against a real Optuna SQLite study, without Ray:
what Optuna is told is the configured group statistic over the finished repeats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy import stats

from sweeps import results as rs
from sweeps.config import load_config
from sweeps.search import GroupSearch


def _search(tmp_path: Path, stat: str) -> GroupSearch:
    cfg, _ = load_config("demo", [f"search.group_stat={stat}", "search.repeats=3", "search.num_samples=2"])
    return GroupSearch(cfg, f"sqlite:///{tmp_path / 'optuna.db'}", "groups")


@pytest.mark.parametrize("stat", ["mean", "lcb", "median"])
def test_optuna_is_told_the_group_statistic(tmp_path: Path, stat: str) -> None:
    search = _search(tmp_path, stat)
    configs = [search.suggest(f"t{i}") for i in range(3)]
    assert [c["seed"] for c in configs] == [0, 1, 2]  # repeat r runs the repeat key at base (demo: 0) + r
    assert len({c[rs.GROUP_KEY] for c in configs}) == 1  # ... all in one group
    acc, tail = [0.80, 0.70, 0.75], [0.05, 0.09, 0.04]
    for i in range(3):
        assert not search.study.trials[0].values  # told only when the last repeat has ended
        search.on_trial_complete(f"t{i}", {"test/balanced_acc": acc[i], "ekld/tail": tail[i], rs.FINAL_KEY: 1})

    told = optuna.load_study(study_name="groups", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials[0]
    t = stats.t.ppf(0.975, 2)
    expected = {  # balanced accuracy is maximised, tail eKLD minimised: lcb is pessimistic for each
        "mean": [np.mean(acc), np.mean(tail)],
        "median": [np.median(acc), np.median(tail)],
        "lcb": [np.mean(acc) - t * stats.sem(acc), np.mean(tail) + t * stats.sem(tail)],
    }[stat]
    assert told.state == optuna.trial.TrialState.COMPLETE and told.values == pytest.approx(expected)


def test_a_failed_repeat_is_left_out_and_an_all_failed_group_fails(tmp_path: Path) -> None:
    search = _search(tmp_path, "mean")
    for i in range(6):
        search.suggest(f"t{i}")
    search.on_trial_complete("t0", {"test/balanced_acc": 0.8, "ekld/tail": 0.1, rs.FINAL_KEY: 1})
    search.on_trial_complete("t1", error=True)
    search.on_trial_complete("t2", {"test/balanced_acc": 0.6, "ekld/tail": 0.3, rs.FINAL_KEY: 1})
    for i in range(3, 6):
        search.on_trial_complete(f"t{i}", error=True)
    first, second = search.study.trials
    assert first.values == pytest.approx([0.7, 0.2])  # the mean over the two finished repeats
    assert second.state == optuna.trial.TrialState.FAIL
