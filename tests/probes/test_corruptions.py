"""Corruption probe: the four corruptions, their severities and the JPEG step against libjpeg (PIL)."""

from __future__ import annotations

import io
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gitlib.device import seeded_rng
from gitlib.probes.corruptions import contrast, corruption_sets, gaussian_blur, gaussian_noise, jpeg

CPU = torch.device("cpu")


def smooth_images(channels: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(6, C, size, size) smooth random images on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(6, channels, 8, 8, generator=g), size=(size, size), mode="bicubic")
    return (x.clamp(0, 1) * 255).round() / 255


def pil_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """The same images through libjpeg (PIL), 4:4:4, for reference."""
    out = []
    for img in images:
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(
            buf, format="JPEG", quality=quality, subsampling=0)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255
        out.append(torch.from_numpy(back.reshape(*arr.shape[:2], -1)).permute(2, 0, 1))
    return torch.stack(out)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("quality", [80, 25, 7])
def test_jpeg_matches_libjpeg(channels: int, quality: int) -> None:
    x = smooth_images(channels)
    ours, ref = jpeg(x, quality), pil_jpeg(x, quality)
    loss = (ref - x).abs().mean()
    # the batched DCT quantisation loses what libjpeg loses ...
    assert (ours - x).abs().mean() == pytest.approx(float(loss), rel=0.1)
    # ... and (nearly) the same pixels: off by a small share of that loss or about a grey level (libjpeg
    # rounds its colour conversion to 8 bits)
    assert (ours - ref).abs().mean() < max(0.25 * float(loss), 1.5 / 255)


def test_jpeg_handles_sizes_that_are_not_multiples_of_8() -> None:
    x = smooth_images(1, size=20)
    # edges are padded to whole blocks and cropped back
    assert jpeg(x, 50).shape == x.shape


def test_severities_grow() -> None:
    x = smooth_images(3, size=16)
    for name, thunks in corruption_sets(x, seeded_rng(0, CPU)).items():
        change = [float((make() - x).abs().mean()) for make in thunks]
        # severity 1 .. 5 move the images further and further from the originals
        assert all(b > a for a, b in pairwise(change)), (name, change)


def test_corruptions_keep_range_and_invariants() -> None:
    x = smooth_images(3, size=16) * 0.5 + 0.25
    flat = torch.full((2, 3, 16, 16), 0.3)
    # a blur leaves a flat image flat (its kernel sums to 1, borders replicated)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat, atol=1e-6)
    # contrast reduction keeps each image's mean when nothing is clipped
    assert torch.allclose(contrast(x, 0.3).mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    # every corruption returns images in [0, 1]
    noisy = gaussian_noise(x, 0.26, seeded_rng(0, CPU))
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_noise_comes_from_the_generator() -> None:
    x = smooth_images(1, size=16)
    a, b = gaussian_noise(x, 0.1, seeded_rng(5, CPU)), gaussian_noise(x, 0.1, seeded_rng(5, CPU))
    # the same seed gives the same noise; another seed, other noise
    assert torch.equal(a, b) and not torch.equal(a, gaussian_noise(x, 0.1, seeded_rng(6, CPU)))
