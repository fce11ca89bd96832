"""Critical-band probe: the Laplacian pyramid, band-limited noise, the noise threshold and the Gaussian fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gitlib.device import seeded_rng
from gitlib.probes.critical_band import (
    CONTRAST,
    FWHM_PER_SIGMA,
    GREY_LEVEL,
    NOISE_SDS,
    band_centres,
    band_noise,
    fit_critical_band,
    laplacian_pyramid,
    low_contrast_grey,
    noise_threshold,
    num_bands,
    pyr_expand,
)

CPU = torch.device("cpu")


def logistic_accuracy(sds: np.ndarray, midpoint: float, clean: float, chance: float) -> np.ndarray:
    """Accuracy falling from `clean` to `chance` as a logistic in log SD, halfway at `midpoint`."""
    return chance + (clean - chance) / (1.0 + np.exp((np.log(sds) - math.log(midpoint)) / 0.4))


@pytest.mark.parametrize("midpoint", [0.013, 0.03, 0.05, 0.11])
def test_noise_threshold_recovers_the_midpoint_of_a_logistic(midpoint: float) -> None:
    sds = np.geomspace(0.005, 0.5, 41)
    acc = logistic_accuracy(sds, midpoint, clean=0.9, chance=0.1)
    # on a fine grid, linear interpolation in log SD finds the halfway point of the curve
    assert noise_threshold(sds, acc, 0.9, 0.1) == pytest.approx(midpoint, rel=0.01)


def test_noise_threshold_on_the_probe_grid() -> None:
    midpoint = math.sqrt(0.04 * 0.08)
    acc = logistic_accuracy(np.array(NOISE_SDS), midpoint, clean=0.95, chance=0.1)
    # a logistic is point-symmetric about its midpoint, so the chord between 0.04 and 0.08 hits it exactly
    assert noise_threshold(NOISE_SDS, acc, 0.95, 0.1) == pytest.approx(midpoint, rel=1e-9)


def test_noise_threshold_edge_cases() -> None:
    # accuracy never falls halfway: capped at the largest SD
    assert noise_threshold(NOISE_SDS, [0.9, 0.9, 0.85, 0.8], 0.9, 0.1) == pytest.approx(0.16)
    # already past halfway at the smallest SD: the clean point counts as one grid step below (SD 0.01)
    assert 0.01 < noise_threshold(NOISE_SDS, [0.2, 0.1, 0.1, 0.1], 0.9, 0.1) <= 0.02
    # clean accuracy at chance: no threshold
    assert math.isnan(noise_threshold(NOISE_SDS, [0.1, 0.1, 0.1, 0.1], 0.1, 0.1))
    # undefined accuracies (a class without images): no threshold
    assert math.isnan(noise_threshold(NOISE_SDS, [math.nan] * 4, math.nan, 0.1))


@pytest.mark.parametrize(("size", "centre", "sigma"), [(16, 1.3, 0.7), (32, 2.2, 1.1), (224, 4.0, 0.8)])
def test_fit_recovers_a_gaussian_in_log_frequency(size: int, centre: float, sigma: float) -> None:
    x = band_centres(size, size)
    sens = 25.0 * np.exp(-0.5 * ((x - centre) / sigma) ** 2)
    fit = fit_critical_band(x, sens)
    # noise-free sensitivities from a Gaussian give back its centre, FWHM and peak
    assert fit.center == pytest.approx(centre, abs=1e-3)
    assert fit.bandwidth == pytest.approx(FWHM_PER_SIGMA * sigma, rel=1e-3)
    assert fit.peak == pytest.approx(25.0, rel=1e-3)


def test_fit_needs_three_finite_points() -> None:
    # fewer than 3 finite sensitivities cannot determine 3 parameters: NaN
    assert all(math.isnan(v) for v in fit_critical_band([2.5, 1.5, 0.5], [10.0, math.nan, 8.0]))
    # a flat profile still fits: a very broad band (sigma at its upper bound), peak at the common value
    flat = fit_critical_band([2.5, 1.5, 0.5, -0.5], [6.25] * 4)
    assert flat.peak == pytest.approx(6.25, rel=0.02) and flat.bandwidth > 10


def test_band_count_and_centres() -> None:
    # bands whose coarser level keeps >= 2 pixels: ceil(log2 N) - 1
    assert [num_bands(n, n) for n in (16, 28, 32, 224)] == [3, 4, 4, 7]
    # band k spans N / 2^(k+2) .. N / 2^(k+1) cycles per image; centre log2(N) - k - 1.5
    assert band_centres(16, 16).tolist() == [2.5, 1.5, 0.5]


def test_pyramid_collapses_back_to_the_image() -> None:
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    levels = laplacian_pyramid(x, 4)
    image = levels[-1]
    for band in reversed(levels[:-1]):
        image = band + pyr_expand(image, (band.shape[-2], band.shape[-1]))
    # each band is a level minus its expanded coarser level, so summing back is exact
    assert torch.allclose(image, x, atol=1e-5)


@pytest.mark.parametrize("size", [16, 32])
def test_band_noise_has_unit_rms_and_steps_down_an_octave_per_band(size: int) -> None:
    rng = seeded_rng(0, CPU)
    freq = torch.fft.fftfreq(size) * size
    radius = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)  # cycles per image
    centroids = []
    for k in range(num_bands(size, size)):
        noise = band_noise((128, 1, size, size), k, rng, CPU)
        # each image's noise is scaled to RMS exactly 1 (the SD multiplies it)
        assert torch.allclose(noise.square().mean(dim=(-2, -1)).sqrt(), torch.ones(128, 1), atol=1e-5)
        power = torch.fft.fft2(noise).abs().square().mean(dim=(0, 1))
        keep = radius > 0
        centroids.append(float((power[keep] * radius[keep].log2()).sum() / power[keep].sum()))
    steps = np.diff(centroids)
    # coarser bands carry lower frequencies: the power-weighted mean frequency falls by about an octave
    assert np.all(steps < -0.5) and np.all(steps > -1.6)
    # the finest band sits near its nominal centre
    assert centroids[0] == pytest.approx(band_centres(size, size)[0], abs=0.4)


def test_low_contrast_grey() -> None:
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.25
    out = low_contrast_grey(x)
    grey = x.mean(dim=1, keepdim=True)
    # one grey channel, mean moved to GREY_LEVEL
    assert out.shape == (5, 1, 16, 16)
    assert torch.allclose(out.mean(dim=(-2, -1)), torch.full((5, 1), GREY_LEVEL), atol=1e-5)
    # deviations from the mean scaled by CONTRAST
    assert torch.allclose(out.std(dim=(-2, -1)), grey.std(dim=(-2, -1)) * CONTRAST, atol=1e-5)
