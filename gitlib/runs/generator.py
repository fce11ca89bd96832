"""The generator run: MUNIT training in checkpoint-sized chunks, then its quality (label preservation,
nuisance diversity) and a sample grid.

`on_chunk(trainer, record)` runs after every `cfg.checkpoint_every` iterations with the chunk's mean
losses; the caller checkpoints there (`trainer.state_dict()`), reports or moves a progress bar. A run
resumed from `state` continues at its iteration with the same random stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import nuisance_for_spec
from gitlib.device import seeded_rng
from gitlib.metrics.generator_quality import generator_quality, train_reference_classifier
from gitlib.models.munit import Munit, save_generator
from gitlib.plots import grid_sources, save_sample_grid
from gitlib.train.config import GeneratorConfig
from gitlib.train.generator import MunitTrainer

ChunkHook = Callable[[MunitTrainer, dict[str, float]], None]
MODEL_FILE = "generator.pt"
GRID_FILE = "samples.png"


@dataclass
class GeneratorResult:
    metrics: dict[str, float]  # loss/* of the last chunk, preservation/*, diversity/*, time/*
    records: list[dict[str, float]]  # one loss record per chunk run in this call
    model: Munit = field(repr=False)


def train_generator(cfg: GeneratorConfig, data: BuiltDataset, seed: int, device: torch.device, folder: Path,
                    state: dict[str, Any] | None = None, on_chunk: ChunkHook | None = None) -> GeneratorResult:
    """Train to cfg.iterations, then write `generator.pt` and `samples.png` into `folder` and measure quality."""
    trainer = MunitTrainer(cfg, data, seed, device)
    if state is not None:
        trainer.load_state_dict(state)
    start, start_cpu = time.perf_counter(), time.process_time()
    records = []
    while trainer.iteration < cfg.iterations:
        n = min(cfg.checkpoint_every - trainer.iteration % cfg.checkpoint_every, cfg.iterations - trainer.iteration)
        records.append(trainer.train(n, log_every=n)[-1])
        if on_chunk is not None:
            on_chunk(trainer, records[-1])
    metrics: dict[str, float] = {"time/train_s": time.perf_counter() - start,
                                 "time/train_cpu_s": time.process_time() - start_cpu,  # load-independent
                                 "iteration": float(trainer.iteration)}
    if records:
        metrics.update({f"loss/{k}": v for k, v in records[-1].items() if k != "iteration"})
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    save_generator(folder / MODEL_FILE, trainer.model, cfg.arch, data.channels)
    metrics.update(generator_metrics(trainer.model.eval(), cfg, data, seed, device))
    idx, labels = grid_sources(data.train_y, data.class_counts, seed=seed)
    save_sample_grid(folder / GRID_FILE, trainer.model, data.train_x[idx], labels, seeded_rng(seed, device),
                     title=f"MUNIT on {data.spec.source} ({data.spec.nuisance}), {trainer.iteration} iterations")
    metrics["time/eval_s"] = time.perf_counter() - start
    return GeneratorResult(metrics=metrics, records=records, model=trainer.model)


def generator_metrics(model: Munit, cfg: GeneratorConfig, data: BuiltDataset, seed: int,
                      device: torch.device) -> dict[str, float]:
    """Label preservation (judged by classifiers trained for cfg.judge_iterations: one on the real training
    set, and with a nuisance one trained with it too, invariant to it) and nuisance diversity."""
    nuisance = nuisance_for_spec(data.spec) if data.spec.nuisance != "none" else None
    judge = train_reference_classifier(data, seed, device, iterations=cfg.judge_iterations)
    invariant = None if nuisance is None else train_reference_classifier(
        data, seed, device, iterations=cfg.judge_iterations, augment=nuisance)
    return generator_quality(model, data, judge, nuisance, seed, eval_samples=cfg.eval_samples, device=device,
                             invariant_judge=invariant)
