"""Generator quality: label preservation can fail (untrained generator ~ chance), diversity is 1.0 for the
true nuisance and 0 for the identity; the invariant judge recognises the true nuisance where the plain one
does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gitlib.data.builds import get_dataset
from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import get_nuisance
from gitlib.data.spec import DatasetSpec
from gitlib.device import seeded_rng
from gitlib.metrics.generator_quality import (
    balanced_sources,
    generator_quality,
    label_preservation,
    nuisance_diversity,
    small_classes,
    spread,
    train_reference_classifier,
)
from gitlib.models.arch import MunitArch
from gitlib.models.inference import predict_labels
from gitlib.models.munit import build_munit

CPU = torch.device("cpu")


class Identity:
    """An augmenter that changes nothing: perfect preservation, zero diversity."""

    def sample(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return images.clone()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> BuiltDataset:
    spec = DatasetSpec(source="digits", nuisance="background", profile="exponential", imbalance_ratio=20,
                       max_per_class=100)
    return get_dataset(spec, tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def judge(data: BuiltDataset) -> nn.Module:
    return train_reference_classifier(data, seed=0, iterations=150)


def test_judge_is_good_on_real_images(data: BuiltDataset, judge: nn.Module) -> None:
    # Held-out, class-balanced test images with the nuisance (chance 0.1; a few small classes have only
    # 5 training images): the judge must be a real classifier for the checks below to mean anything.
    acc = float((predict_labels(judge, data.test_tx, CPU) == data.test_ty).float().mean())
    assert acc > 0.7


def test_untrained_generator_is_near_chance(data: BuiltDataset, judge: nn.Module) -> None:
    torch.manual_seed(0)
    model, _ = build_munit(data.channels, data.image_size, MunitArch())
    x, y = balanced_sources(data, 300, seed=0)
    res = label_preservation(model, judge, x, y, data.class_counts, seeded_rng(0, CPU))
    assert res["real_all"] > 0.9  # the judge knows the real sources...
    assert res["all"] < 0.3  # ...but an untrained generator destroys the class (chance is 0.1)


def test_identity_preserves_exactly_what_the_judge_gets_right(data: BuiltDataset, judge: nn.Module) -> None:
    x, y = balanced_sources(data, 200, seed=1)
    res = label_preservation(Identity(), judge, x, y, data.class_counts, seeded_rng(0, CPU))
    assert res["all"] == res["real_all"] and res["small"] == res["real_small"]


def test_diversity_is_one_for_the_true_nuisance_and_zero_for_identity(data: BuiltDataset) -> None:
    nuisance = get_nuisance("background")
    clean = data.test_x[:40]  # untransformed images: the nuisance draws a fresh level for each copy
    oracle = nuisance_diversity(nuisance, clean, data.train_x, nuisance, seeded_rng(0, CPU), styles=32)
    assert oracle["diversity"] == pytest.approx(1.0, abs=0.2)  # as diverse as the real training set
    assert oracle["spread_real"] == pytest.approx(100 / 12**0.5, rel=0.15)  # uniform levels 0..99
    same = nuisance_diversity(Identity(), clean, data.train_x, nuisance, seeded_rng(0, CPU), styles=4)
    assert same["diversity"] == 0.0


def test_circular_spread_wraps_orientations() -> None:
    angles = torch.tensor([-89.0, 89.0, 90.0, -90.0])
    assert float(spread(angles, dim=0, period=180.0)) < 2.0  # all nearly horizontal
    assert float(spread(angles, dim=0)) > 80.0  # a plain std would call them wildly different
    assert float(spread(torch.full((5,), 30.0), dim=0, period=180.0)) == pytest.approx(0.0, abs=1e-4)


def test_small_classes_are_the_smallest_third() -> None:
    counts = np.array([50, 3, 0, 20, 5, 9, 40])  # class 2 is empty: ignored
    assert small_classes(counts).tolist() == [1, 4]  # ceil(6 / 3) smallest


def test_generator_quality_keys(data: BuiltDataset, judge: nn.Module) -> None:
    out = generator_quality(Identity(), data, judge, get_nuisance("background"), seed=0, eval_samples=50,
                            diversity_sources=10, styles=4)
    assert {"preservation/all", "preservation/small", "diversity/ratio"} <= set(out)


def test_nuisance_ratio_is_what_the_true_nuisance_scores(data: BuiltDataset, judge: nn.Module) -> None:
    nuisance = get_nuisance("background")
    ident = generator_quality(Identity(), data, judge, nuisance, seed=0, eval_samples=50, diversity_sources=10)
    # the reference: the true nuisance redrawn on clean images, as diverse as the data whatever the generator
    assert ident["diversity/nuisance_ratio"] == pytest.approx(1.0, abs=0.2)
    assert ident["diversity/ratio"] == 0.0
    other = generator_quality(nuisance, data, judge, nuisance, seed=0, eval_samples=50, diversity_sources=10)
    assert other["diversity/nuisance_ratio"] == ident["diversity/nuisance_ratio"]
    # training images already carry a background, which the nuisance cannot redraw: hence clean sources
    assert other["diversity/ratio"] < 0.5 * ident["diversity/nuisance_ratio"]
    assert "preservation/invariant_small" not in ident  # no invariant judge given: no invariant keys


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> BuiltDataset:
    spec = DatasetSpec(source="digits", nuisance="rotation", profile="exponential", imbalance_ratio=50,
                       max_per_class=100)
    return get_dataset(spec, tmp_path_factory.mktemp("rot"))


@pytest.mark.slow
def test_invariant_judge_recognises_the_true_nuisance_on_small_classes(rotated: BuiltDataset) -> None:
    # The plain judge has seen a small class at a few angles only and calls many of its images, turned
    # afresh, wrong; the judge trained with the nuisance recognises them: it measures whether a generator
    # keeps the class, not whether it keeps the angle.
    rotation = get_nuisance("rotation")
    plain = train_reference_classifier(rotated, seed=0, iterations=300)
    invariant = train_reference_classifier(rotated, seed=0, iterations=300, augment=rotation)
    out = generator_quality(rotation, rotated, plain, None, seed=0, eval_samples=200, invariant_judge=invariant)
    assert out["preservation/invariant_small"] > 0.8
    assert out["preservation/invariant_small"] > out["preservation/small"] + 0.2
