"""Batched augmentation on the device: which augmenter a classifier trains with, the class-size threshold
of GIT, and random crop + flip for natural images. The augmenters themselves (a nuisance, the MUNIT
generator) follow gitlib.augmenter.Augmenter."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gitlib.augmenter import Augmenter
from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import nuisance_for_spec
from gitlib.errors import ConfigError
from gitlib.train.config import ClassifierConfig


def classifier_augmenter(cfg: ClassifierConfig, data: BuiltDataset, generator: Augmenter | None) -> Augmenter | None:
    """What a classifier augments with: nothing, the data set's true nuisance (oracle) or the generator (git)."""
    kind = cfg.effective_augment
    if kind == "none":
        return None
    if kind == "oracle":
        if data.spec.nuisance == "none":
            raise ConfigError("classifier.augment", "oracle needs a data set nuisance (dataset.nuisance is none)")
        return nuisance_for_spec(data.spec)
    if generator is None:
        raise ConfigError("classifier.augment", "git needs a trained generator to augment with; none was given")
    return generator


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


def crop_flip(images: torch.Tensor, rng: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `pad`, then a horizontal flip with probability 1/2, per image."""
    n, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=rng, device=dev)
    rows = (off[0, :, None] + torch.arange(h, device=dev))[:, None, :, None]  # (N, 1, H, 1)
    cols = (off[1, :, None] + torch.arange(w, device=dev))[:, None, None, :]  # (N, 1, 1, W)
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows, cols]  # (N, C, H, W)
    flip = torch.rand(n, generator=rng, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
