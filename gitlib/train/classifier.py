"""The classifier's training epochs (docs/science.md, "Classifier recipe"); evaluation is gitlib.metrics',
the whole run (data -> augmenter -> epochs -> final metrics) gitlib.runs.classifier.

The whole training set sits on the device as uint8; an epoch is a list of index tensors from the rule's
sampler; oracle / GIT augmentation and crop + flip run batched on the device. With augmentation on, each
batch holds (1 - gen_frac) real images and gen_frac augmented ones, the latter a second draw from the
same sampler passed through the augmenter; the number of steps per epoch stays ceil(N / batch_size), so
augmentation changes what a step sees, not how many steps there are. The oracle is on from epoch 0,
GIT from the epoch after the first lr drop (cfg.resolved_augment_start; git_start_epoch overrides both).
The oracle draws a fresh nuisance on the untransformed base image of each sampled example
(data.train_base_x; train_x already carries its stored nuisance), GIT re-styles the stored image itself.
With a class-size threshold, a generated slot that is not kept holds its stored image unaugmented (the batch
size and class mix stay those of the sampler). Every random draw comes from one seeded random stream
whose state is checkpointed, so a run restored from an epoch checkpoint ends with exactly the weights of
an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from gitlib.augmenter import Augmenter
from gitlib.configs import to_dict
from gitlib.data.dataset import BuiltDataset
from gitlib.data.sampling import BalancedSampler, epoch_order
from gitlib.device import Precision, seeded_rng
from gitlib.models.resnet import CifarResNet, build_classifier
from gitlib.train.augment import classifier_augmenter, crop_flip, threshold_keep_prob
from gitlib.train.config import LOSSES, ClassifierConfig
from gitlib.train.rules import effective_number_weights, rule_phase
from gitlib.train.schedule import learning_rate


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
    """Training state of one classifier: `run_epoch()` until `epoch == cfg.epochs`; exact resume via state_dict."""

    def __init__(self, cfg: ClassifierConfig, data: BuiltDataset, seed: int, device: torch.device,
                 generator: Augmenter | None = None) -> None:
        """`generator`: what GIT augments with (the MUNIT generator); the oracle is the data set's nuisance."""
        self.cfg, self.seed, self.device = cfg, int(seed), device
        self.augmenter = classifier_augmenter(cfg, data, generator)
        self.class_counts = data.class_counts  # (K,) int64 numpy
        self.train_x = data.train_x.to(device)  # (N, C, H, W) uint8
        self.train_y = data.train_y.to(device=device, dtype=torch.int64)
        # What the augmenter is fed: the oracle re-draws the nuisance from the base images (train_x
        # already carries one: re-applying it would stack dilations, and be a no-op for background).
        self.augment_x = self.train_x
        if cfg.augment == "oracle" and data.train_base_x is not None:
            self.augment_x = data.train_base_x.to(device)  # (N, C, H, W) uint8, same order as train_x
        self.balanced = BalancedSampler(self.train_y, data.num_classes)
        mean, std = channel_stats(data.train_x)
        with torch.random.fork_rng(devices=[]):  # the init draws from the trial seed, not global state
            torch.manual_seed(self.seed)
            model = build_classifier(cfg.arch, data.channels, data.num_classes, normed_head=cfg.loss == "ldam",
                                     mean=mean, std=std)
        self.model: CifarResNet = model.to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.precision = Precision(device, cfg.amp)
        self.scaler = self.precision.scaler()
        self.loss_fn = LOSSES.build(cfg.loss, self.class_counts, cfg)
        self.class_weight = torch.tensor(effective_number_weights(self.class_counts, cfg.reweight_beta),
                                         dtype=torch.float32, device=device)
        self.keep_prob = torch.tensor(threshold_keep_prob(self.class_counts, cfg.git_threshold),
                                      dtype=torch.float32, device=device)
        self.rng = seeded_rng(self.seed, device)
        self.epoch = 0  # completed epochs
        # Augmented images trained on, per class: how much of GIT (or the oracle) each class actually saw.
        self.generated_seen = torch.zeros(data.num_classes, dtype=torch.int64, device=device)

    def augment_active(self, epoch: int) -> bool:
        return self.augmenter is not None and epoch >= self.cfg.resolved_augment_start

    def _augment(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generated part of a batch from training rows idx (G,) with labels y (G,): (G, C, H, W) float in
        [0, 1]. The augmenter gets augment_x (base images for the oracle); unkept slots get train_x."""
        assert self.augmenter is not None
        with torch.no_grad():
            if self.cfg.git_threshold is None:
                self.generated_seen += torch.bincount(y, minlength=self.generated_seen.numel())
                return self.augmenter.sample(self.augment_x[idx].float().div_(255.0), self.rng).float()
            keep = torch.rand(y.shape[0], generator=self.rng, device=self.device) < self.keep_prob[y]
            out = self.train_x[idx].float().div_(255.0)
            kept = keep.nonzero(as_tuple=True)[0]
            self.generated_seen += torch.bincount(y[kept], minlength=self.generated_seen.numel())
            if kept.numel() == 0:
                return out
            src = self.augment_x[idx[kept]].float().div_(255.0)
            out[kept] = self.augmenter.sample(src, self.rng).float()
            return out

    def _batch(self, real: torch.Tensor, gen: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float in [0, 1] and labels (B,) of one step: real rows, then augmented rows."""
        x = self.train_x[real].float().div_(255.0)  # (B_real, C, H, W)
        y = self.train_y[real]
        if gen is not None and gen.numel():
            gy = self.train_y[gen]
            x, y = torch.cat([x, self._augment(gen, gy)]), torch.cat([y, gy])
        if self.cfg.crop_flip:
            x = crop_flip(x, self.rng)
        return x, y

    def _step(self, x: torch.Tensor, y: torch.Tensor, lr: float,
              weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step; returns the batch loss and logits (B, K), detached."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.precision.autocast():
            logits = self.model(x)  # (B, K)
        loss = self.loss_fn(logits, y, weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch; returns epoch (1-based), train/loss, train/acc, lr and time/train_s."""
        cfg, e = self.cfg, self.epoch
        if e >= cfg.epochs:
            raise RuntimeError(f"all {cfg.epochs} epochs are done")
        start_time = time.perf_counter()
        phase = rule_phase(cfg.train_rule, e, cfg.first_drop_epoch)
        weight = self.class_weight if phase.reweight else None
        sampler = self.balanced if phase.balanced_sampling else None
        n, bsz = self.train_y.shape[0], cfg.batch_size
        steps = math.ceil(n / bsz)
        if n - (steps - 1) * bsz < 2 and steps > 1:
            steps -= 1  # a last batch of one image breaks batch norm
        augment = self.augment_active(e)
        real_order = epoch_order(self.train_y, n, self.rng, sampler)
        gen_order = epoch_order(self.train_y, n, self.rng, sampler) if augment else None
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen, lr = 0, cfg.lr
        for step in range(steps):
            s = step * bsz
            b = min(bsz, n - s) if step < steps - 1 else n - s
            n_gen = round(cfg.gen_frac * b) if augment else 0
            gen = gen_order[s:s + n_gen] if gen_order is not None and n_gen else None
            x, y = self._batch(real_order[s:s + b - n_gen], gen)
            lr = learning_rate(cfg.lr, e, step, steps, cfg.warmup_epochs, cfg.milestones, cfg.lr_factors)
            loss, logits = self._step(x, y, lr, weight)
            loss_sum += loss.float() * y.shape[0]
            correct += (logits.argmax(dim=1) == y).sum()
            seen += y.shape[0]
        return self._finish_epoch(loss_sum, correct, seen, lr, start_time)

    def _finish_epoch(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, lr: float,
                      start_time: float) -> dict[str, float]:
        train_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"classifier training loss became {train_loss} in epoch {self.epoch + 1} "
                                   f"(lr {lr:.3g}, loss {self.cfg.loss}); lower classifier.lr or check the data")
        self.epoch += 1
        return {"epoch": float(self.epoch), "train/loss": train_loss, "train/acc": float(correct) / max(seen, 1),
                "lr": lr, "time/train_s": time.perf_counter() - start_time}

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (taken between epochs), plus the config for the record."""
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "seed": self.seed,
            "generator": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),  # an augmenter may draw from the global RNG
            "generated_seen": self.generated_seen.cpu(),
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
        self.rng.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if "generated_seen" in state:  # absent from checkpoints written before it was counted
            self.generated_seen.copy_(state["generated_seen"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
