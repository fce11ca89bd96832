"""Spectral probe: how much of the model's accuracy survives when only low or only high spatial
frequencies of the test images are left.

Each channel is transformed with a 2-D FFT and centred (fftshift: the zero frequency at index (H//2, W//2)
for even and odd sizes alike). An ideal rectangular filter keeps or removes the frequencies within a
central rectangle; the inverse FFT's real part, clipped to [0, 1], is the filtered image.

- Low-pass at cut-off c keeps the bins whose distance from the zero frequency is at most c*H/2 rows and
  c*W/2 columns. The zero frequency (the image mean) is always kept, so c -> 0 leaves a flat image of the
  same mean and c -> 1 the image itself (less the Nyquist row / column of even sizes).
- High-pass at cut-off c zeroes the rectangle of half-size (1-c)*H/2 x (1-c)*W/2 (always including the
  zero frequency): c -> 1 removes just the mean, c -> 0 leaves only the highest frequencies.

The rectangle is symmetric in frequency (k kept iff -k kept), so the filtered spectrum stays Hermitian and
the inverse is real up to rounding.

Reported, relative to clean accuracy: curves `probe/lowpass_acc`, `probe/highpass_acc` over
c = 0.1 .. 0.9 (step = round(10 c)); `probe/lpp` (low-frequency reliance) and `probe/hpp` (high-frequency
reliance), the mean relative accuracy over c = 0.1 .. 0.5; `probe/spectral_bias` = hpp / (lpp + hpp),
0 for a model that only uses low frequencies, 1 for one that only uses high frequencies.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from gitlib.probes.base import ProbeContext, ProbeResult

CUTOFFS = tuple(k / 10 for k in range(1, 10))  # 0.1 .. 0.9: the curves
BIAS_CUTOFFS = tuple(k / 10 for k in range(1, 6))  # 0.1 .. 0.5: averaged into lpp / hpp

Kind = Literal["low", "high"]
KINDS: tuple[Kind, Kind] = ("low", "high")


def centred_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Complex spectrum (N, C, H, W) of every channel, zero frequency moved to (H//2, W//2)."""
    return torch.fft.fftshift(torch.fft.fft2(images.float()), dim=(-2, -1))


def rect_mask(height: int, width: int, cutoff: float, kind: Kind, device: torch.device) -> torch.Tensor:
    """(H, W) bool mask of the centred bins a filter keeps (see the module docstring)."""
    if kind not in ("low", "high"):
        raise ValueError(f"kind must be 'low' or 'high', got {kind!r}")
    frac = cutoff if kind == "low" else 1.0 - cutoff
    dist_h = (torch.arange(height, device=device) - height // 2).abs()  # (H,) bins from the zero frequency
    dist_w = (torch.arange(width, device=device) - width // 2).abs()  # (W,)
    eps = 1e-9  # so that a half-size landing exactly on a bin keeps it despite float rounding
    inside = (dist_h[:, None] <= frac * height / 2 + eps) & (dist_w[None, :] <= frac * width / 2 + eps)
    return inside if kind == "low" else ~inside


def filter_spectrum(spectrum: torch.Tensor, mask: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Images (N, C, H, W) from a centred spectrum with the bins outside `mask` zeroed."""
    out = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))).real
    return out.clamp(0.0, 1.0) if clip else out


def fourier_filter(images: torch.Tensor, cutoff: float, kind: Kind = "low", clip: bool = True) -> torch.Tensor:
    """Ideal rectangular low- or high-pass of float images (N, C, H, W) in [0, 1] at cut-off `cutoff`."""
    h, w = images.shape[-2:]
    return filter_spectrum(centred_spectrum(images), rect_mask(h, w, cutoff, kind, images.device), clip)


def spectral_probe(ctx: ProbeContext) -> ProbeResult:
    """Relative accuracy under low- and high-pass filtering; lpp, hpp and the spectral bias."""
    spectrum = centred_spectrum(ctx.images)  # (n, C, H, W) complex
    h, w = ctx.images.shape[-2:]
    pooled: dict[tuple[str, float], float] = {}
    per_class: dict[tuple[str, float], np.ndarray] = {}
    for kind in KINDS:
        for c in CUTOFFS:
            filtered = filter_spectrum(spectrum, rect_mask(h, w, c, kind, ctx.device))
            pooled[kind, c], per_class[kind, c] = ctx.relative(ctx.predict(filtered))
    lpp = float(np.mean([pooled["low", c] for c in BIAS_CUTOFFS]))
    hpp = float(np.mean([pooled["high", c] for c in BIAS_CUTOFFS]))
    lpp_pc = np.mean([per_class["low", c] for c in BIAS_CUTOFFS], axis=0)  # (K,)
    hpp_pc = np.mean([per_class["high", c] for c in BIAS_CUTOFFS], axis=0)
    bias, bias_pc = spectral_bias(lpp, hpp), spectral_bias(lpp_pc, hpp_pc)
    metrics = {**ctx.grouped("probe/lpp", lpp, lpp_pc), **ctx.grouped("probe/hpp", hpp, hpp_pc),
               **ctx.grouped("probe/spectral_bias", float(bias), np.asarray(bias_pc))}
    curves = {f"probe/{kind}pass_acc": {round(c * 10): pooled[kind, c] for c in CUTOFFS}
              for kind in KINDS}
    columns = {"lpp": lpp_pc, "hpp": hpp_pc, "spectral_bias": np.asarray(bias_pc, dtype=np.float64)}
    return ProbeResult(metrics, columns, curves)


def spectral_bias(lpp: float | np.ndarray, hpp: float | np.ndarray) -> float | np.ndarray:
    """hpp / (lpp + hpp): the share of frequency reliance on high frequencies; NaN where both are 0."""
    lo, hi = np.asarray(lpp, dtype=np.float64), np.asarray(hpp, dtype=np.float64)
    total = lo + hi
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, hi / np.where(total > 0, total, 1.0), math.nan)
    return float(out) if out.ndim == 0 else out
