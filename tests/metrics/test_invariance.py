"""eKLD / consistency: zero for input-blind models, self-pairing, KL direction, empty classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gitlib.data.nuisances import get_nuisance
from gitlib.metrics.invariance import ekld_per_class, invariance_per_class, per_class_subset


class ConstantModel(nn.Module):
    """Ignores its input: logits are a learned-looking bias, the same for every image."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(-1.0, 2.0, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


class MeanModel(nn.Module):
    """Logits depend on each image's mean brightness: logits = mean * w + b."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-4.0, 4.0, k))
        self.b = nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None] * self.w + self.b


class TwoStateModel(nn.Module):
    """p for dark images (mean < 0.5), q for bright ones."""

    def __init__(self, p: list[float], q: list[float]) -> None:
        super().__init__()
        self.register_buffer("logp", torch.tensor(p).log())
        self.register_buffer("logq", torch.tensor(q).log())
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x.mean(dim=(1, 2, 3)) > 0.5)[:, None]
        return torch.where(bright, self.logq, self.logp)


class Identity:
    def sample(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images.clone()


class ToWhite:
    def sample(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.ones_like(images)


def _images(n: int = 24, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, :, 3:9, 4:8] = torch.randint(120, 255, (n, 1, 6, 4), generator=g, dtype=torch.uint8)  # a stroke
    y = torch.arange(n) % 3
    return x, y


@pytest.mark.parametrize("nuisance", ["rotation", "background", "dilation"])
def test_ekld_zero_for_model_that_ignores_input(nuisance: str) -> None:
    x, y = _images()
    ekld = ekld_per_class(ConstantModel(3), x, y, nuisance, num_samples=5, seed=0)
    # an input-blind model is perfectly invariant: exactly zero, not merely small
    assert np.array_equal(ekld, np.zeros(3))


def test_ekld_positive_for_input_dependent_model() -> None:
    x, y = _images()
    ekld = ekld_per_class(MeanModel(3), x, y, get_nuisance("background"), num_samples=5, seed=0)
    # the background changes the mean brightness, so predictions move: every class has eKLD > 0
    assert (ekld > 1e-4).all()


def test_pairs_each_image_with_its_own_transforms() -> None:
    # Two images per class with very different brightness; identity "transforms".
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    x[0], x[1], x[2], x[3] = 10, 250, 40, 200
    y = torch.tensor([0, 0, 1, 1])
    model = MeanModel(2)
    ekld = ekld_per_class(model, x, y, Identity(), num_samples=3, seed=0, batch_size=4)
    # paired with itself, an unchanged copy gives KL = 0; pairing with the other image of the class
    # (the reference code's shuffle) would give a large positive value
    assert np.allclose(ekld, 0.0, atol=1e-7)
    with torch.no_grad():
        logp = torch.log_softmax(model(x.float() / 255), dim=1)
    cross = (logp[0].exp() * (logp[0] - logp[1])).sum()
    assert cross > 0.1  # what the wrong pairing would have measured for class 0


def test_kl_direction_matches_hand_computation() -> None:
    p, q = [0.9, 0.1], [0.5, 0.5]
    x = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)  # dark: the model says p; transformed: white -> q
    y = torch.zeros(3, dtype=torch.int64)
    res = invariance_per_class(TwoStateModel(p, q), x, y, ToWhite(), num_samples=4, seed=0)
    kl_pq = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # 0.3681: KL(p(y|x) || p(y|T(x)))
    kl_qp = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108: the reverse direction
    assert res.ekld[0] == pytest.approx(kl_pq, rel=1e-5)
    assert abs(res.ekld[0] - kl_qp) > 0.1
    # arg-max of p is class 0; of q is a tie resolved to class 0 too -> consistent
    assert res.consistency[0] == pytest.approx(1.0)


def test_empty_classes_are_nan_and_consistency_counts_flips() -> None:
    x = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    y = torch.tensor([0, 2])
    res = invariance_per_class(TwoStateModel([0.2, 0.8], [0.7, 0.3]), x, y, ToWhite(), num_samples=2,
                               seed=0, num_classes=4)
    assert np.isnan(res.ekld[1]) and np.isnan(res.ekld[3])  # no images: undefined, not 0
    assert np.isfinite(res.ekld[[0, 2]]).all()
    assert res.consistency[0] == 0.0  # every copy flips the arg-max


def test_chunking_does_not_change_result() -> None:
    x, y = _images(n=30)
    kw = dict(nuisance=get_nuisance("rotation", degrees=90), num_samples=6, seed=3)
    a = ekld_per_class(MeanModel(3), x, y, batch_size=12, **kw)  # 2 images per chunk
    b = ekld_per_class(MeanModel(3), x, y, batch_size=4096, **kw)  # one chunk
    assert a.shape == (3,) and (a > 0).all()
    # the transforms are drawn in row order either way, so chunking only changes the batching
    assert np.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_accepts_grey_hw_images_and_same_seed_same_result() -> None:
    x, y = _images()
    nuis = get_nuisance("rotation")
    a = ekld_per_class(MeanModel(3), x[:, 0], y, nuis, num_samples=4, seed=5)  # (N, H, W)
    b = ekld_per_class(MeanModel(3), x, y, nuis, num_samples=4, seed=5)
    assert np.array_equal(a, b)


def test_per_class_subset_takes_first_k_of_each_class() -> None:
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 0])
    idx = per_class_subset(labels, 2)
    assert idx.tolist() == [0, 1, 2, 3, 4]
    assert per_class_subset(labels, None).tolist() == list(range(7))
