"""Racing (sweeps.race, through the searcher sweeps.search.GroupSearch and a real Optuna study, without
Ray): the one-sided paired tests equal scipy's, the incumbent is the rule the docs state, a worse
configuration is dropped once and only once the test says so, the incumbent catches up with a challenger,
Optuna is told what the race decided, and a search rebuilt from its log decides what an uninterrupted
one decides."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy import stats as st

from sweeps import results as rs
from sweeps.config import load_config
from sweeps.groups import Group, Repeat
from sweeps.race import RacePlan, incumbent, one_sided_p
from sweeps.search import GroupSearch
from sweeps.search_state import SearchState
from sweeps.synthetic import SyntheticConfig, observed


def test_one_sided_tests_are_scipys() -> None:
    a = {0: 0.70, 1: 0.72, 2: 0.69, 3: 0.75, 4: 0.71}
    b = {0: 0.74, 1: 0.73, 2: 0.75, 3: 0.74, 4: 0.78, 9: 0.1}  # repeat 9 has no partner: left out
    x, y = np.array([a[r] for r in range(5)]), np.array([b[r] for r in range(5)])
    p, pairs = one_sided_p(a, b, "max", "t")
    assert pairs == (0, 1, 2, 3, 4)
    assert p == pytest.approx(st.ttest_rel(x, y, alternative="less").pvalue)  # "a is worse" when maximising
    p, _ = one_sided_p(a, b, "min", "t")
    assert p == pytest.approx(st.ttest_rel(x, y, alternative="greater").pvalue)  # when minimising, higher is worse
    p, _ = one_sided_p(a, b, "max", "wilcoxon")
    assert p == pytest.approx(st.wilcoxon(x - y, alternative="less").pvalue)
    assert math.isnan(one_sided_p({0: 1.0}, {0: 2.0}, "max", "t")[0])  # one pair: no test
    assert one_sided_p({0: 1.0, 1: 2.0}, {0: 2.0, 1: 3.0}, "max", "t")[0] == 0.0  # always worse by the same


def _group(gid: str, values: list[float | None]) -> Group:
    g = Group(gid, {})
    g.repeats = {r: Repeat(f"{gid}-{r}", "RUNNING" if v is None else "TERMINATED", None if v is None else {"m": v})
                 for r, v in enumerate(values)}
    return g


def test_the_incumbent_has_the_most_repeats_then_the_best_mean() -> None:
    state = SearchState()
    for g in (_group("g0", [0.9, 0.9]), _group("g1", [0.5, 0.5, 0.5]), _group("g2", [0.6, 0.6, 0.6, None])):
        state.groups[g.group_id] = g
    plan = RacePlan(repeats=10, min_repeats=3, metric="m", mode="max", test="t")
    # g0's mean is the best, but g1 and g2 finished more repeats: of those, g2 is better
    assert incumbent(state, plan) == "g2"
    assert incumbent(state, RacePlan(10, 3, "m", "min", test="t")) == "g1"  # minimising


def _drive(search: GroupSearch, truth: dict[int, float], events: int | None = None) -> int:
    """Run the search one trial at a time (concurrency 1) on known values; returns the trials it ran.
    A trial's value: its arm's truth plus noise drawn from (arm, repeat). Stops after `events` trials."""
    run = 0
    while events is None or run < events:
        config = search.suggest(f"t{len(search.state.trial_slot) + run}x")
        if config is None or config == "FINISHED":
            return run
        arm, r = int(config["synthetic.arm"]), int(config[rs.REPEAT_KEY])
        value = truth[arm] + float(np.random.default_rng([arm, r]).normal(0, 0.02))
        trial_id = next(t for t, slot in search.state.trial_slot.items() if slot == (config[rs.GROUP_KEY], r))
        search.on_trial_complete(trial_id, {"test/balanced_acc": value, rs.FINAL_KEY: 1})
        run += 1
    return run


def _search(tmp_path: Path, name: str, log: bool = True) -> GroupSearch:
    cfg, _ = load_config("smoke", ["search.repeats=8", "search.racing={min_repeats: 3}", "search.sampler=grid",
                                   "search.metric=test/balanced_acc", "search.mode=max", "search.space={}",
                                   "search.space.synthetic.arm={type: categorical, choices: [0, 1, 2, 3]}"])
    if log:
        (tmp_path / name).mkdir()
    return GroupSearch(cfg, f"sqlite:///{tmp_path / 'optuna.db'}", name, tmp_path / name if log else None)


TRUTH = {0: 0.90, 1: 0.80, 2: 0.895, 3: 0.70}  # arm 1 and 3 far worse; 0 and 2 too close to part


def test_worse_configurations_are_dropped_and_optuna_told(tmp_path: Path) -> None:
    search = _search(tmp_path, "race")
    run = _drive(search, TRUTH)
    arm = {gid: g.params["synthetic.arm"] for gid, g in search.state.groups.items()}
    decided = {arm[gid]: d for gid, d in search.state.decisions.items()}
    assert {a for a, d in decided.items() if d.decision == "dropped"} == {1, 3}  # the clearly worse ones
    assert {a for a, d in decided.items() if d.decision == "survived"} == {0, 2}  # the close ones run every repeat
    for a in (1, 3):
        d = decided[a]
        assert d.k == 3 and d.p < 0.05  # dropped as soon as allowed: at min_repeats, on the evidence
        inc = search.state.groups[d.vs]
        x = [search.state.groups[d.group].finished[r]["test/balanced_acc"] for r in d.pairs]
        y = [inc.finished[r]["test/balanced_acc"] for r in d.pairs]
        assert d.p == pytest.approx(st.ttest_rel(x, y, alternative="less").pvalue)  # recomputed with scipy
        assert len(search.state.groups[d.group].repeats) == 3  # no repeat after the drop
    assert run == 3 + 3 + 8 + 8  # two dropped at 3, two survivors at 8
    study = optuna.load_study(study_name="race", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for t in study.trials:
        d = decided[t.params["synthetic.arm"]]
        assert t.user_attrs["raced_out"] == (d.decision == "dropped") and t.user_attrs["n"] == d.k
        if d.decision == "dropped":
            assert t.user_attrs["p_value"] == pytest.approx(d.p)
            values = [search.state.groups[d.group].finished[r]["test/balanced_acc"] for r in range(3)]
            assert t.values == pytest.approx([np.mean(values)])  # told its statistic over the repeats it ran


def test_the_incumbent_catches_up_with_a_challenger(tmp_path: Path) -> None:
    """Elitist: a challenger is never judged on repeats the incumbent has not run, so the incumbent runs
    the next repeat as soon as a challenger has started more than it."""
    search = _search(tmp_path, "catch", log=False)
    _drive(search, TRUTH, events=12)  # every arm at its 3 first repeats
    state, plan = search.state, search.race.plan
    inc = incumbent(state, plan)
    challenger = next(gid for gid in state.groups if gid != inc and not state.dropped(gid))
    state.assign(challenger, 3, "extra")  # a challenger starts its 4th repeat
    config = search.suggest("next")
    assert config is not None and config[rs.GROUP_KEY] == inc and config[rs.REPEAT_KEY] == 3


def test_a_search_rebuilt_from_its_log_decides_as_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = _search(tmp_path, "whole")
    _drive(whole, TRUTH)
    for cut in (5, 11, 13):  # killed at three points of its life
        first = _search(tmp_path, f"cut{cut}")
        _drive(first, TRUTH, events=cut)
        resumed = pickle.loads(pickle.dumps(first))  # what Tune's restore does: its state from the log
        resumed.restore_from_dir(str(tmp_path))  # no snapshot there: Tune holds no trial
        _drive(resumed, TRUTH)
        assert ({g.params["synthetic.arm"]: (d.decision, d.k, d.vs) for g in resumed.state.groups.values()
                 for d in [resumed.state.decisions[g.group_id]]}
                == {g.params["synthetic.arm"]: (d.decision, d.k, d.vs) for g in whole.state.groups.values()
                    for d in [whole.state.decisions[g.group_id]]})
        assert sum(len(g.repeats) for g in resumed.state.groups.values()) == \
            sum(len(g.repeats) for g in whole.state.groups.values())


def test_the_synthetic_truth_is_what_trials_report_on_average() -> None:
    cfg = SyntheticConfig(arm=2, x=0.3, y=0.7, noise_sd=0.02, instance_sd=0.0)
    values = [observed(cfg, seed, 0) for seed in range(400)]
    assert np.mean(values) == pytest.approx(0.9 - 0.02, abs=0.004)  # top - arm_gap * arm at the optimum
    assert np.std(values, ddof=1) == pytest.approx(0.02, rel=0.15)
