"""MunitTrainer: finite losses, seeded determinism, exact resume, learning; the diversity term and the
style warp."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from gitlib.data.dataset import BuiltDataset
from gitlib.data.spec import DatasetSpec
from gitlib.train.config import GeneratorConfig
from gitlib.train.generator import LOSS_KEYS, MunitTrainer, diversity_loss

# A tiny model keeps every step a few milliseconds on one thread.
TINY = GeneratorConfig(dim=4, n_res=1, mlp_dim=8, dis_dim=4, batch_size=4, lr=1e-3)
# The same with a style warp trained with the diversity term.
TINY_WARP = replace(TINY, style_warp="affine", div_w=5.0)


def tiny_dataset(counts: tuple[int, ...] = (24, 6, 2), size: int = 16, channels: int = 1) -> BuiltDataset:
    """Long-tailed toy set: class c is a bright square at a class-specific place on a random background."""
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = torch.randint(0, 60, (len(labels), channels, size, size), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        x[i, :, 2 + 3 * c: 6 + 3 * c, 4:10] = 255
    return BuiltDataset(DatasetSpec(), len(counts), x, labels, x[:4], labels[:4], x[:4], labels[:4], x[:4], labels[:4])


def weights(trainer: MunitTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*trainer.model.parameters(), *trainer.dis.parameters()]]


def test_losses_are_finite_and_reported() -> None:
    trainer = MunitTrainer(TINY, tiny_dataset(), seed=0, device="cpu")
    losses = [trainer.step() for _ in range(3)]
    assert trainer.iteration == 3
    assert all(set(d) == set(LOSS_KEYS) for d in losses)
    assert all(np.isfinite(v) for d in losses for v in d.values())  # no NaN / inf after a few steps
    assert losses[-1]["recon_x"] > 0 and losses[-1]["dis"] > 0


def test_train_logs_every_n_and_at_the_end() -> None:
    trainer = MunitTrainer(TINY, tiny_dataset(), seed=0, device="cpu")
    seen: list[dict[str, float]] = []
    records = trainer.train(5, on_log=seen.append, log_every=2)
    assert [r["iteration"] for r in records] == [2.0, 4.0, 5.0]  # every 2 steps, plus the last one
    assert seen == records


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    data = tiny_dataset()
    a, b, c = (MunitTrainer(TINY, data, seed=s, device="cpu") for s in (7, 7, 8))
    for t in (a, b, c):
        for _ in range(3):
            t.step()
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a), weights(c), strict=True))


@pytest.mark.parametrize("cfg", [TINY, TINY_WARP], ids=["plain", "warp"])
def test_resume_equals_uninterrupted(cfg: GeneratorConfig) -> None:
    data = tiny_dataset()
    straight = MunitTrainer(cfg, data, seed=3, device="cpu")
    straight_losses = [straight.step() for _ in range(4)]

    first = MunitTrainer(cfg, data, seed=3, device="cpu")
    for _ in range(2):
        first.step()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # through bytes, as a checkpoint file would be
    buf.seek(0)
    # A different seed on purpose: everything that matters must come from the checkpoint.
    resumed = MunitTrainer(cfg, data, seed=99, device="cpu")
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.iteration == 2
    resumed_losses = [resumed.step() for _ in range(2)]

    assert resumed_losses == straight_losses[2:]  # same batches, styles and updates
    assert all(torch.equal(x, y) for x, y in zip(weights(straight), weights(resumed), strict=True))


def test_training_lowers_reconstruction() -> None:
    trainer = MunitTrainer(TINY, tiny_dataset(), seed=0, device="cpu")
    first = trainer.train(10, log_every=10)[0]["recon_x"]
    later = trainer.train(30, log_every=30)[0]["recon_x"]
    assert later < 0.8 * first  # the autoencoder path learns


def test_default_losses_leave_the_diversity_term_out() -> None:
    trainer = MunitTrainer(TINY, tiny_dataset(), seed=0, device="cpu")
    rec = trainer.step()
    weighted = (TINY.gan_w * rec["gen_adv"] + TINY.recon_x_w * rec["recon_x"] + TINY.recon_s_w * rec["recon_s"]
                + TINY.recon_c_w * rec["recon_c"])
    assert rec["div"] == 0.0  # div_w 0: not computed
    assert rec["gen_total"] == pytest.approx(weighted, rel=1e-6)  # the total is MUNIT's four losses


def test_diversity_loss_is_minus_image_distance_per_style_distance() -> None:
    a, b = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    z, z2 = torch.randn(3, 4), torch.randn(3, 4)
    assert float(diversity_loss(a, a, z, z2)) == 0.0  # one image for both styles: no diversity
    base = float(diversity_loss(a, b, z, z2))
    assert base < 0  # different images lower the loss
    assert float(diversity_loss(a, a + 2 * (b - a), z, z2)) == pytest.approx(2 * base, rel=1e-5)  # twice as far
    assert float(diversity_loss(a, b, z, z + 2 * (z2 - z))) == pytest.approx(base / 2, rel=1e-5)  # per style unit


def random_style_angles(trainer: MunitTrainer, n: int = 256) -> torch.Tensor:
    """Turn angles (radians) the warp gives random styles N(0, I)."""
    assert trainer.model.warp is not None
    z = torch.randn(n, trainer.cfg.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theta = trainer.model.warp.matrix(z, (16, 16))
    return torch.atan2(theta[:, 1, 0], theta[:, 0, 0])


@pytest.mark.slow
def test_diversity_term_makes_random_styles_turn() -> None:
    # The warp starts at the identity. MUNIT's losses alone leave it there (nothing in them rewards a turn
    # that the style encoder cannot read back); with the diversity term random styles come to turn the
    # image by angles spread widely.
    data = tiny_dataset()
    spreads = {}
    for div_w in (0.0, TINY_WARP.div_w):
        trainer = MunitTrainer(replace(TINY_WARP, div_w=div_w), data, seed=0, device="cpu")
        assert float(random_style_angles(trainer).abs().max()) == 0.0
        trainer.train(120, log_every=120)
        spreads[div_w] = math.degrees(float(random_style_angles(trainer).std()))
    assert spreads[0.0] < 5.0
    assert spreads[TINY_WARP.div_w] > 20.0


def test_warp_keys_are_validated() -> None:
    from gitlib.configs import from_dict
    from gitlib.errors import ConfigError

    assert from_dict(GeneratorConfig, {"style_warp": "Affine"}, "generator").style_warp == "affine"
    with pytest.raises(ConfigError, match=r"generator\.style_warp"):
        from_dict(GeneratorConfig, {"style_warp": "flow"}, "generator")  # not a warp gitsweep has
    with pytest.raises(ConfigError, match=r"generator\.div_w"):
        from_dict(GeneratorConfig, {"div_w": 1.0}, "generator")  # the term trains a warp: none to train
    with pytest.raises(ConfigError, match=r"generator\.div_w"):
        from_dict(GeneratorConfig, {"div_w": -1.0, "style_warp": "affine"}, "generator")
