"""Critical-band probe: which band of spatial frequencies the model's decisions are most sensitive to.

In the spirit of critical-band masking in psychophysics: the test images are made grey (mean over the
channels, repeated back for the model) and low in contrast, (x - image mean) * 0.2 + 0.449, clipped to
[0, 1]; then Gaussian noise restricted to one octave band of spatial frequency is added at RMS
0.02, 0.04, 0.08 and 0.16, clipped again. Noise in the band the model relies on hurts most.

Bands. A Laplacian pyramid (blur with the 5-tap binomial kernel [1, 4, 6, 4, 1] / 16 in both directions and
keep every second pixel; a level minus its coarser level expanded back) splits an image of side
N = min(H, W) into octave bands: band k (k = 0 finest) holds roughly N / 2^(k+2) .. N / 2^(k+1) cycles per
image, centre log2(N) - k - 1.5 in log2 cycles per image (the geometric mean of its edges). There are
ceil(log2 N) - 1 bands: every band whose upper edge N / 2^(k+1) lies above 1 cycle per image, i.e. whose
coarser pyramid level still has at least 2 pixels: 3 for 16 x 16 images, 4 for 28 x 28 and 32 x 32, 7 for
224 x 224 (as in the ImageNet version of this probe). The next band down would hold nothing but the zero
frequency and the 1-cycle frequencies, so its noise would land in the same frequencies as the band above
it (measured: the same power-weighted mean frequency) and would only blur the fit. Band-k noise is white
Gaussian noise's band-k pyramid level, expanded back to full size and scaled so that each image's noise has
RMS exactly 1 (times the SD). One noise draw per band and image serves all four SDs (common random numbers
keep a band's accuracy-vs-SD curve smooth); bands use independent draws.

Threshold. Per band, the accuracy at the four SDs and the clean (low-contrast, noise-free) accuracy give
the noise threshold: the SD at which accuracy has fallen halfway from clean to chance (1 / num_classes),
found by linear interpolation in log SD between the grid points that bracket it (`noise_threshold`).
The clean accuracy stands at one grid step below the smallest SD (0.01), so a threshold below the grid
lies in (0.01, 0.02]. Capped, not extrapolated: a band where even SD 0.16 does not bring accuracy halfway
down gets threshold 0.16 (sensitivity 6.25, an upper bound for that band). NaN when the clean accuracy is
at or below chance (a model that already fails on the low-contrast grey images has no threshold).
Sensitivity = 1 / threshold.

Fit. `fit_critical_band` fits a Gaussian in log2 frequency, s(f) = a * exp(-(f - mu)^2 / (2 sigma^2)), to
the sensitivities of the bands with scipy's curve_fit: `probe/cb_center` = mu (log2 cycles per image),
`probe/cb_bandwidth` = the full width at half maximum 2 sqrt(2 ln 2) sigma (octaves), and
`probe/cb_peak_sensitivity` = a. The fit starts at the most sensitive band with sigma = 1 octave; mu is
kept within 1 octave of the probed centres and sigma within [0.1, 10] octaves; fewer than 3 finite
sensitivities or a failed fit give NaN. Per class the same from per-class accuracies (columns `cb_center`,
`cb_bandwidth`, `cb_peak_sensitivity`); curve `probe/cb_sensitivity` over band index k (0 = finest).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy.optimize import OptimizeWarning, curve_fit

from gitlib.probes.base import ProbeContext, ProbeResult

NOISE_SDS = (0.02, 0.04, 0.08, 0.16)  # RMS of the added band-limited noise, images in [0, 1]
CONTRAST = 0.2  # contrast kept by the low-contrast reference images
GREY_LEVEL = 0.449  # their mean level
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
SIGMA_BOUNDS = (0.1, 10.0)  # octaves: a fitted sigma is kept within these
CENTRE_MARGIN = 1.0  # octaves: the fitted centre stays within this of the probed band centres
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


class BandFit(NamedTuple):
    """A fitted critical band: centre (log2 cycles / image), FWHM bandwidth (octaves), peak sensitivity."""

    center: float
    bandwidth: float
    peak: float


NAN_FIT = BandFit(math.nan, math.nan, math.nan)


# ---- Laplacian pyramid --------------------------------------------------------------------------------


def num_bands(height: int, width: int) -> int:
    """ceil(log2(min(H, W))) - 1: the octave bands whose coarser pyramid level has at least 2 pixels."""
    side = min(height, width)
    return max(0, math.ceil(math.log2(side)) - 1) if side >= 2 else 0


def band_centres(height: int, width: int) -> np.ndarray:
    """(num_bands,) centre of band k in log2 cycles per image: log2(N) - k - 1.5, N = min(H, W)."""
    return math.log2(min(height, width)) - np.arange(num_bands(height, width)) - 1.5


def _kernel(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device) / 16.0
    return (k[:, None] * k[None, :])[None, None]  # (1, 1, 5, 5), sums to 1


def pyr_reduce(x: torch.Tensor) -> torch.Tensor:
    """Blur and keep every second pixel: (B, 1, H, W) -> (B, 1, ceil(H/2), ceil(W/2))."""
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), _kernel(x), stride=2)


def pyr_expand(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample by 2 with the same kernel (x4 for the inserted zeros) and crop: (B, 1, h, w) -> (B, 1, *size).

    Coarse pixel j sits on fine pixel 2j, as in `pyr_reduce`; a replicated border avoids dark edges."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, 1, h+2, w+2)
    up = F.conv_transpose2d(padded, 4.0 * _kernel(x), stride=2, padding=2, output_padding=1)  # (B, 1, 2h+4, 2w+4)
    return up[..., 2:2 + size[0], 2:2 + size[1]]


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[L_0, ..., L_{levels-1}, G_levels] of (B, 1, H, W) images: band-pass levels, then the residual.

    Collapsing (expand the residual, add the next band, repeat) gives back `x` exactly."""
    out, g = [], x
    for _ in range(levels):
        coarser = pyr_reduce(g)
        out.append(g - pyr_expand(coarser, (g.shape[-2], g.shape[-1])))
        g = coarser
    return [*out, g]


def band_noise(shape: tuple[int, int, int, int], band: int, rng: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """White Gaussian noise (B, 1, H, W) restricted to pyramid band `band`, each image's RMS exactly 1."""
    white = torch.randn(shape, generator=rng, device=device)
    level = laplacian_pyramid(white, band + 1)[band]
    sizes = [(shape[-2], shape[-1])]
    for _ in range(band):  # the sizes of the finer levels, to expand back through
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    for size in reversed(sizes[:-1]):
        level = pyr_expand(level, size)
    rms = level.square().mean(dim=(-2, -1), keepdim=True).sqrt()  # (B, 1, 1, 1)
    return level / rms.clamp_min(1e-12)


def low_contrast_grey(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> grey (B, 1, H, W), contrast scaled by CONTRAST around GREY_LEVEL."""
    grey = images.mean(dim=1, keepdim=True)
    mean = grey.mean(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
    return ((grey - mean) * CONTRAST + GREY_LEVEL).clamp(0.0, 1.0)


# ---- threshold and fit --------------------------------------------------------------------------------


def noise_threshold(sds: ArrayLike, accuracies: ArrayLike, clean: float, chance: float) -> float:
    """The noise SD at which accuracy falls halfway from `clean` to `chance`, interpolated in log SD.

    `accuracies[i]` is the accuracy at `sds[i]` (increasing). The clean accuracy counts as the accuracy
    one grid step below the smallest SD (SD 0.01 for the doubling grid), so a threshold below the grid is
    bounded. Capped: if accuracy never falls halfway, the threshold is the largest SD (a lower bound on the
    true threshold, so the sensitivity 1 / threshold is an upper bound). NaN if the clean accuracy is at or
    below chance or anything is undefined."""
    sd = np.asarray(sds, dtype=np.float64)
    acc = np.asarray(accuracies, dtype=np.float64)
    if not (np.isfinite(clean) and clean > chance and np.isfinite(acc).all() and (sd > 0).all()):
        return math.nan
    target = (clean + chance) / 2.0
    log_sd = np.log(sd)
    step = log_sd[1] - log_sd[0] if len(sd) > 1 else math.log(2.0)
    xs = np.concatenate([[log_sd[0] - step], log_sd])  # (S+1,) with the clean point first
    ys = np.concatenate([[clean], acc])
    hits = np.nonzero(ys <= target)[0]  # never index 0: clean > target
    if hits.size == 0:
        return float(sd[-1])
    i = int(hits[0])  # ys[i-1] > target >= ys[i]
    frac = (ys[i - 1] - target) / (ys[i - 1] - ys[i])
    return float(np.exp(xs[i - 1] + frac * (xs[i] - xs[i - 1])))


def _gaussian(x: np.ndarray, amp: float, mu: float, sigma: float) -> np.ndarray:
    return amp * np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def fit_critical_band(centres: ArrayLike, sensitivities: ArrayLike) -> BandFit:
    """Least-squares Gaussian in log2 frequency through (centre, sensitivity) points of finite value.

    Starts at the most sensitive band with sigma 1 octave; the centre is kept within CENTRE_MARGIN octaves
    of the probed centres and sigma within SIGMA_BOUNDS (a flat profile ends at the upper bound: a very
    broad band). NaN for fewer than 3 finite points, no positive sensitivity or a failed fit."""
    x = np.asarray(centres, dtype=np.float64)
    s = np.asarray(sensitivities, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(s)
    x, s = x[ok], s[ok]
    if len(x) < 3 or s.max() <= 0 or np.ptp(x) == 0:
        return NAN_FIT
    lower = [0.0, x.min() - CENTRE_MARGIN, SIGMA_BOUNDS[0]]
    upper = [np.inf, x.max() + CENTRE_MARGIN, SIGMA_BOUNDS[1]]
    start = [float(s.max()), float(x[np.argmax(s)]), 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # covariance unknown for 3 points: not used
            params, _ = curve_fit(_gaussian, x, s, p0=start, bounds=(lower, upper), maxfev=5000)
    except (RuntimeError, ValueError):
        return NAN_FIT
    amp, mu, sigma = (float(v) for v in params)
    if not all(map(math.isfinite, (amp, mu, sigma))):
        return NAN_FIT
    return BandFit(mu, FWHM_PER_SIGMA * sigma, amp)


# ---- the probe ----------------------------------------------------------------------------------------


def accuracy_grid(ctx: ProbeContext, grey: torch.Tensor, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy with band-limited noise added to `grey` (n, 1, H, W): pooled (bands, S), per class
    (num_classes, bands, S)."""
    channels = ctx.images.shape[1]
    pooled = np.empty((bands, len(NOISE_SDS)))
    per_class = np.empty((ctx.num_classes, bands, len(NOISE_SDS)))
    n, _, h, w = grey.shape
    for k in range(bands):
        noise = band_noise((n, 1, h, w), k, ctx.rng, ctx.device)  # (n, 1, H, W), RMS 1
        for j, sd in enumerate(NOISE_SDS):
            noisy = (grey + sd * noise).clamp(0.0, 1.0).repeat(1, channels, 1, 1)  # (n, C, H, W)
            pooled[k, j], per_class[:, k, j] = ctx.accuracy(ctx.predict(noisy))
    return pooled, per_class


def critical_band_probe(ctx: ProbeContext) -> ProbeResult:
    """Noise thresholds per band, sensitivities and the fitted critical band, pooled and per class."""
    h, w = ctx.images.shape[-2:]
    bands, centres = num_bands(h, w), band_centres(h, w)
    chance = 1.0 / ctx.num_classes
    grey = low_contrast_grey(ctx.images)  # (n, 1, H, W)
    clean, clean_pc = ctx.accuracy(ctx.predict(grey.repeat(1, ctx.images.shape[1], 1, 1)))
    pooled, per_class = accuracy_grid(ctx, grey, bands)
    sens = np.array([1.0 / noise_threshold(NOISE_SDS, pooled[k], clean, chance) for k in range(bands)])
    fit = fit_critical_band(centres, sens)
    fits = []
    for c in range(ctx.num_classes):
        sens_c = [1.0 / noise_threshold(NOISE_SDS, per_class[c, k], clean_pc[c], chance) for k in range(bands)]
        fits.append(fit_critical_band(centres, sens_c))
    columns = {name: np.array([getattr(f, field) for f in fits], dtype=np.float64)
               for name, field in (("cb_center", "center"), ("cb_bandwidth", "bandwidth"),
                                   ("cb_peak_sensitivity", "peak"))}
    metrics = {**ctx.grouped("probe/cb_center", fit.center, columns["cb_center"]),
               **ctx.grouped("probe/cb_bandwidth", fit.bandwidth, columns["cb_bandwidth"]),
               **ctx.grouped("probe/cb_peak_sensitivity", fit.peak, columns["cb_peak_sensitivity"])}
    curves = {"probe/cb_sensitivity": {k: float(sens[k]) for k in range(bands)}}
    return ProbeResult(metrics, columns, curves)
