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


def test_a_failed_repeat_restarted_and_finished_is_told_again(tmp_path: Path) -> None:
    """`resume --restart-errored`: Tune runs a failed trial again as a new trial (a new id, the same config),
    and its end reaches the searcher through Tune's ConcurrencyLimiter, which never handed it out."""
    from ray.tune.search import ConcurrencyLimiter

    from sweeps.search_state import SearchState

    cfg, _ = load_config("demo", ["search.repeats=2", "search.num_samples=1", "search.points_to_evaluate=[]"])
    search = GroupSearch(cfg, f"sqlite:///{tmp_path / 'optuna.db'}", "groups", tmp_path)
    limiter = ConcurrencyLimiter(search, max_concurrent=2)  # as Tune wraps the searcher
    limiter.set_search_properties(None, None, {})
    first_config, _ = limiter.suggest("t0"), limiter.suggest("t1")
    assert limiter.suggest("t2") is None  # two repeats running: the search holds back a third
    limiter.on_trial_complete("t0", {"test/balanced_acc": 0.8, "ekld/tail": 0.1, rs.FINAL_KEY: 1})
    limiter.on_trial_complete("t1", error=True)
    first = search.study.trials[0]
    assert first.values == pytest.approx([0.8, 0.1]) and first.user_attrs["n"] == 1  # told with one repeat

    # Tune's flattened result of the restarted trial carries its config: the failed repeat's group and index
    config = {f"config/{rs.GROUP_KEY}": first_config[rs.GROUP_KEY], f"config/{rs.REPEAT_KEY}": 1}
    limiter.on_trial_complete("t9", {"test/balanced_acc": 0.6, "ekld/tail": 0.3, rs.FINAL_KEY: 1, **config})
    study = optuna.load_study(study_name="groups", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 2
    again = study.trials[1]  # a finished Optuna trial cannot change: a new one supersedes it
    assert again.values == pytest.approx([0.7, 0.2]) and again.user_attrs["n"] == 2  # both repeats now
    assert again.user_attrs["supersedes"] == 0 and again.params == first.params
    limiter.on_trial_complete("t9", {"test/balanced_acc": 0.5, "ekld/tail": 0.3, rs.FINAL_KEY: 1, **config})
    assert len(study.trials) == 2  # an end Tune reports twice changes nothing
    replayed = SearchState.load(tmp_path / "search.jsonl")  # a resume reads the same state back
    group = replayed.groups["g0000"]
    assert group.number == 1 and "g0000" in replayed.told and group.stats("test/balanced_acc").n == 2
