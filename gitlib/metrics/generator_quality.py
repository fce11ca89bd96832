"""Is a generator usable for GIT? It must keep the class (label preservation) and vary the nuisance
(nuisance diversity). PAPER.md "Generator recipe", last line.

- Label preservation: the share of generated images that a classifier trained on the real training set
  assigns to the source image's class; overall and on the smallest third of classes, where GIT matters.
  The classifier's accuracy on the source images themselves is returned too, as its ceiling.
- Nuisance diversity: for a synthetic nuisance with a measurable quantity (background level, ink count,
  orientation), the spread of that quantity across random styles of one source image, averaged over
  sources, divided by its spread over the real training set: 1.0 = as diverse as the real data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gitlib.data.dataset import BuiltDataset
from gitlib.train.augment import Augmenter
from gitlib.train.generator import BalancedSampler
from gitlib.train.runtime import make_generator

# Quantities measured as an orientation in degrees repeat with this period (principal axis: 180).
CIRCULAR_PERIODS: dict[str, float] = {"rotation": 180.0}


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def small_classes(class_counts: np.ndarray, share: float = 1 / 3) -> np.ndarray:
    """Labels of the smallest `share` of the classes present (at least one), smallest first."""
    counts = np.asarray(class_counts)
    present = np.flatnonzero(counts > 0)
    order = present[np.argsort(counts[present], kind="stable")]
    return order[: max(1, math.ceil(len(present) * share))]


def balanced_sources(data: BuiltDataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training images drawn class-balanced (class uniform, then an image): (n, C, H, W) uint8, (n,)."""
    gen = make_generator(seed, torch.device("cpu"))
    idx = BalancedSampler(data.train_y, data.num_classes)(n, gen)
    return data.train_x[idx], data.train_y[idx]


@torch.no_grad()
def predict(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Arg-max labels (N,) of `classifier` (eval mode, restored after) on images in [0, 1] or uint8."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    try:
        out = [classifier(_as_float(images[i:i + batch_size]).to(device)).argmax(1).cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


@torch.no_grad()
def label_preservation(augmenter: Augmenter, classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       class_counts: np.ndarray, generator: torch.Generator,
                       batch_size: int = 512) -> dict[str, float]:
    """Share of generated images (one random style per source) the classifier assigns to the source class.

    Returns `all`, `small` (sources from the smallest third of classes by `class_counts`), and
    `real_all` / `real_small`: the classifier on the sources themselves (the ceiling of the first two).
    """
    device = next(classifier.parameters()).device
    x = _as_float(images)  # (N, C, H, W)
    fake = torch.cat([augmenter.sample(x[i:i + batch_size].to(device), generator).cpu()
                      for i in range(0, len(x), batch_size)])
    labels = labels.cpu()
    hit_fake = predict(classifier, fake, batch_size) == labels  # (N,)
    hit_real = predict(classifier, x, batch_size) == labels
    small = torch.as_tensor(np.isin(labels.numpy(), small_classes(class_counts)))

    def share(hits: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        h = hits if mask is None else hits[mask]
        return float(h.float().mean()) if len(h) else float("nan")

    return {"all": share(hit_fake), "small": share(hit_fake, small),
            "real_all": share(hit_real), "real_small": share(hit_real, small)}


def spread(values: torch.Tensor, dim: int = -1, period: float | None = None) -> torch.Tensor:
    """Standard deviation along `dim`; for a quantity repeating every `period` (an orientation), the
    circular standard deviation in the same units, so that -89 and 89 degrees count as close."""
    v = values.double()
    if period is None:
        return v.std(dim=dim, unbiased=False)
    phase = v * (2 * math.pi / period)
    r = torch.sqrt(torch.cos(phase).mean(dim) ** 2 + torch.sin(phase).mean(dim) ** 2).clamp(1e-12, 1.0)
    return torch.sqrt(-2 * torch.log(r)) * (period / (2 * math.pi))


@torch.no_grad()
def nuisance_diversity(augmenter: Augmenter, images: torch.Tensor, reference: torch.Tensor, nuisance: Any,
                       generator: torch.Generator, styles: int = 16, batch_size: int = 512,
                       device: torch.device | str | None = None) -> dict[str, float]:
    """Spread of `nuisance.measure` across `styles` random styles per source image, averaged over the
    sources, relative to its spread over `reference` (the real training images).

    `nuisance` is a gitlib.data.nuisances.Nuisance (anything with `measure(images) -> (N,)` and a `name`).
    Returns `diversity` (the ratio: 1.0 = as diverse as the real data), `spread_generated`, `spread_real`.
    """
    dev = torch.device(device) if device is not None else generator.device
    period = CIRCULAR_PERIODS.get(getattr(nuisance, "name", ""))
    x = _as_float(images).repeat_interleave(styles, dim=0)  # (M * styles, C, H, W), copies adjacent
    measured = []
    for i in range(0, len(x), batch_size):
        fake = augmenter.sample(x[i:i + batch_size].to(dev), generator)
        measured.append(nuisance.measure(fake).float().cpu())
    per_source = torch.cat(measured).view(len(images), styles)  # (M, styles)
    gen_spread = float(spread(per_source, dim=1, period=period).mean())
    real = torch.cat([nuisance.measure(_as_float(reference[i:i + 4096])).float().cpu()
                      for i in range(0, len(reference), 4096)])
    real_spread = float(spread(real, dim=0, period=period))
    ratio = gen_spread / real_spread if real_spread > 0 else float("nan")
    return {"diversity": ratio, "spread_generated": gen_spread, "spread_real": real_spread}


def train_reference_classifier(data: BuiltDataset, seed: int, device: torch.device | str = "cpu",
                               iterations: int = 600, batch_size: int = 64, lr: float = 2e-3) -> nn.Module:
    """A quick judge for label preservation: resnet_small trained on the real training set with
    class-balanced batches (resampling, so the small classes are recognised too), Adam, cosine lr."""
    from gitlib.models.resnet import build_classifier

    device = torch.device(device)
    x = data.train_x.to(device)  # (N, C, H, W) uint8
    y = data.train_y.to(device)
    xf = x.float() / 255
    mean = xf.mean(dim=(0, 2, 3)).tolist()
    std = xf.std(dim=(0, 2, 3)).tolist()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier("resnet_small", data.channels, data.num_classes, mean=mean, std=std)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iterations, pct_start=0.15)
    sampler = BalancedSampler(y, data.num_classes)
    gen = make_generator(seed, device)
    for _ in range(iterations):
        idx = sampler(batch_size, gen)
        loss = F.cross_entropy(model(x[idx].float() / 255), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def generator_quality(augmenter: Augmenter, data: BuiltDataset, classifier: nn.Module, nuisance: Any | None,
                      seed: int, eval_samples: int = 500, diversity_sources: int = 50, styles: int = 16,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """Both measures on `data`'s training set, flat keys ready to log:
    `preservation/{all,small,real_all,real_small}` and (with a nuisance) `diversity/{ratio,...}`."""
    device = torch.device(device)
    src_x, src_y = balanced_sources(data, eval_samples, seed)
    out = {f"preservation/{k}": v for k, v in label_preservation(
        augmenter, classifier, src_x, src_y, data.class_counts, make_generator(seed + 1, device)).items()}
    if nuisance is not None and getattr(nuisance, "name", "") != "none":
        div_x, _ = balanced_sources(data, diversity_sources, seed + 2)
        div = nuisance_diversity(augmenter, div_x, data.train_x, nuisance, make_generator(seed + 3, device),
                                 styles=styles, device=device)
        out.update({"diversity/ratio": div["diversity"], "diversity/spread_generated": div["spread_generated"],
                    "diversity/spread_real": div["spread_real"]})
    return out
