"""Pieces of the classifier recipe: samplers, class weights, schedule, losses, crop + flip, threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gitlib.errors import ConfigError
from gitlib.train.augment import crop_flip, threshold_keep_prob
from gitlib.train.config import LOSSES, ClassifierConfig
from gitlib.train.losses import ldam_margins
from gitlib.train.rules import effective_number_weights, rule_phase
from gitlib.train.schedule import learning_rate

COUNTS = np.array([500, 100, 20, 5])


def _labels() -> torch.Tensor:
    return torch.cat([torch.full((int(n),), c) for c, n in enumerate(COUNTS)])


def build_loss(name: str, counts: np.ndarray, **fields: float):
    return LOSSES.build(name, counts, ClassifierConfig(**fields))  # type: ignore[arg-type]


def test_rule_phases() -> None:
    assert rule_phase("drw", 4, 5).reweight is False and rule_phase("drw", 5, 5).reweight is True
    assert rule_phase("drs", 4, 5).balanced_sampling is False and rule_phase("drs", 5, 5).balanced_sampling
    assert rule_phase("resample", 0, 5).balanced_sampling and not rule_phase("resample", 0, 5).reweight
    assert rule_phase("reweight", 0, 5).reweight
    assert rule_phase("none", 9, 5) == rule_phase("none", 0, 5)
    assert rule_phase("DRS_Simple", 5, 5) == rule_phase("drs", 5, 5)  # the reference spelling is an alias
    with pytest.raises(ConfigError, match=r"classifier\.train_rule"):
        rule_phase("bogus", 0, 5)


def test_effective_number_weights() -> None:
    w = effective_number_weights(COUNTS, 0.9999)
    assert w.sum() == pytest.approx(len(COUNTS))  # normalised to the class count
    assert np.all(np.diff(w) > 0)  # smaller classes weigh more
    raw = (1 - 0.9999) / (1 - 0.9999 ** COUNTS)
    assert np.allclose(w / w[0], raw / raw[0])


def test_schedule_warmup_and_milestones() -> None:
    lr = lambda e, s: learning_rate(0.1, e, s, 10, 2, (5, 8), (0.01, 0.0001))  # noqa: E731
    assert lr(0, 0) == pytest.approx(0.1 / 20)  # first step of a 2-epoch warm-up of 10 steps each
    assert lr(1, 9) == pytest.approx(0.1)  # warm-up ends on the last step of epoch 1
    assert lr(4, 3) == pytest.approx(0.1)
    assert lr(5, 0) == pytest.approx(0.001) and lr(8, 0) == pytest.approx(0.00001)


def test_losses() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(16, 4).tanh(), torch.randint(0, 4, (16,))
    ce = build_loss("ce", COUNTS)(logits, y, None)
    assert ce == pytest.approx(F.cross_entropy(logits, y).item())
    focal0 = build_loss("focal", COUNTS, focal_gamma=0.0)(logits, y, None)
    assert focal0 == pytest.approx(ce.item(), rel=1e-6)  # gamma 0 is plain CE
    assert build_loss("focal", COUNTS)(logits, y, None) < ce  # gamma 1 down-weights easy examples
    m = ldam_margins(COUNTS, 0.5)
    assert m.max() == pytest.approx(0.5) and m[-1] == pytest.approx(0.5)  # the smallest class
    assert m[0] == pytest.approx(0.5 * (5 / 500) ** 0.25)  # margins proportional to n^(-1/4)
    ldam = build_loss("ldam", COUNTS, ldam_max_margin=0.5, ldam_scale=30.0)(logits, y, None)
    by_hand = F.cross_entropy(30 * (logits - F.one_hot(y, 4) * m[y][:, None]), y)
    assert ldam == pytest.approx(by_hand.item(), rel=1e-5)
    w = torch.tensor([0.1, 0.2, 1.0, 3.0])
    assert build_loss("ce", COUNTS)(logits, y, w) == pytest.approx(F.cross_entropy(logits, y, weight=w).item())


def test_threshold_keep_prob() -> None:
    p = threshold_keep_prob(COUNTS, 100)
    assert p.tolist() == pytest.approx([0.0, 0.0, 80 / 95, 1.0])  # max((thr - n) / (thr - n_min), 0)
    assert threshold_keep_prob(COUNTS, None).tolist() == [1.0] * 4
    assert threshold_keep_prob(COUNTS, 5).tolist() == [0.0] * 4


def test_crop_flip_is_a_shifted_window_of_the_padded_image() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 2, 8, 8)
    out = crop_flip(x, g, pad=2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        # each output is some 8x8 window of its own padded image, possibly mirrored
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
