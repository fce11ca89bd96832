"""Training rules (PAPER.md): which sampler and which class weights are in force at each epoch.

none: uniform shuffling, no weights; resample: class-balanced sampling throughout; reweight:
effective-number weights throughout; drw / drs: the same two, switched on from the first lr drop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RulePhase:
    balanced_sampling: bool
    reweight: bool


def rule_phase(rule: str, epoch: int, first_drop_epoch: int) -> RulePhase:
    """What `rule` does in 0-based `epoch`."""
    deferred_on = epoch >= first_drop_epoch
    if rule == "none":
        return RulePhase(False, False)
    if rule == "resample":
        return RulePhase(True, False)
    if rule == "reweight":
        return RulePhase(False, True)
    if rule == "drw":
        return RulePhase(False, deferred_on)
    if rule == "drs":
        return RulePhase(deferred_on, False)
    raise ValueError(f"unknown train rule '{rule}' (known: none, resample, reweight, drw, drs)")


def effective_number_weights(class_counts: np.ndarray, beta: float) -> np.ndarray:
    """Class-balanced weights (Cui et al. 2019): (1 - beta) / (1 - beta^n_c), normalised to sum to K."""
    counts = np.asarray(class_counts, dtype=np.float64)
    w = np.where(counts > 0, (1.0 - beta) / (1.0 - np.power(beta, np.maximum(counts, 1.0))), 0.0)
    return w * (len(counts) / w.sum())


def epoch_order(labels: torch.Tensor, class_counts: torch.Tensor, balanced: bool, num: int,
                generator: torch.Generator) -> torch.Tensor:
    """`num` training indices for one epoch, (num,) int64 on the labels' device.

    Uniform: a random permutation (cycled if num > N). Balanced: drawn with replacement with probability
    proportional to 1 / n_{y_i}, so every class is equally likely (the reference ImbalancedDatasetSampler).
    """
    n = labels.shape[0]
    if balanced:
        p = 1.0 / class_counts.to(torch.float64)[labels]  # (N,)
        return torch.multinomial(p.float(), num, replacement=True, generator=generator)
    reps = -(-num // n)
    perms = [torch.randperm(n, generator=generator, device=labels.device) for _ in range(reps)]
    return torch.cat(perms)[:num]
