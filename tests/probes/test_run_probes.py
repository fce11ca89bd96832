"""run_probes: the registry, the documented names, head / tail, the class subset, batching, determinism."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from gitlib.device import seeded_rng
from gitlib.errors import ConfigError
from gitlib.metrics.accuracy import head_tail
from gitlib.models.resnet import build_classifier
from gitlib.probes import PROBES, ProbeResult, run_probes
from gitlib.probes.base import class_subset

CPU = torch.device("cpu")
COUNTS = np.array([int(500 * 100 ** (-k / 9)) for k in range(10)])  # 500 ... 5: head 0-2, tail 7-9
Predict = Callable[[torch.Tensor], torch.Tensor]
CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast", "jpeg")
SCALARS = ("probe/lpp", "probe/hpp", "probe/spectral_bias", "probe/cb_center", "probe/cb_bandwidth",
           "probe/cb_peak_sensitivity", "probe/corruption_acc", *(f"probe/corruption_acc_{c}" for c in CORRUPTIONS))
COLUMNS = {"probe/lpp": "lpp", "probe/hpp": "hpp", "probe/spectral_bias": "spectral_bias",
           "probe/cb_center": "cb_center", "probe/cb_bandwidth": "cb_bandwidth",
           "probe/cb_peak_sensitivity": "cb_peak_sensitivity", "probe/corruption_acc": "corruption_acc"}


def standardise(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, Predict]:
    """uint8 16 x 16 digit test images (half of sklearn's), labels, and a nearest-centroid classifier on
    standardised images (so it survives the critical-band probe's low contrast) fitted on the other half."""
    data = load_digits()
    x = F.interpolate(torch.from_numpy(data.images).float()[:, None] / 16.0, size=(16, 16), mode="bilinear")
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(data.target).long()
    train = standardise(x[::2].float() / 255)
    centroids = torch.stack([train[y[::2] == c].mean(0) for c in range(10)])  # (10, 256)
    return x[1::2], y[1::2], lambda b: torch.cdist(standardise(b), centroids).argmin(dim=1)


def run_all(digits: tuple[torch.Tensor, torch.Tensor, Predict], seed: int = 0) -> ProbeResult:
    x, y, predict = digits
    return run_probes(list(PROBES.names()), predict, x, y, 10, COUNTS, seed=seed, device=CPU)


def test_documented_names_columns_and_curves(digits: tuple[torch.Tensor, torch.Tensor, Predict]) -> None:
    r = run_all(digits)
    # every scalar comes with its head and tail means, and nothing else is reported
    assert set(r.metrics) == {f"{m}{s}" for m in SCALARS for s in ("", "_head", "_tail")}
    assert all(isinstance(v, float) for v in r.metrics.values())  # plain floats, ready for MLflow
    # one (num_classes,) float64 column per per-class quantity
    assert set(r.per_class) == set(COLUMNS.values())
    assert all(v.shape == (10,) and v.dtype == np.float64 for v in r.per_class.values())
    # curves: cut-off steps 1..9, band index 0..2 for 16 x 16 images, severities 1..5
    expected = {"probe/lowpass_acc": range(1, 10), "probe/highpass_acc": range(1, 10),
                "probe/cb_sensitivity": range(3), **{f"probe/corruption_{c}": range(1, 6) for c in CORRUPTIONS}}
    assert {k: sorted(v) for k, v in r.curves.items()} == {k: list(v) for k, v in expected.items()}
    # a contrast-invariant classifier gets a finite critical band, inside the probed range +- 1 octave
    assert -1.5 <= r.metrics["probe/cb_center"] <= 3.5 and r.metrics["probe/cb_bandwidth"] > 0


def test_head_and_tail_come_from_the_per_class_columns(digits: tuple[torch.Tensor, torch.Tensor, Predict]) -> None:
    r = run_all(digits)
    for metric, column in COLUMNS.items():
        head, tail = head_tail(r.per_class[column], COUNTS)
        # _head / _tail are the means over the largest / smallest third of classes by training count
        np.testing.assert_equal([r.metrics[f"{metric}_head"], r.metrics[f"{metric}_tail"]], [head, tail])


def test_empty_unknown_and_alias_names(digits: tuple[torch.Tensor, torch.Tensor, Predict]) -> None:
    x, y, predict = digits
    # no probes: an empty result
    assert run_probes([], predict, x, y, 10, COUNTS, 0, CPU) == ProbeResult()
    # an unknown probe is a config error, raised before any work
    with pytest.raises(ConfigError, match="shape_bias"):
        run_probes(["spectral", "shape_bias"], predict, x, y, 10, COUNTS, 0, CPU)
    # names are matched case-insensitively
    assert "probe/lpp" in run_probes(["Spectral"], predict, x, y, 10, COUNTS, 0, CPU).metrics


def test_same_seed_same_result_other_seed_other_noise(digits: tuple[torch.Tensor, torch.Tensor, Predict]) -> None:
    a, b = run_all(digits, seed=3), run_all(digits, seed=3)
    # the same seed reproduces every value (NaN included)
    np.testing.assert_equal((a.metrics, a.per_class, a.curves), (b.metrics, b.per_class, b.curves))
    x, y, predict = digits
    for name, curve in (("critical_band", "probe/cb_sensitivity"), ("corruptions", "probe/corruption_gaussian_noise")):
        runs = [run_probes([name], predict, x, y, 10, COUNTS, seed, CPU, max_per_class=None) for seed in (0, 1)]
        # on the same images, another seed draws other noise, so the noisy probes' accuracies differ
        assert runs[0].curves[curve] != runs[1].curves[curve], name


def test_class_subset() -> None:
    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 12)
    pick = class_subset(labels, 10, seeded_rng(0, CPU))
    # at most max_per_class per class, all of a smaller class
    assert torch.bincount(labels[pick]).tolist() == [10, 5, 10]
    # seeded: the same seed picks the same images, another seed others
    assert torch.equal(pick, class_subset(labels, 10, seeded_rng(0, CPU)))
    assert not torch.equal(pick, class_subset(labels, 10, seeded_rng(1, CPU)))
    # no limit: every image
    assert torch.equal(class_subset(labels, None, seeded_rng(0, CPU)), torch.arange(len(labels)))


def test_batches_and_relative_accuracy_nan_where_clean_is_zero(
        digits: tuple[torch.Tensor, torch.Tensor, Predict]) -> None:
    x, y, _ = digits
    sizes: list[int] = []

    def always_zero(b: torch.Tensor) -> torch.Tensor:
        sizes.append(len(b))
        return torch.zeros(len(b), dtype=torch.int64)

    r = run_probes(["spectral"], always_zero, x, y, 10, COUNTS, 0, CPU, batch_size=64)
    # predict is called on chunks of at most batch_size images
    assert max(sizes) == 64
    # classes the model never gets right on clean images have no relative accuracy (NaN); class 0 keeps all
    assert r.per_class["lpp"][0] == 1.0 and np.isnan(r.per_class["lpp"][1:]).all()


def test_a_resnet_through_run_probes(digits: tuple[torch.Tensor, torch.Tensor, Predict]) -> None:
    x, y, _ = digits
    model = build_classifier("resnet_small", 1, 10, mean=[0.5], std=[0.25]).eval()
    r = run_probes(["corruptions"], lambda b: model(b).argmax(1), x, y, 10, COUNTS, 0, CPU, max_per_class=4)
    # a real model runs batched through every corruption and yields per-class columns
    assert r.per_class["corruption_acc"].shape == (10,) and len(r.curves) == 4
