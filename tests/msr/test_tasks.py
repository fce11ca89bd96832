"""Task families: equivariant by construction (1-D shifts, 2-D exact rotations / mirror with the regular
representation's channel permutation), deterministic in (seed, index), independent of the batch, with
disjoint meta-train / meta-test indices."""

from __future__ import annotations

import pytest
import torch

from gitlib.msr.tasks import PROBLEMS, GroupConvFamily, LowRankFamily, build_family, hashed_normal


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _low_rank(problem: str, seed: int) -> LowRankFamily:
    family = build_family(problem, seed=seed)
    assert isinstance(family, LowRankFamily)
    return family


def _group_conv(problem: str, seed: int) -> GroupConvFamily:
    family = build_family(problem, seed=seed)
    assert isinstance(family, GroupConvFamily)
    return family


def test_rank1_outputs_shift_with_inputs_on_valid_positions() -> None:
    family = build_family("rank1", seed=0)
    index = torch.tensor([0, 1, 8500])
    x, y = family.sample(index, 4, "query")
    for s in (1, 3):
        shifted = family.targets(index, torch.roll(x, s, dims=-1))
        assert torch.allclose(shifted[..., s:], y[..., :-s], atol=1e-5)  # x shifted by s: y shifts by s
    (a, b), = family.symmetry_pairs(lambda v: family.targets(index, v), x)
    assert _relative(a, b) < 1e-6  # the family's own symmetry check agrees: rank1 is exactly equivariant


@pytest.mark.parametrize("problem", ["rank2", "rank5"])
def test_low_rank_families_are_only_partially_translation_equivariant(problem: str) -> None:
    family = _low_rank(problem, seed=0)
    assert family.connectivity.shape == (68, family.rank)  # one connectivity for the family
    assert torch.allclose(family.connectivity.sum(1), torch.ones(68))  # softmax over r
    assert torch.equal(_low_rank(problem, seed=0).connectivity, family.connectivity)  # fixed by the seed
    assert not torch.equal(_low_rank(problem, seed=1).connectivity, family.connectivity)  # seed changes it
    index = torch.arange(20)
    x, _ = family.sample(index, 2, "support")
    (a, b), = family.symmetry_pairs(lambda v: family.targets(index, v), x)
    assert _relative(a, b) > 0.1  # position-dependent filters: a shift is no exact symmetry


def test_ring_rotation_is_45_degrees_of_the_3x3_grid() -> None:
    family = _group_conv("rot8", seed=0)
    grid = torch.arange(9).view(3, 3)
    assert torch.equal(family.filter_index[2], torch.rot90(grid, 1).flatten())  # two ring steps = rot90
    assert torch.equal(family.filter_index[1][4], torch.tensor(4))  # the centre never moves
    assert len({tuple(r.tolist()) for r in family.filter_index}) == 8  # 8 distinct rotations: C8 acts freely


def _regular_rotation_source(groups: int, flips: bool, k: int) -> torch.Tensor:
    """Channel (g, s, r) of f(rot90^k x) is rot90^k of channel (g, s, r - 2k) of f(x)."""
    s_count = 2 if flips else 1
    g, s, r = torch.meshgrid(torch.arange(groups), torch.arange(s_count), torch.arange(8), indexing="ij")
    return ((g * s_count + s) * 8 + (r - 2 * k) % 8).flatten()


@pytest.mark.parametrize("problem", ["rot8", "rot8_flip"])
def test_group_conv_outputs_rotate_and_shift_channels_within_groups(problem: str) -> None:
    family = build_family(problem, seed=0)
    index = torch.tensor([2, 9999])
    x, y = family.sample(index, 2, "query")
    for k in (1, 2, 3):
        rotated = family.targets(index, torch.rot90(x, k, dims=(-2, -1)))
        src = _regular_rotation_source(3, problem == "rot8_flip", k)
        expected = torch.rot90(y, k, dims=(-2, -1))[:, :, src]
        assert torch.allclose(rotated, expected, atol=1e-5)  # rot90^k: outputs rotate, channels r -> r + 2k
    pairs = family.symmetry_pairs(lambda v: family.targets(index, v), x)
    assert max(_relative(a, b) for a, b in pairs) < 1e-6  # the family's own symmetry check agrees


def test_d8_outputs_mirror_with_the_reflection_channel_permutation() -> None:
    family = build_family("rot8_flip", seed=0)
    index = torch.tensor([5])
    x, y = family.sample(index, 2, "query")
    g, s, r = torch.meshgrid(torch.arange(3), torch.arange(2), torch.arange(8), indexing="ij")
    src = ((g * 2 + (1 - s)) * 8 + (-r) % 8).flatten()
    mirrored = family.targets(index, torch.flip(x, dims=(-1,)))
    expected = torch.flip(y, dims=(-1,))[:, :, src]
    assert torch.allclose(mirrored, expected, atol=1e-5)  # mirror: outputs mirror, (s, r) -> (1 - s, -r)


@pytest.mark.parametrize("problem", sorted(PROBLEMS.names()))
def test_tasks_are_deterministic_and_independent_of_the_batch(problem: str) -> None:
    family, again = build_family(problem, seed=7), build_family(problem, seed=7)
    x, y = family.sample(torch.tensor([3, 8004, 41]), 3, "support")
    x2, y2 = again.sample(torch.tensor([3, 8004, 41]), 3, "support")
    assert torch.equal(x, x2) and torch.equal(y, y2)  # same (seed, index): same task data
    alone_x, alone_y = family.sample(torch.tensor([8004]), 3, "support")
    assert torch.equal(alone_x[0], x[1])  # inputs do not depend on the other tasks of the batch
    assert torch.allclose(alone_y[0], y[1], atol=1e-6)  # nor do the outputs
    prefix_x, _ = family.sample(torch.tensor([3]), 1, "support")
    assert torch.equal(prefix_x[0, 0], x[0, 0])  # the first k examples do not depend on how many are drawn
    other, _ = build_family(problem, seed=8).sample(torch.tensor([3]), 1, "support")
    assert not torch.equal(other[0, 0], x[0, 0])  # a different family seed is a different family
    query, _ = family.sample(torch.tensor([3]), 1, "query")
    assert not torch.equal(query[0, 0], x[0, 0])  # support and query inputs are independent streams


def test_meta_train_and_meta_test_indices_are_disjoint() -> None:
    family = build_family("rank1", seed=0, num_tasks=10000)
    train, test = set(family.train_indices.tolist()), set(family.test_indices.tolist())
    assert not train & test  # no task is both meta-train and meta-test
    assert train | test == set(range(10000))  # together they are every task
    assert max(train) < min(test) and len(train) == 8000  # first 80% meta-train, last 20% meta-test


def test_hashed_normals_are_standard_normal() -> None:
    z = hashed_normal(12345, torch.arange(200), 1000)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01  # N(0, 1) moments
    corr = torch.corrcoef(z[:, :40].T).fill_diagonal_(0).abs().max()
    assert corr < 0.3  # counters are uncorrelated across tasks (200 samples: noise ~ 0.07)
    assert torch.isfinite(hashed_normal(1, torch.tensor([2**40]), 5)).all()  # huge indices do not overflow
