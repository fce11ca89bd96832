"""Shared generators: each distinct (data set, generator config, seed policy) is trained once.

Layout of `<storage>/generators/<digest>/`:

    train.lock        held (fcntl lock) by the one process training this generator
    checkpoint.pt     GeneratorTrainer state every `generator.checkpoint_every` iterations, so a killed
                      trainer's successor resumes it instead of starting over
    losses.jsonl      windowed mean losses, one record per checkpoint interval
    generator.pt      the finished model (gitlib.models.munit.save_generator)
    metrics.json      label preservation and nuisance diversity, final losses
    samples.png       sample grid (sources, then random styles)
    events.jsonl      one line per training start / finish: how often this generator was trained
    READY             written last (atomic rename): the generator is complete

A trial that needs a generator someone else is training blocks on the lock, then finds READY. The
lock is an fcntl lock on the storage path, which the kernel drops when its holder dies, so this works
across nodes wherever the storage is a shared POSIX file system (NFS, Lustre, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gitlib.configs import to_dict
from gitlib.data.dataset import BuiltDataset
from gitlib.train.config import GeneratorConfig

SEED_POLICY = "shared-seed-0"  # one generator per data set + config, whatever the trial's seed
GENERATOR_SEED = 0
STORE_VERSION = 1
READY = "READY"
Log = Callable[[str], None]


@dataclass(frozen=True)
class StoredGenerator:
    digest: str
    folder: Path

    @property
    def model_path(self) -> Path:
        return self.folder / "generator.pt"

    @property
    def ready(self) -> bool:
        return (self.folder / READY).is_file()

    def metrics(self) -> dict[str, float]:
        path = self.folder / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def losses(self) -> list[dict[str, float]]:
        path = self.folder / "losses.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        path = self.folder / "events.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def times_trained(self) -> int:
        """Completed trainings of this generator (1 for a healthy store, whatever resumed mid-way)."""
        return sum(1 for e in self.events() if e.get("event") == "finished")


def generator_digest(dataset_digest: str, cfg: GeneratorConfig) -> str:
    """Content address: the built data set, the generator config and the seed policy."""
    blob = json.dumps({"dataset": dataset_digest, "generator": to_dict(cfg), "seed": SEED_POLICY,
                       "version": STORE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def locate(storage: Path, dataset_digest: str, cfg: GeneratorConfig) -> StoredGenerator:
    digest = generator_digest(dataset_digest, cfg)
    return StoredGenerator(digest, storage / "generators" / digest)


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:  # one short write per line: appends stay whole on POSIX
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def get_generator(cfg: GeneratorConfig, data: BuiltDataset, storage: Path, device: torch.device,
                  log: Log = print, poll_s: float = 5.0) -> StoredGenerator:
    """The finished generator for (data, cfg): reused if stored, else trained here, or waited for."""
    from filelock import FileLock, Timeout

    entry = locate(storage, data.digest or "undigested", cfg)
    if entry.ready:
        return entry
    entry.folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(entry.folder / "train.lock"))
    waited = False
    while True:
        try:
            lock.acquire(timeout=poll_s)
        except Timeout:
            if not waited:
                log(f"waiting for generator {entry.digest} (being trained by another trial)")
                waited = True
            if entry.ready:
                return entry
            continue
        try:
            if not entry.ready:  # checked again under the lock: the holder before us may have finished it
                _train(entry, cfg, data, device, log)
            return entry
        finally:
            lock.release()


def _train(entry: StoredGenerator, cfg: GeneratorConfig, data: BuiltDataset, device: torch.device,
           log: Log) -> None:
    from gitlib.models.munit import save_generator
    from gitlib.train.generator import GeneratorTrainer

    folder = entry.folder
    trainer = GeneratorTrainer(cfg, data, GENERATOR_SEED, device)
    ckpt = folder / "checkpoint.pt"
    if ckpt.is_file():
        trainer.load_state_dict(_load(ckpt))
    start = trainer.iteration
    _append(folder / "events.jsonl", {"event": "started", "from_iteration": start, "time": time.time(),
                                      "host": socket.gethostname(), "pid": os.getpid()})
    log(f"training generator {entry.digest}: iterations {start}..{cfg.iterations}"
        + (" (resumed from its checkpoint)" if start else ""))
    t0 = time.perf_counter()
    while trainer.iteration < cfg.iterations:
        n = min(cfg.checkpoint_every - trainer.iteration % cfg.checkpoint_every, cfg.iterations - trainer.iteration)
        records = trainer.train(n, log_every=n)
        _atomic_save(trainer.state_dict(), ckpt)
        _append(folder / "losses.jsonl", records[-1])  # after the checkpoint: no lost or doubled record
    save_generator(entry.model_path, trainer.model, cfg, data.channels)
    metrics = {f"loss/{k}": v for k, v in (entry.losses() or [{}])[-1].items() if k != "iteration"}
    metrics["train_s"] = time.perf_counter() - t0
    metrics.update(_quality(trainer, cfg, data, device))
    _atomic_text(json.dumps(metrics, indent=1), folder / "metrics.json")
    _sample_grid(trainer, data, folder / "samples.png")
    _append(folder / "events.jsonl", {"event": "finished", "iteration": trainer.iteration, "time": time.time(),
                                      "host": socket.gethostname(), "pid": os.getpid()})
    _atomic_text(json.dumps({"digest": entry.digest, "dataset": data.digest, "config": to_dict(cfg)}),
                 folder / READY)
    log(f"generator {entry.digest} ready ({metrics['train_s']:.0f} s)")


def _load(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint never unpickles code, even from a shared storage path
    return torch.load(path, map_location="cpu", weights_only=True)


def _quality(trainer: Any, cfg: GeneratorConfig, data: BuiltDataset, device: torch.device) -> dict[str, float]:
    """Label preservation and nuisance diversity of the finished generator (PAPER.md)."""
    from gitlib.metrics.generator_quality import generator_quality, train_reference_classifier

    nuisance = None
    if data.spec.nuisance != "none":
        from gitlib.data.nuisances import get_nuisance

        nuisance = get_nuisance(data.spec.nuisance)
    model = trainer.model.eval()
    # The judge's training length can be cut for tests (it dominates tiny generators' cost).
    iterations = int(os.environ.get("GITSWEEP_JUDGE_ITERATIONS", "600"))
    judge = train_reference_classifier(data, GENERATOR_SEED, device, iterations=iterations)
    return generator_quality(model, data, judge, nuisance, GENERATOR_SEED, eval_samples=cfg.eval_samples,
                             device=device)


def _sample_grid(trainer: Any, data: BuiltDataset, path: Path) -> None:
    """Sources from the largest and smallest classes, each followed by random-style versions."""
    from gitlib.tracking.grid import grid_sources, save_sample_grid
    from gitlib.train.runtime import make_generator

    idx, labels = grid_sources(data.train_y, data.class_counts, seed=GENERATOR_SEED)
    save_sample_grid(path, trainer.model.eval(), data.train_x[idx], labels,
                     make_generator(GENERATOR_SEED, trainer.device), title="generator samples")
