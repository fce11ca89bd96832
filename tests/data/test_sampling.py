"""Class-balanced and uniform index draws (one implementation for the classifier rules, MUNIT and the judge)."""

from __future__ import annotations

import torch

from gitlib.data.sampling import BalancedSampler, epoch_order
from gitlib.device import seeded_rng


def test_batches_are_class_balanced() -> None:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate((200, 20, 2))])
    idx = BalancedSampler(labels, 4)(6000, seeded_rng(0, torch.device("cpu")))  # class 3 has no images
    share = torch.bincount(labels[idx], minlength=4).float() / len(idx)
    assert torch.allclose(share[:3], torch.full((3,), 1 / 3), atol=0.03)  # uniform over present classes
    assert share[3] == 0  # an empty class is never drawn
    assert set(idx[labels[idx] == 2].tolist()) == {220, 221}  # both images of the smallest class appear


def test_epoch_order_uniform_is_a_permutation_balanced_draws_with_replacement() -> None:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate((50, 5))])
    perm = epoch_order(labels, len(labels), seeded_rng(1))
    assert sorted(perm.tolist()) == list(range(len(labels)))  # uniform: every image once per epoch
    longer = epoch_order(labels, 2 * len(labels) + 3, seeded_rng(1))
    assert torch.bincount(longer, minlength=len(labels)).min() >= 2  # cycled when the epoch is longer
    drawn = epoch_order(labels, 4000, seeded_rng(1), BalancedSampler(labels, 2))
    share = float((labels[drawn] == 1).float().mean())
    assert abs(share - 0.5) < 0.04  # balanced: the 5-image class is half of every epoch
    again = epoch_order(labels, 4000, seeded_rng(1), BalancedSampler(labels, 2))
    assert torch.equal(drawn, again)  # the random stream alone fixes the order
