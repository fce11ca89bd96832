"""Batched augmentation on the device: the Augmenter protocol (oracle nuisance, MUNIT generator), the
class-size threshold of GIT, and random crop + flip for natural images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from gitlib.data.spec import DatasetSpec


@runtime_checkable
class Augmenter(Protocol):
    """Anything that maps a batch of float images in [0, 1] (N, C, H, W) to transformed ones, same shape.

    All randomness must come from `generator` so that checkpoints resume exactly.
    """

    def sample(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


def nuisance_augmenter(spec: DatasetSpec) -> Augmenter:
    """The data set's true nuisance (the oracle, and the eKLD transform where it is known)."""
    from gitlib.data.nuisances import nuisance_for_spec

    return nuisance_for_spec(spec)


def threshold_keep_prob(class_counts: np.ndarray, threshold: int | None) -> np.ndarray:
    """Per-class probability of keeping a generated sample: max((thr - n_c) / (thr - n_min), 0).

    None means no threshold (keep all). A threshold at or below the smallest class keeps none.
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if threshold is None:
        return np.ones_like(counts)
    present = counts[counts > 0]
    n_min = present.min() if present.size else 0.0
    if threshold <= n_min:
        return np.zeros_like(counts)
    return np.clip((threshold - counts) / (threshold - n_min), 0.0, 1.0)


def crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `pad`, then a horizontal flip with probability 1/2, per image."""
    n, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=dev)
    rows = (off[0, :, None] + torch.arange(h, device=dev))[:, None, :, None]  # (N, 1, H, 1)
    cols = (off[1, :, None] + torch.arange(w, device=dev))[:, None, None, :]  # (N, 1, 1, W)
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows, cols]  # (N, C, H, W)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
