"""The classifier run: data -> augmenter -> epochs (with validation) -> final metrics and per-class table.

`on_epoch(trainer, metrics)` runs after every epoch; the caller reports, checkpoints or draws a progress
bar there, and may raise to stop the run. A run resumed from `state` (a trainer state_dict taken after an
epoch) ends exactly where an uninterrupted one ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from gitlib.augmenter import Augmenter
from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import nuisance_for_spec
from gitlib.metrics import accuracy as acc
from gitlib.metrics.evaluate import final_metrics, validation_metrics
from gitlib.models.resnet import inference_copy
from gitlib.probes import run_probes
from gitlib.train.classifier import ClassifierTrainer
from gitlib.train.config import ClassifierConfig

EpochHook = Callable[[ClassifierTrainer, dict[str, float]], None]


@dataclass
class ClassifierResult:
    history: list[dict[str, float]]  # per-epoch metrics of the epochs run in this call
    metrics: dict[str, float]  # final metrics: test accuracy groups, eKLD summaries, probe/*
    per_class: pa.Table  # class, train_count, accuracy, ekld, consistency, and the probes' columns
    trainer: ClassifierTrainer = field(repr=False)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # probe series: name -> {step: value}
    stopped_early: bool = False  # `should_stop` ended training before cfg.epochs


def ekld_transform(data: BuiltDataset, generator: Augmenter | None) -> Augmenter | None:
    """T of eKLD: the true nuisance where the data set has one, else the learned generator (if any)."""
    return nuisance_for_spec(data.spec) if data.spec.nuisance != "none" else generator


def train_epoch(trainer: ClassifierTrainer, data: BuiltDataset) -> dict[str, float]:
    """One epoch and its validation: epoch, train/*, lr, val/acc, val/balanced_acc, time/*."""
    start = time.perf_counter()
    metrics = trainer.run_epoch()
    metrics.update(validation_metrics(trainer.model, data, trainer.device, trainer.precision))
    metrics["time/epoch_s"] = time.perf_counter() - start  # with validation
    return metrics


def probe(trainer: ClassifierTrainer, data: BuiltDataset, names: Sequence[str], seed: int,
          table: pa.Table) -> tuple[dict[str, float], pa.Table, dict[str, dict[int, float]]]:
    """Bias probes on the test images (the transformed copies accuracy is measured on): their metrics,
    the per-class table with the probes' columns added, and their series."""
    start = time.perf_counter()
    net = inference_copy(trainer.model).eval()  # folded once for every probe forward

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        with trainer.precision.autocast():
            return net(x).argmax(dim=1)

    res = run_probes(names, predict, data.test_tx, data.test_ty, data.num_classes, data.class_counts, seed,
                     trainer.device)
    for name, column in res.per_class.items():
        table = table.append_column(name, pa.array(np.asarray(column, dtype=np.float64)))
    return {**res.metrics, "time/probes_s": time.perf_counter() - start}, table, res.curves


def run_classifier(cfg: ClassifierConfig, data: BuiltDataset, seed: int, device: torch.device,
                   generator: Augmenter | None = None, state: dict[str, Any] | None = None,
                   on_epoch: EpochHook | None = None, probes: Sequence[str] = (),
                   should_stop: Callable[[ClassifierTrainer], bool] | None = None) -> ClassifierResult:
    """Train to cfg.epochs (from `state` when resuming), or until `should_stop(trainer)` says so after an
    epoch, then evaluate the model there and run the bias `probes`. `generator` is the shared MUNIT
    generator: GIT's augmenter, and eKLD's transform on data sets without a known nuisance."""
    trainer = ClassifierTrainer(cfg, data, seed, device, generator)
    if state is not None:
        trainer.load_state_dict(state)
    history, stopped = [], False
    while trainer.epoch < cfg.epochs and not stopped:
        metrics = train_epoch(trainer, data)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(trainer, metrics)
        stopped = should_stop is not None and trainer.epoch < cfg.epochs and should_stop(trainer)
    final, table = final_metrics(trainer.model, data, ekld_transform(data, generator), cfg.ekld_samples,
                                 cfg.ekld_per_class, trainer.seed, device, trainer.precision)
    seen = trainer.generated_seen.cpu().numpy()
    table = table.append_column("generated_seen", pa.array(seen.astype(np.int64)))
    head, tail = acc.head_tail(seen, data.class_counts)
    final.update({"git/generated_seen_head": head, "git/generated_seen_tail": tail})
    curves: dict[str, dict[int, float]] = {}
    if probes:
        found, table, curves = probe(trainer, data, probes, trainer.seed, table)
        final.update(found)
    return ClassifierResult(history=history, metrics=final, per_class=table, trainer=trainer, curves=curves,
                            stopped_early=stopped)
