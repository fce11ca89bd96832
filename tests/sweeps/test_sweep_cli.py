"""The CLI's up-front refusals and the search space mapping (fast: no trial runs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import run_cli, tiny_config, write_config

from gitlib.errors import ConfigError
from sweeps.config import load_config
from sweeps.search import sampler
from sweeps.space import distributions, grid_values


def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path, storage: Path) -> None:
    path = write_config(tmp_path / "c.yaml", tiny_config("bad"))
    res = run_cli(["run", str(path), "--set", "classifier.epochs=0", "--storage", str(storage)], timeout=120)
    assert res.returncode == 2, res.stderr  # bad input exits 2
    assert "classifier.epochs" in res.stderr and "Traceback" not in res.stderr  # one line naming the key
    assert not storage.exists()  # nothing written


def test_gpu_request_without_gpu_refused_and_pin_reported(tmp_path: Path, storage: Path) -> None:
    path = write_config(tmp_path / "c.yaml", tiny_config("gpu"))
    start = time.monotonic()
    # No visible GPU, so the embedded Ray cluster has none, on a GPU machine too.
    res = run_cli(["run", str(path), "--set", "classifier.gen_frac=0.3", "--set", "resources.gpu=1",
                   "--storage", str(storage)], timeout=180, env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 2, res.stdout + res.stderr  # a request no node can meet is refused
    assert "resources.gpu" in res.stderr and "Traceback" not in res.stderr
    assert "pinned classifier.gen_frac=0.3 (removed from search.space)" in res.stdout  # the pin is reported
    assert not (storage / "sweeps" / "gpu").exists()  # refused before the sweep was saved
    assert time.monotonic() - start < 90  # quickly: before any trial or data build


def test_space_maps_to_optuna_distributions() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    cfg, pinned = load_config("demo", ["search.space.classifier.epochs={type: int, low: 6, high: 10, step: 2}",
                                       "search.space.classifier.lr={type: loguniform, low: 0.001, high: 0.1}",
                                       "search.space.dataset.imbalance_ratio={type: categorical, choices: [10, 50, 100]}"])
    d = distributions(cfg.search)
    assert isinstance(d["classifier.gen_frac"], FloatDistribution)
    assert d["dataset.imbalance_ratio"] == CategoricalDistribution([10, 50, 100])
    assert d["classifier.epochs"] == IntDistribution(6, 10, step=2)
    assert d["classifier.lr"].log  # loguniform -> log-scaled float
    assert pinned == []


def test_set_on_searched_key_pins_it() -> None:
    cfg, pinned = load_config("demo", ["classifier.gen_frac=0.3"])
    assert pinned == ["classifier.gen_frac"]
    assert "classifier.gen_frac" not in cfg.search.space  # it left the space
    assert cfg.value("classifier.gen_frac") == 0.3


def test_grid_needs_discrete_values() -> None:
    cfg, _ = load_config("demo", ["search.sampler=grid"])
    with pytest.raises(ConfigError, match="grid"):
        sampler(cfg.search)  # gen_frac is a continuous float without a step
    cfg, _ = load_config("demo", ["search.sampler=grid", "search.points_to_evaluate=[]",
                                  "search.space={classifier.gen_frac: {type: float, low: 0, high: 0.9, step: 0.3}}"])
    assert grid_values("classifier.gen_frac", cfg.search.params()["classifier.gen_frac"]) == [0.0, 0.3, 0.6, 0.9]


def test_multi_objective_nsga2_and_asha_build(tmp_path: Path) -> None:
    from optuna.samplers import NSGAIISampler, TPESampler
    from ray.tune.schedulers import ASHAScheduler

    from sweeps.search import tune_config

    cfg, _ = load_config("demo", ["search.metric=[test/balanced_acc, ekld/tail]", "search.mode=[max, min]",
                                  "search.sampler=nsga2"])
    searcher = tune_config(cfg, tmp_path).search_alg
    assert [m for m, _ in searcher.objectives] == ["test/balanced_acc", "ekld/tail"]  # one study, two objectives
    assert isinstance(sampler(cfg.search), NSGAIISampler)
    assert searcher.study.directions[1].name == "MINIMIZE"  # tail eKLD is minimised
    assert (tmp_path / "optuna.db").is_file()  # the study lives in SQLite next to the sweep
    cfg, _ = load_config("demo", ["search.scheduler=asha", "search.grace_period=2", "search.repeats=1",
                                  "search.metric=test/balanced_acc", "search.mode=max"])  # strings: one objective
    tc = tune_config(cfg, tmp_path / "asha")
    assert isinstance(tc.scheduler, ASHAScheduler) and tc.scheduler._metric == "val/balanced_acc"
    assert isinstance(sampler(cfg.search), TPESampler)  # TPE by default
    # samplers and schedulers are registries: aliases in any case, an error listing the valid names
    assert load_config("demo", ["search.sampler=NSGAIISampler"])[0].search.sampler == "nsga2"
    assert load_config("demo", ["search.sampler=Random"])[0].search.sampler == "random"
    with pytest.raises(ConfigError, match=r"search.scheduler.*valid: none, asha"):
        load_config("demo", ["search.scheduler=hyperband"])
    assert tc.max_concurrent_trials == 2 and tc.num_samples == 3  # configurations x 1 repeat


@pytest.mark.parametrize(("sets", "key"), [
    (["search.repeats=3", "seed=4"], "'seed'"),  # the repeat key's base comes from the config file
    (["search.repeats=3", "search.repeat_over=dataset.instance", "dataset.instance=2"], "'dataset.instance'"),
    (["search.repeats=3", "search.space.seed={type: int, low: 0, high: 3}"], "search.space.seed"),
    (["search.repeats=3", "search.scheduler=asha"], "search.scheduler"),
    (["search.repeats=0"], "search.repeats"),
    (["search.repeat_over=classifier.lr"], "search.repeat_over"),
    (["search.group_stat=best"], "search.group_stat"),
    (["search.repeats=6", "search.racing={min_repeats: 1}"], "search.racing.min_repeats"),
    (["search.repeats=6", "search.racing={min_repeats: 7}"], "search.racing.min_repeats"),
    (["search.repeats=6", "search.racing={alpha: 0}"], "search.racing.alpha"),
    (["search.repeats=6", "search.racing={alpha: 0.6}"], "search.racing.alpha"),
    (["search.repeats=6", "search.racing={test: sign}"], "search.racing.test"),
    (["search.repeats=1", "search.racing={min_repeats: 2}"], "search.racing"),
    (["search.repeats=6", "search.racing={}", "search.scheduler=asha"], "search.racing"),
    (["search.repeats=6", "search.racing={metric: test/recall}"], "search.racing.metric"),
])
def test_bad_repeat_settings_exit_2(tmp_path: Path, storage: Path, sets: list[str], key: str) -> None:
    path = write_config(tmp_path / "c.yaml", tiny_config("bad-repeats"))
    res = run_cli(["run", str(path), *[a for s in sets for a in ("--set", s)], "--storage", str(storage)],
                  timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr  # refused before anything starts
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in res.stderr  # one line naming the key
    assert not storage.exists()  # nothing written
