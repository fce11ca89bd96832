"""Index draws over a labelled set, on the labels' device: class-balanced and uniform.

Class-balanced means each class is equally likely and, within a class, each image (the reference's
ImbalancedDatasetSampler: probability proportional to 1 / n_y). The classifier's resampling rules, the
MUNIT trainer and the generator-quality judge all draw through `BalancedSampler`.
"""

from __future__ import annotations

import torch

from gitlib.errors import DataError


class BalancedSampler:
    """Class-balanced indices into `labels` (N,), drawn with replacement from the given random stream."""

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        counts = torch.bincount(labels, minlength=num_classes)  # (K,)
        if int(counts.sum()) == 0:
            raise DataError("train", "the training set is empty")
        self.weights = (1.0 / counts.to(torch.float64)[labels]).float()  # (N,)

    def __call__(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.weights, n, replacement=True, generator=rng)  # (n,) int64


def epoch_order(labels: torch.Tensor, num: int, rng: torch.Generator,
                balanced: BalancedSampler | None = None) -> torch.Tensor:
    """`num` training indices for one epoch, (num,) int64 on the labels' device: drawn by `balanced` when
    given, else a random permutation (cycled if num > N)."""
    if balanced is not None:
        return balanced(num, rng)
    n = labels.shape[0]
    reps = -(-num // n)
    perms = [torch.randperm(n, generator=rng, device=labels.device) for _ in range(reps)]
    return torch.cat(perms)[:num]
