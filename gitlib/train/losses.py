"""Classification losses (registry): cross-entropy, LDAM (Cao et al. 2019) and focal (Lin et al. 2017).

Every loss is called as `loss(logits (B, K), targets (B,), class_weight (K,) | None) -> scalar`; the class
weights come from the training rule (reweight / DRW) and may change between epochs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def cross_entropy() -> LossFn:
    def loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, weight=weight)

    return loss


def ldam_margins(class_counts: np.ndarray, max_margin: float) -> torch.Tensor:
    """Per-class margins proportional to n_c^(-1/4), the largest equal to `max_margin`."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)  # empty classes: largest margin
    m = counts ** -0.25
    return torch.tensor(m * (max_margin / m.max()), dtype=torch.float32)


def ldam(class_counts: np.ndarray, max_margin: float, scale: float) -> LossFn:
    """LDAM: subtract the class margin from the true-class cosine logit, scale by s, cross-entropy.

    Expects cosine logits in [-1, 1] (the normalised head)."""
    margins = ldam_margins(class_counts, max_margin)

    def loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        logits = logits.float()
        m = margins.to(logits.device)[targets]  # (B,)
        shifted = logits - F.one_hot(targets, logits.shape[1]).to(logits.dtype) * m[:, None]
        return F.cross_entropy(scale * shifted, targets, weight=weight)

    return loss


def focal(gamma: float) -> LossFn:
    """(1 - p_t)^gamma * CE, with the (weighted) CE per sample, averaged over the batch."""

    def loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, targets, reduction="none")  # (B,)
        p_t = torch.exp(-ce)
        weighted = ce if weight is None else ce * weight[targets]
        return ((1.0 - p_t) ** gamma * weighted).mean()

    return loss


def build_loss(name: str, class_counts: np.ndarray, ldam_max_margin: float = 0.5, ldam_scale: float = 30.0,
               focal_gamma: float = 1.0) -> LossFn:
    if name == "ce":
        return cross_entropy()
    if name == "ldam":
        return ldam(class_counts, ldam_max_margin, ldam_scale)
    if name == "focal":
        return focal(focal_gamma)
    raise ValueError(f"unknown loss '{name}' (known: ce, ldam, focal)")
