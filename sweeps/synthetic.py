"""The synthetic trial kind's objective: a known function of its searched keys, plus seeded noise.

It stands in for training wherever what is tested or measured is the sweep machinery (search, groups,
racing, resume, MLflow, reports), not a model: no torch, no data, a trial in milliseconds (or
`synthetic.epoch_s` of sleep per epoch to stand in for training time). Torch-free and Ray-free.

The true balanced accuracy of a configuration (docs/sweeps.md, "The synthetic trial kind"):

    truth = top - weight_x * (x - optimum_x)^2 - weight_y * (y - optimum_y)^2 - arm_gap * arm

`arm` (an integer, 0 best) spaces configurations exactly `arm_gap` apart, which is what a racing
benchmark needs; `x`, `y` give a smooth surface for the samplers. What a trial reports is the truth
plus two noise terms:

- seed noise, N(0, noise_sd^2), drawn from the trial's seed and its configuration: independent between
  configurations and between seeds, the same for the same (seed, configuration) every time;
- an instance effect, N(0, instance_sd^2), drawn from `dataset.instance` alone: shared by every
  configuration run on that instance, so repeats over `dataset.instance` pair up as real instances do.

The per-class table has `classes` classes with exponentially falling sizes (ratio
`dataset.imbalance_ratio`); class accuracies fall and eKLD rises towards the small classes around the
configuration's value, so balanced accuracy and tail eKLD are known too (`truth`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gitlib.configs import join, require

TAIL_SHARE = 1 / 3  # the smallest third of the classes is the tail (as gitlib.metrics' head / tail split)


@dataclass(frozen=True)
class SyntheticConfig:
    """`synthetic.*`: the objective's inputs (searched), its shape, noise, and how a trial behaves."""

    x: float = 0.5
    y: float = 0.5
    arm: int = 0  # configurations `arm_gap` apart (0 is the best arm)
    optimum_x: float = 0.3
    optimum_y: float = 0.7
    weight_x: float = 0.4
    weight_y: float = 0.2
    arm_gap: float = 0.01
    top: float = 0.9  # the true balanced accuracy at the optimum
    noise_sd: float = 0.02  # seed noise of the final balanced accuracy
    instance_sd: float = 0.02  # effect of dataset.instance, shared across configurations
    epochs: int = 5  # reports per trial (the last carries the final metrics)
    epoch_s: float = 0.0  # seconds of sleep per epoch, standing in for training time
    fail_p: float = 0.0  # probability that a trial fails (as a diverged training would), seeded
    classes: int = 10  # rows of the per-class table

    def validate(self, prefix: str = "synthetic") -> None:
        k = lambda name: join(prefix, name)  # noqa: E731
        require(self.arm >= 0, k("arm"), f"must be >= 0, got {self.arm}")
        require(self.noise_sd >= 0, k("noise_sd"), "must be >= 0")
        require(self.instance_sd >= 0, k("instance_sd"), "must be >= 0")
        require(self.epochs >= 1, k("epochs"), f"must be >= 1, got {self.epochs}")
        require(self.epoch_s >= 0, k("epoch_s"), "must be >= 0")
        require(0 <= self.fail_p <= 1, k("fail_p"), f"must be in [0, 1], got {self.fail_p}")
        require(self.classes >= 3, k("classes"), f"must be >= 3, got {self.classes}")


def true_value(cfg: SyntheticConfig) -> float:
    """The noise-free balanced accuracy of a configuration: what the search is after."""
    return (cfg.top - cfg.weight_x * (cfg.x - cfg.optimum_x) ** 2 - cfg.weight_y * (cfg.y - cfg.optimum_y) ** 2
            - cfg.arm_gap * cfg.arm)


def _stream(*parts: Any) -> np.random.Generator:
    """A random stream named by `parts`: the same in every process and run (not Python's salted hash)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _key(cfg: SyntheticConfig) -> tuple[float, ...]:
    """What makes a configuration (the objective's inputs and shape), not how its trial runs."""
    return (cfg.x, cfg.y, cfg.arm, cfg.optimum_x, cfg.optimum_y, cfg.weight_x, cfg.weight_y, cfg.arm_gap, cfg.top)


def class_sizes(classes: int, imbalance_ratio: float, largest: int = 200) -> np.ndarray:
    """Exponentially falling class sizes from `largest` to largest / ratio (class 0 largest)."""
    k = np.arange(classes)
    return np.maximum(np.floor(largest * imbalance_ratio ** (-k / (classes - 1))), 1).astype(int)


@dataclass(frozen=True)
class Draw:
    """One trial's noise: seed noise, the instance effect, and whether (and at which epoch) it fails."""

    seed_noise: float
    instance_effect: float
    fails_at: int | None  # 1-based epoch at which the trial fails, None if it does not


def draw(cfg: SyntheticConfig, seed: int, instance: int) -> Draw:
    rng = _stream("seed", seed, _key(cfg))
    seed_noise = float(rng.normal(0.0, cfg.noise_sd)) if cfg.noise_sd > 0 else 0.0
    fails = bool(rng.random() < cfg.fail_p)
    fails_at = int(rng.integers(1, cfg.epochs + 1)) if fails else None
    inst = _stream("instance", instance)
    instance_effect = float(inst.normal(0.0, cfg.instance_sd)) if cfg.instance_sd > 0 else 0.0
    return Draw(seed_noise, instance_effect, fails_at)


def per_class(cfg: SyntheticConfig, value: float, imbalance_ratio: float, seed: int) -> dict[str, list[float]]:
    """Per-class columns around a balanced accuracy `value`: accuracy falls and eKLD rises towards the
    small classes; the class accuracies average exactly to `value`."""
    sizes = class_sizes(cfg.classes, imbalance_ratio)
    rarity = np.log(sizes.max() / sizes) / max(math.log(imbalance_ratio), 1e-9) if imbalance_ratio > 1 else \
        np.zeros(cfg.classes)  # 0 for the largest class, 1 for the smallest
    jitter = _stream("classes", seed, _key(cfg)).normal(0.0, 0.01, cfg.classes)
    acc = np.clip(value + 0.1 * (0.5 - rarity) + jitter - jitter.mean(), 0.0, 1.0)
    acc = acc + (value - acc.mean())  # the balanced accuracy is the value itself
    ekld = (1.2 - value) * (0.2 + rarity) * 0.5
    consistency = np.clip(1.0 - ekld, 0.0, 1.0)
    return {"class": list(range(cfg.classes)), "train_count": sizes.tolist(), "accuracy": acc.tolist(),
            "ekld": ekld.tolist(), "consistency": consistency.tolist()}


def final_metrics(table: dict[str, list[float]]) -> dict[str, float]:
    """The classifier's final metric names, computed from a per-class table the same way."""
    acc, ekld = np.asarray(table["accuracy"]), np.asarray(table["ekld"])
    order = np.argsort(-np.asarray(table["train_count"]), kind="stable")  # largest first
    n_tail = max(round(len(order) * TAIL_SHARE), 1)
    head, tail = order[:n_tail], order[-n_tail:]
    return {"test/balanced_acc": float(acc.mean()), "test/acc": float(acc.mean()),
            "test/many_acc": float(acc[head].mean()), "test/few_acc": float(acc[tail].mean()),
            "ekld/mean": float(ekld.mean()), "ekld/head": float(ekld[head].mean()),
            "ekld/tail": float(ekld[tail].mean())}


def truth(cfg: SyntheticConfig, imbalance_ratio: float = 10.0) -> dict[str, float]:
    """The noise-free final metrics of a configuration (balanced accuracy, tail eKLD, ...)."""
    return final_metrics(per_class(cfg, true_value(cfg), imbalance_ratio, seed=0))


def observed(cfg: SyntheticConfig, seed: int, instance: int) -> float:
    """The final balanced accuracy a trial with this seed and instance reports (before its table)."""
    d = draw(cfg, seed, instance)
    return true_value(cfg) + d.seed_noise + d.instance_effect


def epoch_value(final: float, epoch: int, epochs: int) -> float:
    """Validation balanced accuracy after `epoch` of `epochs`: rises towards the final value, keeping the
    configurations' order at every epoch (what ASHA compares)."""
    return final * (1.0 - 0.6 * math.exp(-4.0 * epoch / epochs)) if epoch < epochs else final
