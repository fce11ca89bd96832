"""Training rules (docs/science.md, "Classifier recipe"): which sampler and which class weights are in
force at each epoch. The names are the `classifier.train_rule` registry, with the reference code's
spellings (`None`, `Resample`, `Reweight`, `DRW`, `DRS`, `DRS_Simple`) accepted as aliases.

none: uniform shuffling, no weights; resample: class-balanced sampling throughout; reweight:
effective-number weights throughout; drw / drs: the same two, switched on from the first lr drop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gitlib.registry import Registry


@dataclass(frozen=True)
class RulePhase:
    balanced_sampling: bool
    reweight: bool


# rule(0-based epoch, first_drop_epoch) -> what the rule does in that epoch
Rule = Callable[[int, int], RulePhase]
RULES: Registry[Rule] = Registry("classifier.train_rule", aliases={"drs_simple": "drs"})


@RULES.register("none")
def _none(epoch: int, first_drop: int) -> RulePhase:
    return RulePhase(False, False)


@RULES.register("resample")
def _resample(epoch: int, first_drop: int) -> RulePhase:
    return RulePhase(True, False)


@RULES.register("reweight")
def _reweight(epoch: int, first_drop: int) -> RulePhase:
    return RulePhase(False, True)


@RULES.register("drw")
def _drw(epoch: int, first_drop: int) -> RulePhase:
    return RulePhase(False, epoch >= first_drop)


@RULES.register("drs")
def _drs(epoch: int, first_drop: int) -> RulePhase:
    return RulePhase(epoch >= first_drop, False)


def rule_phase(rule: str, epoch: int, first_drop_epoch: int) -> RulePhase:
    """What `rule` does in 0-based `epoch`."""
    return RULES.get(rule)(epoch, first_drop_epoch)


def effective_number_weights(class_counts: np.ndarray, beta: float) -> np.ndarray:
    """Class-balanced weights (Cui et al. 2019): (1 - beta) / (1 - beta^n_c), normalised to sum to K."""
    counts = np.asarray(class_counts, dtype=np.float64)
    w = np.where(counts > 0, (1.0 - beta) / (1.0 - np.power(beta, np.maximum(counts, 1.0))), 0.0)
    return w * (len(counts) / w.sum())
