"""Per-class invariance of a classifier to a transformation distribution T (docs/science.md, "eKLD").

eKLD(c) = mean over test images x of class c and K copies x' = T(x) of KL(p(y|x) || p(y|x')).
Each image is paired with transforms of itself. Everything runs in batches on the device: a chunk of
images gets one forward pass, its K copies are made with repeat_interleave, transformed as one batch and
passed forward in chunks; there are no per-image loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gitlib.augmenter import Augmenter, as_float
from gitlib.device import seeded_rng
from gitlib.models.resnet import inference_copy


@dataclass(frozen=True)
class Invariance:
    """Per-class results, (num_classes,) float64; NaN for classes without images."""

    ekld: np.ndarray
    consistency: np.ndarray


def default_batch_size(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 512


def _as_augmenter(nuisance: str | Augmenter) -> Augmenter:
    if isinstance(nuisance, str):
        from gitlib.data.nuisances import get_nuisance

        return get_nuisance(nuisance)
    return nuisance


@torch.no_grad()
def invariance_per_class(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         nuisance: str | Augmenter, num_samples: int, seed: int,
                         num_classes: int | None = None, batch_size: int | None = None,
                         device: torch.device | None = None) -> Invariance:
    """eKLD and consistency per class in one pass.

    images: uint8 (N, H, W) or (N, C, H, W) (or float in [0, 1]); labels: (N,) int. `batch_size` bounds
    the rows of one forward pass (original images x num_samples copies); None picks 512 on CPU (small
    batches stay in cache: faster per image than thousands) and 4096 on CUDA. `seed` seeds the transforms.
    """
    device = device or next(model.parameters()).device
    batch_size = batch_size or default_batch_size(device)
    augmenter = _as_augmenter(nuisance)
    k = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    labels = labels.to(device=device, dtype=torch.int64)
    rng = seeded_rng(seed, device)
    per_chunk = max(1, batch_size // num_samples)  # images per chunk
    kl_img, cons_img = [], []
    was_training = model.training
    net = inference_copy(model)  # batch norm folded where the model allows it
    net.eval()
    try:
        for start in range(0, images.shape[0], per_chunk):
            x = as_float(images[start:start + per_chunk].to(device))  # (b, C, H, W)
            logp = F.log_softmax(net(x).float(), dim=1)  # (b, K)
            copies = augmenter.sample(x.repeat_interleave(num_samples, dim=0), rng)  # (b*S, C, H, W)
            logq = torch.cat([F.log_softmax(net(part).float(), dim=1)
                              for part in copies.split(batch_size)])  # (b*S, K)
            logp_rep = logp.repeat_interleave(num_samples, dim=0)  # (b*S, K), row i*S+j pairs with image i
            kl = (logp_rep.exp() * (logp_rep - logq)).sum(dim=1)  # KL(p(y|x) || p(y|T(x))), (b*S,)
            same = (logq.argmax(dim=1) == logp_rep.argmax(dim=1)).float()
            kl_img.append(kl.view(-1, num_samples).mean(dim=1).double())  # (b,)
            cons_img.append(same.view(-1, num_samples).mean(dim=1).double())
    finally:
        model.train(was_training)
    return Invariance(ekld=_class_means(torch.cat(kl_img), labels, k),
                      consistency=_class_means(torch.cat(cons_img), labels, k))


def _class_means(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    sums = torch.zeros(num_classes, dtype=torch.float64, device=values.device).index_add_(0, labels, values)
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums.cpu().numpy() / counts.cpu().numpy()).astype(np.float64)  # 0/0 -> NaN for empty classes


def ekld_per_class(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, nuisance: str | Augmenter,
                   num_samples: int, seed: int, num_classes: int | None = None, batch_size: int | None = None,
                   device: torch.device | None = None) -> np.ndarray:
    """(num_classes,) eKLD per class; NaN where a class has no images."""
    return invariance_per_class(model, images, labels, nuisance, num_samples, seed, num_classes,
                                batch_size, device).ekld


def consistency_per_class(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          nuisance: str | Augmenter, num_samples: int, seed: int,
                          num_classes: int | None = None, batch_size: int | None = None,
                          device: torch.device | None = None) -> np.ndarray:
    """(num_classes,) fraction of copies whose arg-max equals the original's; NaN where a class is empty."""
    return invariance_per_class(model, images, labels, nuisance, num_samples, seed, num_classes,
                                batch_size, device).consistency


def per_class_subset(labels: torch.Tensor, per_class: int | None) -> torch.Tensor:
    """Indices of the first `per_class` images of every class (all when None), in the original order."""
    if per_class is None:
        return torch.arange(labels.shape[0])
    labels = labels.cpu()
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    first = torch.searchsorted(sorted_labels, sorted_labels, right=False)  # start of each label's run
    rank = torch.arange(labels.shape[0]) - first  # position within its class
    return torch.sort(order[rank < per_class]).values
