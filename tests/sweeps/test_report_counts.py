"""Reports that count honestly (no sweep run: the report's parts on tables shaped as a sweep's): each
model counted once in the bias report, each heat-map cell with its own n, the population the correlations
run over (trials or groups) said and chosen with `--population`, and the default GIT-vs-baseline contrast
pairing a baseline whatever its generator.* keys (a baseline trains with no generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gitlib.errors import ConfigError
from sweeps.config import load_config
from sweeps.groups import Group
from sweeps.report.biases import (
    GENERALIZATION,
    PROBES,
    check_population,
    headline,
    population,
    probe_matrix_figure,
    write_bias_report,
)
from sweeps.report.groups import default_pairs


def _scores(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Probe and generalization columns of n models (corruption accuracy is both)."""
    rng = np.random.default_rng(seed)
    return {k: rng.random(n) for k in dict.fromkeys((*PROBES, *GENERALIZATION))}


def test_the_same_configuration_and_seed_is_one_model(tmp_path: Path) -> None:
    cfg, _ = load_config("demo", ["search.repeats=1", "search.points_to_evaluate=[]"])  # gen_frac searched
    fracs = [0.0, 0.3, 0.3, 0.6, 0.9, 0.3, 0.45]  # 0.3 proposed three times: one model, two duplicates
    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(7)], "state": ["TERMINATED"] * 7,
                           "classifier.gen_frac": fracs, **_scores(7)})
    pop = population(cfg, trials, trials, None)
    assert pop.name == "trials" and len(pop.models) == 5 and pop.duplicates == 2
    assert list(pop.models["trial_id"]) == ["t0", "t1", "t3", "t4", "t6"]  # the first of the same model is kept
    said = write_bias_report(pop, tmp_path, None)
    table = pd.read_csv(tmp_path / "bias_correlations.csv")
    assert said["models"] == 5 and set(table["n"]) == {5}  # correlations over the 5 distinct models, not 7
    assert "over 5 models (trials, 2 duplicates dropped (same configuration and seed))" in headline(said)


def test_each_cell_shows_its_own_n(tmp_path: Path) -> None:
    models = pd.DataFrame({"classifier.gen_frac": np.linspace(0.0, 0.88, 12), **_scores(12)})
    models.loc[:4, "probe/lpp"] = np.nan  # measured on 7 of the 12 models
    fig = probe_matrix_figure(models, tmp_path / "m.png")
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    lpp, hpp = PROBES.index("probe/lpp"), PROBES.index("probe/hpp")
    assert cells[(lpp, hpp)].endswith("n=7") and cells[(hpp, hpp)].endswith("n=12")  # each cell its n
    assert "n = 7 to 12 by cell" in ax.get_title() and "n = 12)" not in ax.get_title()  # the title claims no one n
    one_each, _ = load_config("demo", ["search.repeats=1"])
    write_bias_report(population(one_each, models.assign(state="TERMINATED"), models, "trials"), tmp_path, None)
    table = pd.read_csv(tmp_path / "bias_correlations.csv")
    assert set(table.loc[table["probe"] == "probe/lpp", "n"]) == {7}  # the CSV says the same
    assert set(table.loc[table["probe"] == "probe/hpp", "n"]) == {12}


def test_the_population_is_chosen_and_said(tmp_path: Path) -> None:
    cfg, _ = load_config("science-digits-bg")  # 4 configurations x 5 seeds
    assert cfg.search.repeats == 5
    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(20)], "state": ["TERMINATED"] * 20,
                           "classifier.augment": ["none", "oracle", "git", "git"] * 5,
                           "classifier.git_start_epoch": [0, 0, 0, 20] * 5,
                           "seed": [s for s in range(5) for _ in range(4)], **_scores(20)})
    groups = pd.DataFrame({"group_id": [f"g{i}" for i in range(4)], "classifier.augment": ["none", "oracle", "git", "git"],
                           "classifier.git_start_epoch": [0, 0, 0, 20], **_scores(4, seed=1)})
    by_default = write_bias_report(population(cfg, trials, groups, None), tmp_path, None, trials=20)
    assert by_default["population"] == "groups" and by_default["models"] == 4  # group means: too few to draw
    assert "--population trials" in by_default["note"] and "(group means)" in headline(by_default)
    every = write_bias_report(population(cfg, trials, groups, "trials"), tmp_path, None, trials=20)
    assert every["population"] == "trials" and every["models"] == 20 and every["duplicates_dropped"] == 0
    assert "over 20 models (trials)" in headline(every) and (tmp_path / "bias_matrix.png").is_file()
    one_each, _ = load_config("demo", ["search.repeats=1"])
    with pytest.raises(ConfigError, match="--population"):  # a sweep without repeats has no groups to use
        check_population(one_each, "groups")


def _group(gid: str, augment: str, iterations: int, ratio: int = 100) -> Group:
    searched = {"classifier.augment": augment, "generator.iterations": iterations, "dataset.imbalance_ratio": ratio}
    g = Group(gid, dict(searched))
    g.config = {**searched, "classifier.arch": "resnet_small"}  # the flattened config it ran
    return g


def test_default_contrast_pairs_baselines_whatever_their_generator_keys() -> None:
    cfg, _ = load_config("demo", ["search.repeats=3"])
    git_short, git_long = _group("g0", "git", 900), _group("g1", "git", 1800)
    baseline = _group("g2", "none", 900)  # trained with no generator: its generator.* keys mean nothing
    other_ratio = _group("g3", "none", 1800, ratio=10)  # differs in a key that matters
    pairs = default_pairs(cfg, [git_short, git_long, baseline, other_ratio])
    assert {(a.group_id, b.group_id) for a, b in pairs} == {("g0", "g2"), ("g1", "g2")}
