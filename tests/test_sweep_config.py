"""Config objects: round trips, search-space validation and pinning by --set."""

from __future__ import annotations

import pytest

from gitlib.errors import ConfigError
from gitlib.train.config import ClassifierConfig
from sweeps.config import SweepConfig, build, load_config, with_value
from sweeps.config_yaml import preset_names


def test_round_trip_keeps_every_value() -> None:
    cfg, _ = load_config("k49-bg-lt")
    # as_dict -> build is the identity: config.yaml and MLflow params rebuild the same config
    assert build(cfg.as_dict()) == cfg
    assert list(cfg.as_dict())[:7] == ["name", "seed", "trial", "probes", "storage", "dataset", "generator"]


def test_every_preset_loads() -> None:
    names = preset_names()
    assert {"k49-bg-lt", "k49-dil-lt", "k49-rot-lt", "cifar10-lt", "cifar100-lt", "gtsrb-lt"} <= set(names)
    for name in names:
        cfg, _ = load_config(name)
        # classifier presets search the augmentation (its share, or GIT against the baseline and the oracle);
        # the MSR one its problem x model grid; the generator one MUNIT's own knobs
        space = set(cfg.search.space)
        if cfg.trial == "msr":
            assert {"msr.problem", "msr.model"} <= space, name
        elif cfg.trial == "generator":
            assert space and all(k.startswith("generator.") for k in space), name
        elif cfg.trial == "synthetic":
            assert space and all(k.startswith("synthetic.") for k in space), name
        else:
            assert space & {"classifier.gen_frac", "classifier.augment"}, name


def test_set_on_searched_key_pins_it() -> None:
    cfg, pinned = load_config("k49-bg-lt", ["classifier.gen_frac=0.3"])
    # the pinned key leaves the space and takes the given value
    assert pinned == ["classifier.gen_frac"]
    assert "classifier.gen_frac" not in cfg.search.space
    assert cfg.section(ClassifierConfig).gen_frac == 0.3


def test_set_adds_and_drops_searched_keys() -> None:
    cfg, _ = load_config("demo", ["search.space.classifier.gen_frac=null",
                                  "search.space.seed={type: categorical, choices: [0, 1]}", "search.repeats=1"])
    assert set(cfg.search.space) == {"seed"}  # null drops an entry, as in a YAML that extends another
    assert cfg.search.space["seed"]["choices"] == [0, 1] and cfg.search.points_to_evaluate == ()


def test_set_parses_yaml_values() -> None:
    cfg, _ = load_config("k49-bg-lt", ["classifier.milestones=[10, 20]", "dataset.root=/data/k49"])
    assert cfg.section(ClassifierConfig).milestones == (10, 20)
    assert cfg.dataset.root == "/data/k49"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("classifier.gen_frac=1.5", "classifier.gen_frac"),
        ("classifier.loss=hinge", "classifier.loss"),
        ("dataset.nuisance=blur", "dataset.nuisance"),
        ("dataset.imbalance_ratio=0.5", "dataset.imbalance_ratio"),
        ("classifier.nope=1", "classifier.nope"),
        ("search.space.classifier.bogus={type: float, low: 0, high: 1}", "search.space.classifier.bogus"),
        ("search.space.classifier.gen_frac={type: float, low: 0, high: 2}", "classifier.gen_frac"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("k49-bg-lt", [override])
    # the error names the offending dotted key
    assert key in str(info.value)


def test_with_value_validates_the_sample() -> None:
    cfg, _ = load_config("k49-bg-lt")
    assert with_value(cfg, "classifier.gen_frac", 0.7).section(ClassifierConfig).gen_frac == 0.7
    with pytest.raises(ConfigError):
        with_value(cfg, "classifier.gen_frac", -1.0)


def test_flatten_gives_dotted_keys() -> None:
    flat = SweepConfig().flat()
    assert flat["classifier.gen_frac"] == 0.5
    assert flat["dataset.source"] == "digits"
