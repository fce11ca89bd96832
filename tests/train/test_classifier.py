"""The classifier loop on a tiny real data set: every loss x rule trains, exact resume, augmentation mix,
NaN detection, final metrics."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from gitlib.data.builds import get_dataset
from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import get_nuisance
from gitlib.data.spec import DatasetSpec
from gitlib.errors import ConfigError
from gitlib.metrics.evaluate import final_metrics
from gitlib.metrics.table import COLUMNS
from gitlib.runs.classifier import run_classifier, train_epoch
from gitlib.train.classifier import ClassifierTrainer, TrainingDiverged
from gitlib.train.config import LOSSES, ClassifierConfig
from gitlib.train.rules import RULES

CPU = torch.device("cpu")
TINY = ClassifierConfig(epochs=3, batch_size=32, warmup_epochs=1, milestones=(1, 2), lr_factors=(0.1, 0.01),
                        ekld_samples=4, ekld_per_class=5)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> BuiltDataset:
    # digits 16x16 with rotation, 40 .. 4 images per class (~180 training images)
    spec = DatasetSpec(source="digits", nuisance="rotation", max_per_class=40, imbalance_ratio=10,
                       val_per_class=5, test_per_class=10)
    return get_dataset(spec, tmp_path_factory.mktemp("store"))


class CountingAugmenter:
    """A real (if simple) augmenter, inverting images, that counts how many it was given."""

    def __init__(self) -> None:
        self.seen = 0

    def sample(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        self.seen += images.shape[0]
        return 1.0 - images


def _params(trainer: ClassifierTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("rule", RULES.names())
@pytest.mark.parametrize("loss", LOSSES.names())
def test_every_loss_and_rule_trains(data: BuiltDataset, loss: str, rule: str) -> None:
    cfg = replace(TINY, loss=loss, train_rule=rule, epochs=2)  # epoch 2 is past the first drop: DRW / DRS on
    trainer = ClassifierTrainer(cfg, data, seed=0, device=CPU)
    before = _params(trainer)
    history = [train_epoch(trainer, data) for _ in range(2)]
    assert {"train/loss", "train/acc", "lr", "val/acc", "val/balanced_acc", "epoch"} <= set(history[-1])
    assert all(math.isfinite(m["train/loss"]) for m in history)
    assert history[-1]["epoch"] == 2 and trainer.epoch == 2
    assert history[-1]["lr"] == pytest.approx(TINY.lr * 0.1)  # the first milestone is in force
    after = _params(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))  # it learned


@pytest.mark.parametrize("overrides", [
    {},
    {"augment": "oracle", "train_rule": "drs"},
    {"augment": "oracle", "train_rule": "drw", "loss": "ldam", "crop_flip": True, "git_threshold": 30,
     "git_start_epoch": 1, "gen_frac": 0.3},
])
def test_resume_from_checkpoint_equals_uninterrupted(data: BuiltDataset, overrides: dict) -> None:
    cfg = replace(TINY, **overrides)
    full = ClassifierTrainer(cfg, data, seed=3, device=CPU)
    for _ in range(cfg.epochs):
        full.run_epoch()

    first = ClassifierTrainer(cfg, data, seed=3, device=CPU)
    first.run_epoch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # through bytes, as a sweep checkpoint would go
    del first
    buf.seek(0)
    resumed = ClassifierTrainer(cfg, data, seed=3, device=CPU)
    resumed.load_state_dict(torch.load(buf, weights_only=True))  # plain tensors and dicts only
    assert resumed.epoch == 1
    while resumed.epoch < cfg.epochs:
        resumed.run_epoch()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    # bit-identical weights and batch-norm statistics: nothing random escaped the checkpoint
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(full.rng.get_state(), resumed.rng.get_state())
    assert torch.equal(full.generated_seen, resumed.generated_seen)  # the count survives the checkpoint too


def test_different_seeds_give_different_models(data: BuiltDataset) -> None:
    runs = [ClassifierTrainer(replace(TINY, epochs=1), data, seed=s, device=CPU) for s in (0, 1)]
    for t in runs:
        t.run_epoch()
    w0, w1 = (t.model.head.weight for t in runs)
    assert not torch.equal(w0, w1)


def test_gen_frac_share_and_delayed_start(data: BuiltDataset) -> None:
    aug = CountingAugmenter()
    cfg = replace(TINY, augment="git", gen_frac=0.25, git_start_epoch=1, epochs=2)
    trainer = ClassifierTrainer(cfg, data, seed=0, device=CPU, generator=aug)
    trainer.run_epoch()
    assert aug.seen == 0  # before git_start_epoch the batches are all real
    trainer.run_epoch()
    n, b = len(data.train_y), cfg.batch_size
    sizes = [min(b, n - s) for s in range(0, n, b)]
    assert aug.seen == sum(round(0.25 * s) for s in sizes)  # a quarter of every batch is generated
    assert int(trainer.generated_seen.sum()) == aug.seen  # and counted per class


def test_oracle_starts_at_once_and_git_after_first_drop() -> None:
    assert replace(TINY, augment="oracle").resolved_augment_start == 0
    assert replace(TINY, augment="git").resolved_augment_start == TINY.milestones[0]
    assert replace(TINY, augment="oracle", git_start_epoch=2).resolved_augment_start == 2


def test_class_size_threshold(data: BuiltDataset) -> None:
    n_min = int(data.class_counts[data.class_counts > 0].min())
    cfg = replace(TINY, augment="git", git_start_epoch=0, epochs=1, gen_frac=0.5)
    none_kept = CountingAugmenter()
    ClassifierTrainer(replace(cfg, git_threshold=n_min), data, 0, CPU, none_kept).run_epoch()
    assert none_kept.seen == 0  # keep probability max((thr - n_c) / (thr - n_min), 0) is 0 everywhere
    some_kept, all_kept = CountingAugmenter(), CountingAugmenter()
    ClassifierTrainer(replace(cfg, git_threshold=20), data, 0, CPU, some_kept).run_epoch()
    ClassifierTrainer(cfg, data, 0, CPU, all_kept).run_epoch()
    assert 0 < some_kept.seen < all_kept.seen  # only small classes, and those only sometimes
    counted = ClassifierTrainer(replace(cfg, git_threshold=20), data, 0, CPU, CountingAugmenter())
    counted.run_epoch()
    big = torch.as_tensor(data.class_counts >= 20)
    # only kept generated images count, and classes at or above the threshold keep none
    assert int(counted.generated_seen.sum()) == some_kept.seen and not counted.generated_seen[big].any()


def test_nan_loss_raises_a_clear_error(data: BuiltDataset) -> None:
    trainer = ClassifierTrainer(TINY, data, seed=0, device=CPU)
    with torch.no_grad():
        trainer.model.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan in epoch 1") as info:
        trainer.run_epoch()
    assert isinstance(info.value, TrainingDiverged)


def test_augmenter_requirements(data: BuiltDataset) -> None:
    with pytest.raises(ConfigError, match=r"classifier\.augment"):
        ClassifierTrainer(replace(TINY, augment="git"), data, 0, CPU)  # GIT needs a generator
    no_nuisance = replace(data, spec=replace(data.spec, nuisance="none"))
    with pytest.raises(ConfigError, match="oracle"):
        ClassifierTrainer(replace(TINY, augment="oracle"), no_nuisance, 0, CPU)


def test_run_classifier_final_metrics_and_table(data: BuiltDataset) -> None:
    seen = []
    result = run_classifier(replace(TINY, epochs=2), data, seed=0, device=CPU,
                            on_epoch=lambda t, m: seen.append((t.epoch, m["epoch"])))
    assert seen == [(1, 1.0), (2, 2.0)]
    m = result.metrics
    for key in ("test/acc", "test/balanced_acc", "test/many_acc", "test/medium_acc", "test/few_acc",
                "ekld/mean", "ekld/head", "ekld/tail", "ekld/size_spearman"):
        assert key in m
    assert 0.0 <= m["test/balanced_acc"] <= 1.0
    assert m["ekld/mean"] > 0 and -1.0 <= m["ekld/size_spearman"] <= 1.0
    assert tuple(result.per_class.column_names) == (*COLUMNS, "generated_seen")
    assert result.per_class.column("generated_seen").to_pylist() == [0] * data.num_classes  # no augmentation
    assert m["git/generated_seen_tail"] == m["git/generated_seen_head"] == 0
    assert result.per_class.column("train_count").to_pylist() == data.class_counts.tolist()
    ekld = np.asarray(result.per_class.column("ekld").to_pylist())
    assert np.isfinite(ekld).all() and (ekld >= 0).all()
    # the same final metrics with an explicitly named nuisance of another kind differ in eKLD only
    other, _ = final_metrics(result.trainer.model, data, get_nuisance("background"), TINY.ekld_samples,
                             TINY.ekld_per_class, 0, CPU)
    assert other["test/acc"] == m["test/acc"] and other["ekld/mean"] != m["ekld/mean"]


def test_oracle_redraws_the_nuisance_from_the_base_images(tmp_path) -> None:
    # background: re-applying it to stored images (no pixel is 0 any more) would change nothing
    spec = DatasetSpec(source="digits", nuisance="background", max_per_class=40, imbalance_ratio=10,
                       val_per_class=5, test_per_class=10)
    bg = get_dataset(spec, tmp_path)
    assert bg.train_base_x is not None and bg.train_base_x.shape == bg.train_x.shape
    trainer = ClassifierTrainer(replace(TINY, augment="oracle"), bg, seed=0, device=CPU)
    idx = torch.arange(len(bg.train_y))
    out = trainer._augment(idx, bg.train_y)  # (N, C, H, W) float in [0, 1]
    base = bg.train_base_x.float() / 255.0
    ink = bg.train_base_x != 0
    assert torch.equal(out[ink], base[ink])  # the strokes are the base image's
    stored, fresh = trainer.augmenter.measure(bg.train_x), trainer.augmenter.measure(out)
    assert (fresh != stored).float().mean() > 0.9  # a new background level for (nearly) every image
    assert len(torch.unique(fresh)) > 50  # drawn from [0, 100), not one level for all
    # without base images (a BuiltDataset made elsewhere) the oracle falls back to train_x
    fallback = ClassifierTrainer(replace(TINY, augment="oracle"), replace(bg, train_base_x=None), 0, CPU)
    assert fallback.augment_x is fallback.train_x
    # GIT re-styles the stored images, never the base images
    git = ClassifierTrainer(replace(TINY, augment="git"), bg, 0, CPU, generator=CountingAugmenter())
    assert git.augment_x is git.train_x


def test_resume_with_base_images_and_background_oracle(tmp_path) -> None:
    spec = DatasetSpec(source="digits", nuisance="background", max_per_class=40, imbalance_ratio=10,
                       val_per_class=5, test_per_class=10)
    bg = get_dataset(spec, tmp_path)
    cfg = replace(TINY, augment="oracle", git_threshold=30)
    full = ClassifierTrainer(cfg, bg, seed=5, device=CPU)
    for _ in range(cfg.epochs):
        full.run_epoch()
    first = ClassifierTrainer(cfg, bg, seed=5, device=CPU)
    first.run_epoch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = ClassifierTrainer(cfg, get_dataset(spec, tmp_path), seed=5, device=CPU)  # reloaded from Parquet
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    while resumed.epoch < cfg.epochs:
        resumed.run_epoch()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
