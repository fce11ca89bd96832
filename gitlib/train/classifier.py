"""The classifier loop (PAPER.md "Classifier recipe"), shared by `gitsweep train classifier` and sweep trials.

The whole training set sits on the device as uint8; an epoch is a list of index tensors from the rule's
sampler; oracle / GIT augmentation and crop + flip run batched on the device. With augmentation on, each
batch holds (1 - gen_frac) real images and gen_frac augmented ones, the latter a second draw from the
same sampler passed through the augmenter; the number of steps per epoch stays ceil(N / batch_size), so
augmentation changes what a step sees, not how many steps there are. The oracle is on from epoch 0,
GIT from the epoch after the first lr drop (cfg.resolved_augment_start; git_start_epoch overrides both).
The oracle draws a fresh nuisance on the untransformed base image of each sampled example
(data.train_base_x; train_x already carries its stored nuisance), GIT re-styles the stored image itself.
With a class-size threshold, a generated slot that is not kept holds its stored image unaugmented (the batch
size and class mix stay those of the sampler). Every random draw comes from one seeded torch.Generator
whose state is checkpointed, so a run restored from an epoch checkpoint ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from gitlib.configs import to_dict
from gitlib.data.dataset import BuiltDataset
from gitlib.errors import ConfigError
from gitlib.metrics import accuracy as acc
from gitlib.metrics.invariance import invariance_per_class, per_class_subset
from gitlib.metrics.table import per_class_table
from gitlib.models.resnet import CifarResNet, build_classifier, inference_copy
from gitlib.train.augment import Augmenter, crop_flip, nuisance_augmenter, threshold_keep_prob
from gitlib.train.config import ClassifierConfig
from gitlib.train.losses import build_loss
from gitlib.train.runtime import Precision, make_generator
from gitlib.train.sampling import effective_number_weights, epoch_order, rule_phase
from gitlib.train.schedule import learning_rate

EVAL_BATCH = 1024  # images per forward pass when evaluating


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; the message says when and at which learning rate."""


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) scaled to [0, 1], without a float copy of all."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for part in images.split(chunk):
        x = part.to(torch.float64) / 255.0  # (b, C, H, W)
        s += x.sum(dim=(0, 2, 3)).cpu()
        s2 += (x * x).sum(dim=(0, 2, 3)).cpu()
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


class ClassifierTrainer:
    """One classifier run: `run_epoch()` until `epoch == cfg.epochs`, then `final_metrics()`."""

    def __init__(self, cfg: ClassifierConfig, data: BuiltDataset, seed: int, device: torch.device,
                 augmenter: Augmenter | None = None) -> None:
        self.cfg, self.data, self.seed, self.device = cfg, data, int(seed), device
        self.augmenter = self._resolve_augmenter(cfg, data, augmenter)
        self.num_classes = data.num_classes
        self.class_counts = data.class_counts  # (K,) int64 numpy
        self.train_x = data.train_x.to(device)  # (N, C, H, W) uint8
        self.train_y = data.train_y.to(device=device, dtype=torch.int64)
        # What the augmenter is fed: the oracle re-draws the nuisance from the base images (train_x
        # already carries one: re-applying it would stack dilations, and be a no-op for background).
        self.augment_x = self.train_x
        if cfg.augment == "oracle" and data.train_base_x is not None:
            self.augment_x = data.train_base_x.to(device)  # (N, C, H, W) uint8, same order as train_x
        self._counts_t = torch.as_tensor(self.class_counts, device=device)
        mean, std = channel_stats(data.train_x)
        with torch.random.fork_rng(devices=[]):  # the init draws from the trial seed, not global state
            torch.manual_seed(self.seed)
            model = build_classifier(cfg.arch, data.channels, self.num_classes, normed_head=cfg.loss == "ldam",
                                     mean=mean, std=std)
        self.model: CifarResNet = model.to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.precision = Precision(device, cfg.amp)
        self.scaler = self.precision.scaler()
        self.loss_fn = build_loss(cfg.loss, self.class_counts, cfg.ldam_max_margin, cfg.ldam_scale, cfg.focal_gamma)
        self.class_weight = torch.tensor(effective_number_weights(self.class_counts, cfg.reweight_beta),
                                         dtype=torch.float32, device=device)
        self.keep_prob = torch.tensor(threshold_keep_prob(self.class_counts, cfg.git_threshold),
                                      dtype=torch.float32, device=device)
        self.generator = make_generator(self.seed, device)
        self.epoch = 0  # completed epochs

    @staticmethod
    def _resolve_augmenter(cfg: ClassifierConfig, data: BuiltDataset,
                           augmenter: Augmenter | None) -> Augmenter | None:
        if cfg.augment == "none":
            return None
        if augmenter is not None:
            return augmenter
        if cfg.augment == "oracle":
            if data.spec.nuisance == "none":
                raise ConfigError("classifier.augment", "oracle needs a data set nuisance (dataset.nuisance is none)")
            return nuisance_augmenter(data.spec)
        raise ConfigError("classifier.augment", "git needs a generator to augment with; none was given")

    # ---- training -------------------------------------------------------------------------------

    def augment_active(self, epoch: int) -> bool:
        return self.augmenter is not None and self.cfg.gen_frac > 0 and epoch >= self.cfg.resolved_augment_start

    def _augment(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generated part of a batch from training rows idx (G,) with labels y (G,): (G, C, H, W) float in
        [0, 1]. The augmenter gets augment_x (base images for the oracle); unkept slots get train_x."""
        assert self.augmenter is not None
        with torch.no_grad():
            if self.cfg.git_threshold is None:
                return self.augmenter.sample(self.augment_x[idx].float().div_(255.0), self.generator).float()
            keep = torch.rand(y.shape[0], generator=self.generator, device=self.device) < self.keep_prob[y]
            out = self.train_x[idx].float().div_(255.0)
            kept = keep.nonzero(as_tuple=True)[0]
            if kept.numel() == 0:
                return out
            src = self.augment_x[idx[kept]].float().div_(255.0)
            out[kept] = self.augmenter.sample(src, self.generator).float()
            return out

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch; returns train/loss, train/acc, lr, val/acc, val/balanced_acc, epoch (1-based)."""
        cfg = self.cfg
        if self.epoch >= cfg.epochs:
            raise RuntimeError(f"all {cfg.epochs} epochs are done")
        start_time = time.perf_counter()
        e = self.epoch
        phase = rule_phase(cfg.train_rule, e, cfg.first_drop_epoch)
        weight = self.class_weight if phase.reweight else None
        n, bsz = self.train_y.shape[0], cfg.batch_size
        steps = math.ceil(n / bsz)
        if n - (steps - 1) * bsz < 2 and steps > 1:
            steps -= 1  # a last batch of one image breaks batch norm
        augment = self.augment_active(e)
        real_order = epoch_order(self.train_y, self._counts_t, phase.balanced_sampling, n, self.generator)
        gen_order = (epoch_order(self.train_y, self._counts_t, phase.balanced_sampling, n, self.generator)
                     if augment else None)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        lr = cfg.lr
        for step in range(steps):
            s = step * bsz
            b = min(bsz, n - s) if step < steps - 1 else n - s
            n_gen = round(cfg.gen_frac * b) if augment else 0
            idx = real_order[s:s + b - n_gen]
            x = self.train_x[idx].float().div_(255.0)  # (B_real, C, H, W)
            y = self.train_y[idx]
            if n_gen:
                assert gen_order is not None
                gidx = gen_order[s:s + n_gen]
                gy = self.train_y[gidx]
                gx = self._augment(gidx, gy)  # (G, C, H, W)
                x, y = torch.cat([x, gx]), torch.cat([y, gy])
            if cfg.crop_flip:
                x = crop_flip(x, self.generator)
            lr = learning_rate(cfg.lr, e, step, steps, cfg.warmup_epochs, cfg.milestones, cfg.lr_factors)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self.precision.autocast():
                logits = self.model(x)  # (B, K)
            loss = self.loss_fn(logits, y, weight)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach().float() * y.shape[0]
            correct += (logits.detach().argmax(dim=1) == y).sum()
            seen += y.shape[0]
        train_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"classifier training loss became {train_loss} in epoch {e + 1} "
                                   f"(lr {lr:.3g}, loss {cfg.loss}); lower classifier.lr or check the data")
        self.epoch += 1
        train_s = time.perf_counter() - start_time
        val_acc = self._accuracy(self.data.val_x, self.data.val_y)
        return {
            "epoch": float(self.epoch),
            "train/loss": train_loss,
            "train/acc": float(correct) / max(seen, 1),
            "lr": lr,
            "val/acc": val_acc["acc"],
            "val/balanced_acc": val_acc["balanced_acc"],
            "time/train_s": train_s,  # the training steps alone
            "time/epoch_s": time.perf_counter() - start_time,  # with validation
        }

    # ---- evaluation -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Arg-max predictions (N,) for uint8 images (N, C, H, W), in eval mode, batched."""
        net = inference_copy(self.model)  # an eval-mode copy with batch norm folded; self.model is untouched
        out = []
        for part in images.split(EVAL_BATCH):
            x = part.to(self.device).float().div_(255.0)
            with self.precision.autocast():
                out.append(net(x).argmax(dim=1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64, device=self.device)

    def _accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        if labels.numel() == 0:
            return {"acc": math.nan, "balanced_acc": math.nan, "per_class": np.full(self.num_classes, math.nan)}
        preds = self.predict(images).cpu()
        per_class = acc.per_class_accuracy(preds, labels, self.num_classes)
        return {"acc": float((preds == labels.cpu()).float().mean()),
                "balanced_acc": acc.balanced_accuracy(per_class), "per_class": per_class}

    def evaluate_test(self) -> dict[str, float]:
        """test/acc, test/balanced_acc and many / medium / few-shot accuracy on the transformed test copies."""
        return self._test_metrics()[0]

    def _test_metrics(self) -> tuple[dict[str, float], np.ndarray]:
        res = self._accuracy(self.data.test_tx, self.data.test_ty)
        shots = acc.shot_accuracies(res["per_class"], self.class_counts)
        metrics = {"test/acc": res["acc"], "test/balanced_acc": res["balanced_acc"],
                   **{f"test/{k}_acc": v for k, v in shots.items()}}
        return metrics, res["per_class"]

    def _ekld_augmenter(self, ekld_nuisance: str | Augmenter | None) -> Augmenter | None:
        """None: the data set's true nuisance where it has one, else the run's augmenter (the generator)."""
        if ekld_nuisance is not None:
            return ekld_nuisance if not isinstance(ekld_nuisance, str) else _named_nuisance(ekld_nuisance, self.data)
        if self.data.spec.nuisance != "none":
            return nuisance_augmenter(self.data.spec)
        return self.augmenter

    def final_metrics(self, ekld_nuisance: str | Augmenter | None = None) -> tuple[dict[str, float], pa.Table]:
        """Test accuracy groups, eKLD summaries, and the per-class table (class, train_count, accuracy,
        ekld, consistency). eKLD uses cfg.ekld_per_class untransformed test images per class with
        cfg.ekld_samples fresh transforms each, seeded from the run seed."""
        metrics, per_class_acc = self._test_metrics()
        nan = np.full(self.num_classes, math.nan)
        ekld, consistency = nan, nan
        augmenter = self._ekld_augmenter(ekld_nuisance)
        if augmenter is not None and self.data.test_y.numel():
            idx = per_class_subset(self.data.test_y, self.cfg.ekld_per_class)
            inv = invariance_per_class(self.model, self.data.test_x[idx], self.data.test_y[idx], augmenter,
                                       self.cfg.ekld_samples, seed=self.seed + 7919, num_classes=self.num_classes,
                                       device=self.device)
            ekld, consistency = inv.ekld, inv.consistency
        head, tail = acc.head_tail(ekld, self.class_counts)
        metrics.update({
            "ekld/mean": float(np.nanmean(ekld)) if np.isfinite(ekld).any() else math.nan,
            "ekld/head": head,
            "ekld/tail": tail,
            "ekld/size_spearman": acc.size_spearman(ekld, self.class_counts),
            "consistency/mean": float(np.nanmean(consistency)) if np.isfinite(consistency).any() else math.nan,
        })
        return metrics, per_class_table(self.class_counts, per_class_acc, ekld, consistency)

    # ---- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (taken between epochs), plus the config for the record."""
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "seed": self.seed,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # an augmenter may draw from the global RNG
            "config": to_dict(self.cfg),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])


def _named_nuisance(name: str, data: BuiltDataset) -> Augmenter:
    from gitlib.data.nuisances import get_nuisance

    if name == data.spec.nuisance:
        return nuisance_augmenter(data.spec)  # keeps the spec's options (rotation range)
    return get_nuisance(name)


@dataclass
class ClassifierResult:
    history: list[dict[str, float]]  # run_epoch() metrics of the epochs run in this call
    metrics: dict[str, float]  # final_metrics()
    per_class: pa.Table
    trainer: ClassifierTrainer = field(repr=False)


def train_classifier(cfg: ClassifierConfig, data: BuiltDataset, seed: int, device: torch.device,
                     augmenter: Augmenter | None = None,
                     on_epoch: Callable[[ClassifierTrainer, dict[str, float]], None] | None = None,
                     state: dict[str, Any] | None = None,
                     ekld_nuisance: str | Augmenter | None = None) -> ClassifierResult:
    """Train to cfg.epochs (from `state` when resuming), calling `on_epoch(trainer, metrics)` after each
    epoch (report, checkpoint, progress bar), then compute the final metrics."""
    trainer = ClassifierTrainer(cfg, data, seed, device, augmenter)
    if state is not None:
        trainer.load_state_dict(state)
    history = []
    while trainer.epoch < cfg.epochs:
        metrics = trainer.run_epoch()
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(trainer, metrics)
    final, table = trainer.final_metrics(ekld_nuisance)
    return ClassifierResult(history=history, metrics=final, per_class=table, trainer=trainer)
