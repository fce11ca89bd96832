"""Spectral probe: the ideal rectangular Fourier filters and the relative accuracies built on them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from gitlib.probes import run_probes
from gitlib.probes.spectral import CUTOFFS, KINDS, centred_spectrum, fourier_filter, rect_mask

CPU = torch.device("cpu")
Predict = Callable[[torch.Tensor], torch.Tensor]
Digits = tuple[torch.Tensor, torch.Tensor, Predict]


def digits_16px() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's digits upsampled to float (1797, 1, 16, 16) in [0, 1] and their labels."""
    data = load_digits()
    x = torch.from_numpy(data.images).float()[:, None] / 16.0
    return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1), \
        torch.from_numpy(data.target).long()


def nearest_centroid(train_x: torch.Tensor, train_y: torch.Tensor) -> Predict:
    """A 'trained-ish' classifier: the class whose mean training image is nearest."""
    centroids = torch.stack([train_x[train_y == c].mean(0).flatten() for c in range(10)])  # (10, D)
    return lambda x: torch.cdist(x.flatten(1), centroids).argmin(dim=1)


@pytest.fixture(scope="module")
def digits() -> Digits:
    x, y = digits_16px()
    predict = nearest_centroid(x[::2], y[::2])
    return x[1::2], y[1::2], predict


def accuracy(predict: Predict, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(x) == y).double().mean())


def test_lowpass_099_leaves_images_and_accuracy_nearly_unchanged(digits: Digits) -> None:
    x, y, predict = digits
    filtered = fourier_filter(x, 0.99, "low")
    # c = 0.99 removes only the Nyquist row / column of an even size: images barely change
    assert (filtered - x).abs().mean() < 0.01
    # so a trained-ish model keeps (nearly) all its accuracy
    assert accuracy(predict, filtered, y) / accuracy(predict, x, y) == pytest.approx(1.0, abs=0.03)


def test_lowpass_001_leaves_only_the_mean_and_chance_accuracy(digits: Digits) -> None:
    x, y, predict = digits
    filtered = fourier_filter(x, 0.01, "low")
    # c = 0.01 keeps only the zero frequency: every image becomes flat at its own mean
    assert torch.allclose(filtered, x.mean(dim=(-2, -1), keepdim=True).expand_as(x), atol=1e-5)
    # flat images carry almost no class information: accuracy near chance (0.1)
    assert accuracy(predict, filtered, y) < 0.3


@pytest.mark.parametrize("size", [15, 16])
def test_lowpass_099_is_identity_up_to_nyquist(size: int) -> None:
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = rect_mask(size, size, 0.99, "low", CPU)
    # odd sizes have no Nyquist bin: c = 0.99 keeps every bin; even sizes lose just row / column 0
    assert int((~mask).sum()) == (0 if size % 2 else 2 * size - 1)
    if size % 2:
        # keeping every bin gives the image back exactly
        assert torch.allclose(fourier_filter(x, 0.99, "low"), x, atol=1e-5)


@pytest.mark.parametrize("size", [15, 16])
@pytest.mark.parametrize("cutoff", [0.01, 0.3, 0.5, 0.7])
def test_filters_are_centred_and_complementary(size: int, cutoff: float) -> None:
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1))
    spectrum = centred_spectrum(x)
    for kind in KINDS:
        mask = rect_mask(size, size, cutoff, kind, CPU)
        back = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)))
        # a rectangle centred on the zero frequency is symmetric (k kept iff -k kept): a real image comes back
        assert back.imag.abs().max() < 1e-5
    low = fourier_filter(x, cutoff, "low", clip=False)
    high = fourier_filter(x, 1.0 - cutoff, "high", clip=False)
    # high-pass at 1 - c removes exactly the rectangle that low-pass at c keeps: together they rebuild x
    assert torch.allclose(low + high, x, atol=1e-5)
    # the zero frequency is always in the low-pass and never in the high-pass
    assert torch.allclose(low.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-5)
    assert high.mean(dim=(-2, -1)).abs().max() < 1e-5


def mean_coded_images(per_class: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (10 * per_class, 1, 16, 16) images whose mean is (k + 0.5) / 10 for class k, with a small
    zero-mean random pattern on top."""
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(10).repeat_interleave(per_class)
    pattern = torch.rand(len(labels), 1, 16, 16, generator=g) * 0.04 - 0.02
    pattern -= pattern.mean(dim=(-2, -1), keepdim=True)
    x = (labels.float() + 0.5).view(-1, 1, 1, 1) / 10 + pattern
    return (x * 255).round().to(torch.uint8), labels


def test_mean_only_model_keeps_accuracy_under_every_lowpass() -> None:
    images, labels = mean_coded_images()

    def predict(x: torch.Tensor) -> torch.Tensor:  # the class is the decile of the image mean
        return (x.mean(dim=(1, 2, 3)) * 10).floor().clamp(0, 9).long()

    counts = np.full(10, 50)
    result = run_probes(["spectral"], predict, images, labels, 10, counts, seed=0, device=CPU)
    # every low-pass keeps the zero frequency, so a model that reads only the mean loses nothing
    assert all(v == pytest.approx(1.0) for v in result.curves["probe/lowpass_acc"].values())
    # hence lpp = 1, and per class too
    assert result.metrics["probe/lpp"] == pytest.approx(1.0) and np.allclose(result.per_class["lpp"], 1.0)
    # high-pass removes the mean, so such a model falls to (about) chance
    assert result.metrics["probe/hpp"] < 0.3


def test_curves_cover_cutoffs_01_to_09() -> None:
    # steps are round(10 c) for c = 0.1 .. 0.9
    assert [round(c * 10) for c in CUTOFFS] == list(range(1, 10))
