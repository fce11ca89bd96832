"""Is a generator usable for GIT? It must keep the class (label preservation) and vary the nuisance
(nuisance diversity). docs/science.md, "Generator recipe".

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

from gitlib.augmenter import Augmenter, as_float
from gitlib.data.dataset import BuiltDataset
from gitlib.data.sampling import BalancedSampler
from gitlib.device import seeded_rng
from gitlib.models.inference import predict_labels

# Quantities measured as an orientation in degrees repeat with this period (principal axis: 180).
CIRCULAR_PERIODS: dict[str, float] = {"rotation": 180.0}


def small_classes(class_counts: np.ndarray, share: float = 1 / 3) -> np.ndarray:
    """Labels of the smallest `share` of the classes present (at least one), smallest first."""
    counts = np.asarray(class_counts)
    present = np.flatnonzero(counts > 0)
    order = present[np.argsort(counts[present], kind="stable")]
    return order[: max(1, math.ceil(len(present) * share))]


def balanced_sources(data: BuiltDataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training images drawn class-balanced (class uniform, then an image): (n, C, H, W) uint8, (n,)."""
    idx = BalancedSampler(data.train_y, data.num_classes)(n, seeded_rng(seed))
    return data.train_x[idx], data.train_y[idx]


@torch.no_grad()
def label_preservation(augmenter: Augmenter, classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       class_counts: np.ndarray, rng: torch.Generator,
                       batch_size: int = 512) -> dict[str, float]:
    """Share of generated images (one random style per source) the classifier assigns to the source class.

    Returns `all`, `small` (sources from the smallest third of classes by `class_counts`), and
    `real_all` / `real_small`: the classifier on the sources themselves (the ceiling of the first two).
    """
    device = next(classifier.parameters()).device
    x = as_float(images)  # (N, C, H, W)
    fake = torch.cat([augmenter.sample(x[i:i + batch_size].to(device), rng).cpu()
                      for i in range(0, len(x), batch_size)])
    labels = labels.cpu()
    hit_fake = predict_labels(classifier, fake, device, batch_size=batch_size).cpu() == labels  # (N,)
    hit_real = predict_labels(classifier, x, device, batch_size=batch_size).cpu() == labels
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
                       rng: torch.Generator, styles: int = 16, batch_size: int = 512,
                       device: torch.device | str | None = None) -> dict[str, float]:
    """Spread of `nuisance.measure` across `styles` random styles per source image, averaged over the
    sources, relative to its spread over `reference` (the real training images).

    `nuisance` is a gitlib.data.nuisances.Nuisance (anything with `measure(images) -> (N,)` and a `name`).
    Returns `diversity` (the ratio: 1.0 = as diverse as the real data), `spread_generated`, `spread_real`.
    """
    dev = torch.device(device) if device is not None else rng.device
    period = CIRCULAR_PERIODS.get(getattr(nuisance, "name", ""))
    x = as_float(images).repeat_interleave(styles, dim=0)  # (M * styles, C, H, W), copies adjacent
    measured = []
    for i in range(0, len(x), batch_size):
        fake = augmenter.sample(x[i:i + batch_size].to(dev), rng)
        measured.append(nuisance.measure(fake).float().cpu())
    per_source = torch.cat(measured).view(len(images), styles)  # (M, styles)
    gen_spread = float(spread(per_source, dim=1, period=period).mean())
    real = torch.cat([nuisance.measure(as_float(reference[i:i + 4096])).float().cpu()
                      for i in range(0, len(reference), 4096)])
    real_spread = float(spread(real, dim=0, period=period))
    ratio = gen_spread / real_spread if real_spread > 0 else float("nan")
    return {"diversity": ratio, "spread_generated": gen_spread, "spread_real": real_spread}


def train_reference_classifier(data: BuiltDataset, seed: int, device: torch.device | str = "cpu",
                               iterations: int = 600, batch_size: int = 64, lr: float = 2e-3,
                               augment: Augmenter | None = None) -> nn.Module:
    """A quick judge for label preservation: resnet_small trained on the real training set with
    class-balanced batches (resampling, so the small classes are recognised too), Adam, cosine lr.

    With `augment` (the true nuisance) every batch is transformed afresh: a judge invariant to the nuisance
    on every class, the small ones included, which the plain judge is not (it has seen a small class at
    the few nuisance values its images carry)."""
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
    rng = seeded_rng(seed, device)
    for _ in range(iterations):
        idx = sampler(batch_size, rng)
        xb = x[idx].float() / 255  # (batch, C, H, W)
        if augment is not None:
            xb = augment.sample(xb, rng)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def generator_quality(augmenter: Augmenter, data: BuiltDataset, classifier: nn.Module, nuisance: Any | None,
                      seed: int, eval_samples: int = 500, diversity_sources: int = 50, styles: int = 16,
                      device: torch.device | str = "cpu", invariant_judge: nn.Module | None = None) -> dict[str, float]:
    """Both measures on `data`'s training set, flat keys ready to log:
    `preservation/{all,small,real_all,real_small}` and (with a nuisance) `diversity/{ratio,...}`.

    With a nuisance also `diversity/nuisance_ratio`, the same measure of the true nuisance applied to
    clean (untransformed) test images drawn class-balanced, i.e. of a perfect nuisance sampler: what the
    estimate gives at best on this data (for a full-circle rotation about 0.6, not 1: the circular spread
    of `styles` draws is biased low, that of the whole training set is not). With
    `invariant_judge` (a judge trained with the true nuisance, `train_reference_classifier(augment=...)`)
    also `preservation/invariant_{all,small}`: the same generated images judged by it. The plain judge
    has seen a small class at the few nuisance values its images carry, so it can call a faithful
    transform of a small-class image wrong (for full-circle rotation it does so for most of them)."""
    device = torch.device(device)
    src_x, src_y = balanced_sources(data, eval_samples, seed)
    out = {f"preservation/{k}": v for k, v in label_preservation(
        augmenter, classifier, src_x, src_y, data.class_counts, seeded_rng(seed + 1, device)).items()}
    if invariant_judge is not None:  # the same styles (same rng seed), another judge
        inv = label_preservation(augmenter, invariant_judge, src_x, src_y, data.class_counts,
                                 seeded_rng(seed + 1, device))
        out.update({"preservation/invariant_all": inv["all"], "preservation/invariant_small": inv["small"]})
    if nuisance is not None and getattr(nuisance, "name", "") != "none":
        div_x, _ = balanced_sources(data, diversity_sources, seed + 2)
        div = nuisance_diversity(augmenter, div_x, data.train_x, nuisance, seeded_rng(seed + 3, device),
                                 styles=styles, device=device)
        # Clean sources: the training images carry a nuisance draw already, which some nuisances cannot
        # redraw (background fills only pixels that are exactly 0).
        clean = data.test_x[BalancedSampler(data.test_y, data.num_classes)(diversity_sources, seeded_rng(seed + 2))]
        ref = nuisance_diversity(nuisance, clean, data.train_x, nuisance, seeded_rng(seed + 3, device),
                                 styles=styles, device=device)
        out.update({"diversity/ratio": div["diversity"], "diversity/spread_generated": div["spread_generated"],
                    "diversity/spread_real": div["spread_real"], "diversity/nuisance_ratio": ref["diversity"]})
    return out
