"""Learning-rate schedule: linear warm-up, then step factors of the base lr after milestones."""

from __future__ import annotations

from collections.abc import Sequence


def lr_factor(epoch: int, milestones: Sequence[int], factors: Sequence[float]) -> float:
    """Cumulative factor of the base lr in force during 0-based `epoch` (factors[i] from milestones[i] on)."""
    factor = 1.0
    for milestone, f in zip(milestones, factors, strict=True):
        if epoch >= milestone:
            factor = f
    return factor


def learning_rate(base_lr: float, epoch: int, step: int, steps_per_epoch: int, warmup_epochs: int,
                  milestones: Sequence[int], factors: Sequence[float]) -> float:
    """lr for 0-based `step` of 0-based `epoch`.

    Warm-up rises linearly per step from base_lr / (warmup_epochs * steps) and reaches base_lr on the last
    step of epoch `warmup_epochs - 1` (per step rather than per epoch: smoother on short CPU runs).
    """
    lr = base_lr * lr_factor(epoch, milestones, factors)
    if epoch < warmup_epochs:
        lr *= (epoch * steps_per_epoch + step + 1) / (warmup_epochs * steps_per_epoch)
    return lr
