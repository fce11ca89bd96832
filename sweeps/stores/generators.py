"""Shared generators: each distinct (data set, generator config, seed policy) is trained once.

Layout of `<storage>/generators/<digest>/`:

    train.lock        held (fcntl lock) by the one process training this generator
    checkpoint.pt     GeneratorTrainer state every `generator.checkpoint_every` iterations, so a killed
                      trainer's successor resumes it instead of starting over
    losses.jsonl      mean losses, one record per checkpoint interval
    generator.pt      the finished model (gitlib.models.munit.save_generator)
    metrics.json      label preservation and nuisance diversity, final losses, time/*
    samples.png       sample grid (sources, then random styles)
    events.jsonl      one line per training start / finish: how often this generator was trained; a
                      start says from which iteration, to how many, by which host and pid (what a sweep's
                      status line reads of a generator being trained: `in_training`)
    READY             written last (atomic rename): the generator is complete
    *.tmp<pid>        a file being written (then renamed into place); a killed trainer's are removed by
                      the next get_generator of this digest, under the lock

A trial that needs a generator someone else is training blocks on the lock, then finds READY. The
lock is an fcntl lock on the storage path, which the kernel drops when its holder dies, so this works
across nodes wherever the storage is a shared POSIX file system (NFS, Lustre, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitlib.configs import to_dict
from gitlib.train.config import GeneratorConfig

if TYPE_CHECKING:  # torch loads where a generator is trained, not where its progress is read (the driver)
    import torch

    from gitlib.data.dataset import BuiltDataset

SEED_POLICY = "shared-seed-0"  # one generator per data set + config, whatever the trial's seed
GENERATOR_SEED = 0
STORE_VERSION = 2  # 2: one generator routine (gitlib.runs.generator), eval-only fields left out of the digest
READY = "READY"
Log = Callable[[str], None]


@dataclass(frozen=True)
class StoredGenerator:
    digest: str
    folder: Path

    @property
    def model_path(self) -> Path:
        from gitlib.runs.generator import MODEL_FILE

        return self.folder / MODEL_FILE

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
    """Content address: the built data set, the generator config (what decides its weights) and the seed policy."""
    defaults = to_dict(GeneratorConfig())
    weights = {k: v for k, v in to_dict(cfg).items() if k not in GeneratorConfig.EVAL_ONLY
               and not (k in GeneratorConfig.ADDED_LATER and v == defaults[k])}
    blob = json.dumps({"dataset": dataset_digest, "generator": weights, "seed": SEED_POLICY,
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


_TEMP = re.compile(r"\.tmp(\d+)$")  # what _atomic_save / _atomic_text write before the rename


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the `*.tmp<pid>` files killed trainings left in a generator's folder.

    Call only while holding its train.lock: every temporary file is written by the lock's holder, so
    under the lock each one is a dead trainer's, on any host. A pid alive on this host is still skipped,
    in case the lock file was replaced under a running trainer; at worst a leftover then waits."""
    from gitlib.data.builds import pid_alive

    removed = []
    for path in folder.iterdir():
        match = _TEMP.search(path.name)
        if match is None or not path.is_file():
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and pid_alive(pid):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

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
        _tidy_ready(entry)
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
            remove_stale_temps(entry.folder)  # killed trainings' files: we hold the lock, so they are gone
            if not entry.ready:  # checked again under the lock: the holder before us may have finished it
                _train(entry, cfg, data, device, log)
            return entry
        finally:
            lock.release()


def _tidy_ready(entry: StoredGenerator) -> None:
    """Leftovers next to a finished generator: removed when the lock is free now, else left for later."""
    if not any(_TEMP.search(p.name) for p in entry.folder.iterdir()):
        return
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(entry.folder / "train.lock"), timeout=0):
            remove_stale_temps(entry.folder)
    except Timeout:
        pass


def _train(entry: StoredGenerator, cfg: GeneratorConfig, data: BuiltDataset, device: torch.device,
           log: Log) -> None:
    import torch

    from gitlib.runs.generator import train_generator

    folder = entry.folder
    ckpt = folder / "checkpoint.pt"
    # weights_only: a checkpoint never unpickles code, even from a shared storage path
    state = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.is_file() else None
    start = int(state["iteration"]) if state else 0
    _event(folder, {"event": "started", "from_iteration": start, "iterations": cfg.iterations})
    log(f"training generator {entry.digest}: iterations {start}..{cfg.iterations}"
        + (" (resumed from its checkpoint)" if start else ""))

    def checkpoint(trainer: Any, record: dict[str, float]) -> None:
        _atomic_save(trainer.state_dict(), ckpt)
        _append(folder / "losses.jsonl", record)  # after the checkpoint: no lost or doubled record

    result = train_generator(cfg, data, GENERATOR_SEED, device, folder, state=state, on_chunk=checkpoint)
    _atomic_text(json.dumps(result.metrics, indent=1), folder / "metrics.json")
    _event(folder, {"event": "finished", "iteration": cfg.iterations})
    _atomic_text(json.dumps({"digest": entry.digest, "dataset": data.digest, "config": to_dict(cfg)}),
                 folder / READY)
    log(f"generator {entry.digest} ready ({result.metrics['time/train_s']:.0f} s)")


def _event(folder: Path, record: dict[str, Any]) -> None:
    _append(folder / "events.jsonl", {**record, "time": time.time(), "host": socket.gethostname(),
                                      "pid": os.getpid()})


# ---- a generator being trained, as its folder shows it (torch-free: the driver's status line) ----------

STALE_S = 900.0  # a trainer on another host that wrote nothing for this long is taken for dead


@dataclass(frozen=True)
class Training:
    """A generator in training: where its last checkpoint stands, and since when."""

    digest: str
    iteration: int  # iterations done at its last checkpoint
    total: int | None  # iterations it trains to (None: a start recorded before the store said)
    start_iteration: int  # where this training started (a resumed one starts at its checkpoint)
    started: float  # time.time() at the start
    checkpointed: float  # time.time() of its last checkpoint (the start, before the first one)

    def left_s(self) -> float | None:
        """Seconds to its last iteration at the pace of its checkpoints so far; None before its first one."""
        done, spent = self.iteration - self.start_iteration, self.checkpointed - self.started
        if self.total is None or done <= 0 or spent <= 0:
            return None
        return (self.total - self.iteration) * spent / done


def _trainer_alive(start: dict[str, Any], last_change: float) -> bool:
    """The trainer that wrote `start` still runs: its pid on this host, else recent writes to the folder."""
    if start.get("host") != socket.gethostname():
        return time.time() - last_change < STALE_S
    try:
        os.kill(int(start.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        pass  # a process we may not signal runs
    return True


def training_now(entry: StoredGenerator) -> Training | None:
    """The generator's training in progress, or None (finished, never started, or its trainer died)."""
    if entry.ready:
        return None
    events = entry.events()
    if not events or events[-1].get("event") != "started":
        return None
    start, losses = events[-1], entry.losses()
    path = entry.folder / "losses.jsonl"
    checkpointed = max(path.stat().st_mtime if losses else 0.0, float(start.get("time", 0.0)))
    if not _trainer_alive(start, checkpointed):
        return None
    first = int(start.get("from_iteration", 0))
    iteration = max([first, *(int(r.get("iteration", 0)) for r in losses)])
    total = start.get("iterations")
    return Training(entry.digest, iteration, int(total) if total is not None else None, first,
                    float(start.get("time", 0.0)), checkpointed)


def in_training(storage: Path) -> list[Training]:
    """Every generator of the storage's store being trained now."""
    root = storage / "generators"
    if not root.is_dir():
        return []
    found = (training_now(StoredGenerator(p.name, p)) for p in sorted(root.iterdir()) if p.is_dir())
    return [t for t in found if t is not None]
