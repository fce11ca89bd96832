"""Classification losses: cross-entropy, LDAM (Cao et al. 2019) and focal (Lin et al. 2017).

The `classifier.loss` registry (gitlib.train.config.LOSSES) names the factories here; each takes the
class counts and the classifier config and returns `loss(logits (B, K), targets (B,), class_weight (K,) |
None) -> scalar`. The class weights come from the training rule (reweight / DRW) and may change between
epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from gitlib.train.config import ClassifierConfig

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def cross_entropy(class_counts: np.ndarray, cfg: ClassifierConfig) -> LossFn:
    def loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, weight=weight)

    return loss


def ldam_margins(class_counts: np.ndarray, max_margin: float) -> torch.Tensor:
    """Per-class margins proportional to n_c^(-1/4), the largest equal to `max_margin`."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)  # empty classes: largest margin
    m = counts ** -0.25
    return torch.tensor(m * (max_margin / m.max()), dtype=torch.float32)


def ldam(class_counts: np.ndarray, cfg: ClassifierConfig) -> LossFn:
    """LDAM: subtract the class margin from the true-class cosine logit, scale by s, cross-entropy.

    Expects cosine logits in [-1, 1] (the normalised head)."""
    margins = ldam_margins(class_counts, cfg.ldam_max_margin)
    scale = cfg.ldam_scale

    def loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        logits = logits.float()
        m = margins.to(logits.device)[targets]  # (B,)
        shifted = logits - F.one_hot(targets, logits.shape[1]).to(logits.dtype) * m[:, None]
        return F.cross_entropy(scale * shifted, targets, weight=weight)

    return loss


def focal(class_counts: np.ndarray, cfg: ClassifierConfig) -> LossFn:
    """(1 - p_t)^gamma * CE, with the (weighted) CE per sample, averaged over the batch."""
    gamma = cfg.focal_gamma

    def loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, targets, reduction="none")  # (B,)
        p_t = torch.exp(-ce)
        weighted = ce if weight is None else ce * weight[targets]
        return ((1.0 - p_t) ** gamma * weighted).mean()

    return loss
