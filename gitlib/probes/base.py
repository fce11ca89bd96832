"""The probe registry, the shared context every probe reads, and `run_probes`.

A probe manipulates the test images in a controlled way (filters out frequencies, adds band-limited noise,
corrupts them), asks the model for its predictions and reports how accuracy changes relative to the clean
images: one scalar per measurement (plus its mean over head and tail classes), one per-class column each,
and curves over the manipulation's strength. Everything runs batched on the caller's device; every random
draw comes from a `torch.Generator` made by `seeded_rng`, so one seed gives one result.

To keep the cost of probing a small fraction of a trial, each run uses a seeded subset of at most
`max_per_class` test images per class (default `MAX_PER_CLASS`), the same subset for every probe.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from gitlib.augmenter import as_float
from gitlib.device import seeded_rng
from gitlib.metrics.accuracy import head_tail, per_class_accuracy
from gitlib.probes import PROBES

MAX_PER_CLASS = 20  # test images per class a probe run uses (a seeded subset); None = all


@dataclass(frozen=True)
class ProbeResult:
    """What a probe run reports: scalars, per-class columns and metric series (name -> {step: value})."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (num_classes,) float64
    curves: dict[str, dict[int, float]] = field(default_factory=dict)


Predict = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ProbeContext:
    """The (subset of) test images on the device, the model and the clean reference, shared by probes."""

    predict_fn: Predict  # float (B, C, H, W) in [0, 1] -> arg-max labels (B,)
    images: torch.Tensor  # (n, C, H, W) float32 in [0, 1] on the device
    labels: torch.Tensor  # (n,) int64 on the device
    num_classes: int
    class_counts: np.ndarray  # (num_classes,) training images per class: defines head and tail
    rng: torch.Generator  # this probe's own stream
    batch_size: int
    clean_acc: float  # accuracy on the unmodified images
    clean_per_class: np.ndarray  # (num_classes,)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Arg-max labels (n,) for a float batch (n, C, H, W), in chunks of `batch_size`."""
        return predict_batched(self.predict_fn, images, self.batch_size)

    def accuracy(self, preds: torch.Tensor) -> tuple[float, np.ndarray]:
        """(pooled accuracy, (num_classes,) per-class accuracy) of predictions for `labels`."""
        pooled = float((preds == self.labels).double().mean()) if len(self.labels) else math.nan
        return pooled, per_class_accuracy(preds, self.labels, self.num_classes)

    def relative(self, preds: torch.Tensor) -> tuple[float, np.ndarray]:
        """Accuracy of `preds` divided by the clean accuracy, pooled and per class (NaN where clean is 0)."""
        pooled, per_class = self.accuracy(preds)
        return float(relative_accuracy(pooled, self.clean_acc)), relative_accuracy(per_class, self.clean_per_class)

    def grouped(self, name: str, pooled: float, per_class: np.ndarray) -> dict[str, float]:
        """`name`, `name_head` and `name_tail`: the pooled value and the means over head / tail classes."""
        head, tail = head_tail(per_class, self.class_counts)
        return {name: float(pooled), f"{name}_head": head, f"{name}_tail": tail}


ProbeFn = Callable[[ProbeContext], ProbeResult]



def relative_accuracy(acc: float | np.ndarray, clean: float | np.ndarray) -> np.ndarray:
    """acc / clean (float64 array, 0-d for scalars), NaN where the clean accuracy is 0 or undefined."""
    a, c = np.asarray(acc, dtype=np.float64), np.asarray(clean, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # NaN clean accuracies compare False: NaN out, no warning
        return np.where(c > 0, a / np.where(c > 0, c, 1.0), np.nan)


@torch.no_grad()
def predict_batched(predict: Predict, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """predict() over `images` (n, C, H, W) in chunks of `batch_size`, concatenated to (n,) int64."""
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.int64, device=images.device)
    parts = [predict(chunk).reshape(-1).to(torch.int64) for chunk in images.split(max(1, batch_size))]
    return torch.cat(parts)


def class_subset(labels: torch.Tensor, max_per_class: int | None, rng: torch.Generator) -> torch.Tensor:
    """Indices (ascending) of at most `max_per_class` images per class, chosen uniformly at random."""
    n = len(labels)
    if max_per_class is None or n == 0:
        return torch.arange(n, device=labels.device)
    keys = torch.rand(n, generator=rng, device=labels.device, dtype=torch.float64)  # (n,)
    order = torch.argsort(labels.double() + keys)  # grouped by class, random order within a class
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts  # first position of each class in `order`
    rank = torch.arange(n, device=labels.device) - starts[sorted_labels]  # position within its class
    return torch.sort(order[rank < max_per_class]).values


def probe_rng(seed: int, name: str, device: torch.device) -> torch.Generator:
    """A stream per probe, so a probe's result does not depend on which other probes ran before it."""
    return seeded_rng((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63, device)


def run_probes(names: Sequence[str], predict: Predict, images: torch.Tensor, labels: torch.Tensor,
               num_classes: int, class_counts: np.ndarray, seed: int, device: torch.device,
               batch_size: int = 512, max_per_class: int | None = MAX_PER_CLASS) -> ProbeResult:
    """Run the named probes on a seeded subset of the test images (uint8 (N, C, H, W), labels (N,)).

    `predict` maps a float batch in [0, 1] on `device` to arg-max labels; unknown names raise ConfigError
    before any work; no names -> an empty result."""
    chosen = list(dict.fromkeys(PROBES.check_all(names)))  # canonical spellings, duplicates dropped
    if not chosen:
        return ProbeResult()
    if len(images) != len(labels) or len(class_counts) != num_classes:
        raise ValueError(f"{len(images)} images, {len(labels)} labels, {len(class_counts)} class counts "
                         f"for {num_classes} classes")
    labels = labels.to(device=device, dtype=torch.int64)
    keep = class_subset(labels, max_per_class, seeded_rng(seed, device))
    x = as_float(images[keep.to(images.device)].to(device))  # (n, C, H, W) in [0, 1]: only the subset moves
    y = labels[keep]
    clean_preds = predict_batched(predict, x, batch_size)
    clean_pc = per_class_accuracy(clean_preds, y, num_classes)
    clean = float((clean_preds == y).double().mean()) if len(y) else math.nan
    base = ProbeContext(predict, x, y, num_classes, np.asarray(class_counts), seeded_rng(seed, device),
                        batch_size, clean, clean_pc)
    out = ProbeResult()
    for name in chosen:
        result = PROBES.get(name)(replace(base, rng=probe_rng(seed, name, device)))
        out = ProbeResult({**out.metrics, **result.metrics}, {**out.per_class, **result.per_class},
                          {**out.curves, **result.curves})
    return out
