"""Corruption probe: accuracy relative to clean under four common corruptions at five severities each.

The corruptions follow ImageNet-C / CIFAR-10-C (Hendrycks and Dietterich, 2019), re-implemented as batched
torch code, with severities for small (16 - 32 px) images: severity 1 is mild, severity 5 clearly hurts
a small digit classifier (except JPEG, which such smooth images survive well):

- `gaussian_noise`: x + N(0, sd^2) per pixel, sd = 0.04, 0.08, 0.12, 0.18, 0.26 (between CIFAR-10-C's
  0.04 - 0.10 and ImageNet-C's 0.08 - 0.38).
- `gaussian_blur`: a separable Gaussian of sigma = 0.5, 0.75, 1.0, 1.25, 1.5 pixels per 16 pixels of image
  side (1 - 3 px at 32 px; CIFAR-10-C's 32-px range 0.4 - 1.0 hardly touches smooth, upsampled digits),
  radius ceil(3 sigma), borders replicated.
- `contrast`: (x - mean) * c + mean, mean over the whole image, c = 0.75, 0.5, 0.4, 0.3, 0.15 (CIFAR-10-C).
- `jpeg`: JPEG's lossy step at quality q = 25, 18, 15, 10, 7 (ImageNet-C): colour images to YCbCr, each
  channel in 8 x 8 blocks (edges replicated to a multiple of 8) through the orthonormal 2-D DCT,
  coefficients rounded to multiples of the standard luminance (Y, grey) or chrominance (Cb, Cr) table
  scaled for q as by the IJG encoder, inverse DCT, back to RGB, rounded to 8 bits. No chroma subsampling
  and no entropy coding (lossless anyway); the result is within a grey level or two of libjpeg's.

Every result is clipped to [0, 1]. Reported: `probe/corruption_acc`, the mean relative accuracy over all
4 x 5 corrupted sets, `probe/corruption_acc_<name>` over the five severities of one corruption (each with
head / tail means), the per-class column `corruption_acc`, and curves `probe/corruption_<name>` over
severity 1 .. 5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from gitlib.probes.base import ProbeContext, ProbeResult

NOISE_SDS = (0.04, 0.08, 0.12, 0.18, 0.26)
BLUR_SIGMAS_PER_16PX = (0.5, 0.75, 1.0, 1.25, 1.5)
CONTRASTS = (0.75, 0.5, 0.4, 0.3, 0.15)
JPEG_QUALITIES = (25, 18, 15, 10, 7)

_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
    (99,) * 8, (99,) * 8, (99,) * 8, (99,) * 8,
)
# JFIF RGB -> YCbCr (rows Y, Cb, Cr) on the 0..255 scale; Cb and Cr are offset by 128.
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def gaussian_noise(images: torch.Tensor, sd: float, rng: torch.Generator) -> torch.Tensor:
    """Additive white Gaussian noise of standard deviation `sd` on (B, C, H, W) in [0, 1]."""
    noise = torch.randn(images.shape, generator=rng, device=images.device, dtype=images.dtype)
    return (images + sd * noise).clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (sigma in pixels, radius ceil(3 sigma)) with replicated borders."""
    b, c, h, w = images.shape
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()  # (2r+1,)
    x = F.pad(images.reshape(b * c, 1, h, w), (radius,) * 4, mode="replicate")  # (BC, 1, H+2r, W+2r)
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))  # (BC, 1, H, W)
    return x.reshape(b, c, h, w).clamp(0.0, 1.0)


def contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale each image's deviations from its mean (over channels and pixels) by `factor`."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return ((images - mean) * factor + mean).clamp(0.0, 1.0)


def _dct_matrix(device: torch.device) -> torch.Tensor:
    """(8, 8) orthonormal DCT-II: row u is frequency u (JPEG's forward DCT in matrix form)."""
    i = torch.arange(8, device=device, dtype=torch.float32)
    d = torch.cos((2 * i[None, :] + 1) * i[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2.0)
    return d


def jpeg_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """(8, 8) quantisation table for `quality` (1..100), scaled as by the IJG encoder."""
    q = min(100, max(1, int(quality)))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    base = torch.tensor(_CHROMA_TABLE if chroma else _LUMA_TABLE, dtype=torch.float32)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255)


def _block_dct_quantise(x: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Round the 8 x 8 block DCT coefficients of (B, C, H, W) (H, W multiples of 8, level-shifted
    0..255 scale) to multiples of `tables` (C, 8, 8), and transform back."""
    b, c, h, w = x.shape
    d = _dct_matrix(x.device)
    blocks = x.reshape(b, c, h // 8, 8, w // 8, 8)  # (B, C, hb, 8, wb, 8)
    coef = torch.einsum("ui,bcyixj,vj->bcyuxv", d, blocks, d)  # (B, C, hb, 8, wb, 8) frequencies
    t = tables.to(x.device)[None, :, None, :, None, :]  # (1, C, 1, 8, 1, 8)
    coef = torch.round(coef / t) * t
    return torch.einsum("ui,bcyuxv,vj->bcyixj", d, coef, d).reshape(b, c, h, w)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG's lossy step at `quality` on (B, C, H, W) in [0, 1] (see the module docstring)."""
    _, c, h, w = images.shape
    x = images * 255.0
    colour = c == 3
    m = torch.tensor(_RGB_TO_YCBCR, device=x.device, dtype=x.dtype)  # (3, 3)
    if colour:
        x = torch.einsum("oc,bchw->bohw", m, x)  # Y, Cb - 128, Cr - 128
        x[:, :1] -= 128.0
    else:
        x = x - 128.0
    tables = torch.stack([jpeg_table(quality, chroma=colour and i > 0) for i in range(c)])  # (C, 8, 8)
    pad_h, pad_w = -h % 8, -w % 8
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
    x = _block_dct_quantise(x, tables)[..., :h, :w]
    if colour:
        x[:, :1] += 128.0
        x = torch.einsum("oc,bchw->bohw", torch.linalg.inv(m), x)
    else:
        x = x + 128.0
    return (torch.round(x.clamp(0.0, 255.0)) / 255.0).to(images.dtype)


def corruption_sets(images: torch.Tensor, rng: torch.Generator) -> dict[str, list[Callable[[], torch.Tensor]]]:
    """For each corruption, five thunks making the corrupted images at severities 1..5 (built on demand,
    so only one corrupted set is in memory at a time)."""
    side = min(images.shape[-2:])
    return {
        "gaussian_noise": [partial(gaussian_noise, images, sd, rng) for sd in NOISE_SDS],
        "gaussian_blur": [partial(gaussian_blur, images, s * side / 16) for s in BLUR_SIGMAS_PER_16PX],
        "contrast": [partial(contrast, images, f) for f in CONTRASTS],
        "jpeg": [partial(jpeg, images, q) for q in JPEG_QUALITIES],
    }


def corruptions_probe(ctx: ProbeContext) -> ProbeResult:
    """Relative accuracy under each corruption and severity; means per corruption and overall."""
    metrics: dict[str, float] = {}
    curves: dict[str, dict[int, float]] = {}
    all_pooled: list[float] = []
    all_pc: list[np.ndarray] = []
    for name, thunks in corruption_sets(ctx.images, ctx.rng).items():
        rel = [ctx.relative(ctx.predict(make())) for make in thunks]  # severity 1..5
        pooled = [float(r[0]) for r in rel]
        pc = np.stack([r[1] for r in rel])  # (5, K)
        curves[f"probe/corruption_{name}"] = {s + 1: v for s, v in enumerate(pooled)}
        metrics.update(ctx.grouped(f"probe/corruption_acc_{name}", float(np.mean(pooled)), pc.mean(axis=0)))
        all_pooled += pooled
        all_pc.append(pc)
    overall_pc = np.concatenate(all_pc).mean(axis=0)  # (K,)
    metrics = {**ctx.grouped("probe/corruption_acc", float(np.mean(all_pooled)), overall_pc), **metrics}
    return ProbeResult(metrics, {"corruption_acc": overall_pc}, curves)
