"""MunitTrainer: finite losses, seeded determinism, exact resume, learning."""

from __future__ import annotations

import io

import numpy as np
import torch

from gitlib.data.dataset import BuiltDataset
from gitlib.data.spec import DatasetSpec
from gitlib.train.config import GeneratorConfig
from gitlib.train.generator import LOSS_KEYS, MunitTrainer

# A tiny model keeps every step a few milliseconds on one thread.
TINY = GeneratorConfig(dim=4, n_res=1, mlp_dim=8, dis_dim=4, batch_size=4, lr=1e-3)


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


def test_resume_equals_uninterrupted() -> None:
    data = tiny_dataset()
    straight = MunitTrainer(TINY, data, seed=3, device="cpu")
    straight_losses = [straight.step() for _ in range(4)]

    first = MunitTrainer(TINY, data, seed=3, device="cpu")
    for _ in range(2):
        first.step()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # through bytes, as a checkpoint file would be
    buf.seek(0)
    # A different seed on purpose: everything that matters must come from the checkpoint.
    resumed = MunitTrainer(TINY, data, seed=99, device="cpu")
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
