"""Ray Tune function trainables: one classifier trial, one generator trial.

A trial gets the sampled values as its Tune config (dotted keys, e.g. `classifier.gen_frac`) and the
resolved sweep config `base` through `tune.with_parameters`. It reports every epoch (classifier) or
every `generator.checkpoint_every` iterations (generator), with a checkpoint, from a training thread
that runs ahead of Tune's blocking `tune.report` (sweeps.pipeline), and resumes from
`tune.get_checkpoint()` after a retry or `gitsweep resume`. Final artifacts (per_class.parquet,
the eKLD figure, final.json) go into the last checkpoint, where the driver's MLflow callback reads them.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gitlib.configs import flatten, from_dict, to_dict
from gitlib.errors import UserError
from gitlib.train.classifier import TrainingDiverged
from gitlib.train.runtime import describe_device, pick_device, set_threads
from sweeps.config import SweepConfig, with_value
from sweeps.pipeline import Report, ReportAhead

STATE = "state.pt"
META = "meta.json"
FINAL = "final.json"
FINAL_KEY = "trial/final"  # metric set on the result whose checkpoint holds FINAL
PER_CLASS = "per_class.parquet"
EKLD_PNG = "ekld_vs_class_size.png"
FATAL = "fatal.json"  # a non-retryable failure (diverged loss): a retry fails at once with the same reason


class InjectedFailure(RuntimeError):
    """Raised by `debug.fail_at_epoch` to exercise retries and failure handling."""


class NonRetryable(RuntimeError):
    """A failure a retry cannot fix (a diverged loss); the trial ends as failed with this reason."""


def trial_config(base: dict[str, Any], sample: dict[str, Any]) -> SweepConfig:
    """The resolved config of one trial: `base` with every sampled dotted key applied and validated."""
    search = {**base["search"], "space": {}, "points_to_evaluate": []}  # a point: no space to validate
    cfg = from_dict(SweepConfig, {**base, "search": search})
    for key, value in sorted(sample.items()):
        cfg = with_value(cfg, key, value)
    return cfg


def _device(cfg: SweepConfig) -> torch.device:
    return pick_device("cuda" if cfg.resources.gpu > 0 and torch.cuda.is_available() else "cpu")


def _should_fail(cfg: SweepConfig) -> bool:
    import yaml

    cond = cfg.debug.fail_when
    if cfg.debug.fail_at_epoch is None:
        return False
    if cond is None:
        return True
    key, _, raw = cond.partition("=")
    return flatten(to_dict(cfg)).get(key.strip()) == yaml.safe_load(raw)


def _load_state(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint never unpickles code, even from a shared storage path
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_checkpoint() -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
    """(trainer state, meta, final metrics) of the checkpoint Tune restored us from, if any."""
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None, {}, None
    with ckpt.as_directory() as d:
        folder = Path(d)
        if (folder / FATAL).is_file():
            raise NonRetryable(json.loads((folder / FATAL).read_text())["reason"])
        state = _load_state(folder / STATE) if (folder / STATE).is_file() else None
        meta = json.loads((folder / META).read_text()) if (folder / META).is_file() else {}
        final = json.loads((folder / FINAL).read_text()) if (folder / FINAL).is_file() else None
    return state, meta, final


def _report(metrics: dict[str, Any], files: dict[str, Any] | None) -> None:
    """Queue a report for Tune (sweeps.pipeline) with a checkpoint folder holding `files` (name -> tensor
    state / bytes / text), written now so later training steps cannot change it."""
    assert _AHEAD is not None, "reports come from a trial body run by _trial_entry"
    folder = None
    if files is not None:
        if FINAL in files:
            metrics = {**metrics, FINAL_KEY: 1.0}  # tells the driver's MLflow callback there is a final to log
        folder = Path(tempfile.mkdtemp(prefix="gitsweep-ckpt-"))
        for name, obj in files.items():
            path = folder / name
            if isinstance(obj, bytes):
                path.write_bytes(obj)
            elif isinstance(obj, str):
                path.write_text(obj)
            else:
                torch.save(obj, path)
    _AHEAD.submit(Report(metrics, folder))


def _tune_report(report: Report) -> None:
    from ray import tune

    if report.folder is None:
        tune.report(report.metrics)
    else:
        tune.report(report.metrics, checkpoint=tune.Checkpoint.from_directory(report.folder))


def _fail_fatal(reason: str, meta: dict[str, Any]) -> None:
    """Record a non-retryable failure in a checkpoint, then raise: a Tune retry stops at once."""
    _report({"trial/failed": 1.0, **meta}, {FATAL: json.dumps({"reason": reason}), META: json.dumps(meta)})
    raise NonRetryable(reason)


def shared_dataset(cfg: SweepConfig) -> Any:
    """The trial's built data set from the storage's shared store (a POSIX folder or a URI)."""
    uri = cfg.storage_uri
    if uri is None:
        from gitlib.data.store import get_dataset

        return get_dataset(cfg.dataset, cfg.storage_path)
    from sweeps import storage

    return storage.get_dataset(cfg.dataset, uri)


def shared_generator(cfg: SweepConfig, data: Any, device: torch.device) -> Any:
    """The shared generator for the trial's data set and generator config (trained once, shared)."""
    uri = cfg.storage_uri
    if uri is None:
        from sweeps.generator_store import get_generator

        return get_generator(cfg.generator, data, cfg.storage_path, device)
    from sweeps import storage

    return storage.get_generator(cfg.generator, data, uri, device)


_AHEAD: ReportAhead | None = None  # the running trial's report queue (one trial per process at a time)


def _trial_entry(trial: Callable[[dict[str, Any], dict[str, Any]], None]
                 ) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """Tune's entry point of a trial: the body trains in its own thread and reports ahead (sweeps.pipeline);
    a bad config or data file inside it fails the trial at once, since retrying cannot help."""

    @functools.wraps(trial)
    def run(config: dict[str, Any], base: dict[str, Any]) -> None:
        global _AHEAD

        def body() -> None:
            try:
                trial(config, base)
            except UserError as exc:
                raise NonRetryable(f"{type(exc).__name__}: {exc}") from None

        _AHEAD = ReportAhead()
        try:
            _AHEAD.run(body, _tune_report)
        finally:
            _AHEAD = None

    return run


@_trial_entry
def classifier_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Train one classifier (GIT with a shared generator when classifier.augment == 'git')."""
    from gitlib.train.classifier import ClassifierTrainer

    cfg = trial_config(base, config)
    set_threads(cfg.resources.cpu)
    device = _device(cfg)
    data = shared_dataset(cfg)
    state, meta, final = _read_checkpoint()

    augmenter = None
    extra: dict[str, Any] = {"trial/device": describe_device(device)}
    if cfg.classifier.augment == "git" and cfg.classifier.gen_frac > 0:
        from gitlib.models.munit import load_generator

        entry = shared_generator(cfg, data, device)
        augmenter = load_generator(entry.model_path, device)
        extra.update({"generator/digest": entry.digest, "generator/folder": str(entry.folder)})
    ccfg = cfg.classifier
    if ccfg.augment == "git" and ccfg.gen_frac == 0:  # GIT with no generated share is the ERM baseline
        ccfg = replace(ccfg, augment="none")
    trainer = ClassifierTrainer(ccfg, data, cfg.seed, device, augmenter)
    if state is not None:
        trainer.load_state_dict(state)
    start_epoch = trainer.epoch
    epochs = cfg.classifier.epochs
    if final is not None:  # finished before an interruption: hand Tune the final result again
        _report({**final, **extra, "trial/start_epoch": float(start_epoch)}, None)
        return
    fail = _should_fail(cfg)
    while trainer.epoch < epochs:
        try:
            if fail and cfg.debug.fail_mode == "nan" and trainer.epoch + 1 >= (cfg.debug.fail_at_epoch or 0):
                raise TrainingDiverged(f"classifier training loss became nan in epoch {trainer.epoch + 1} "
                                       "(injected by debug.fail_mode=nan)")
            metrics: dict[str, Any] = trainer.run_epoch()
        except TrainingDiverged as exc:
            _fail_fatal(f"TrainingDiverged: {exc}", {"epoch": float(trainer.epoch)})
        metrics.update(extra)
        metrics["trial/start_epoch"] = float(start_epoch)
        last = trainer.epoch >= epochs
        meta = {"epoch": trainer.epoch}
        files: dict[str, Any] | None = None
        if last:
            files = _final_files(trainer, cfg, metrics)
        elif trainer.epoch % cfg.classifier.checkpoint_every == 0:
            files = {STATE: trainer.state_dict(), META: json.dumps(meta)}
        if files is not None:
            files.setdefault(STATE, trainer.state_dict())
            files.setdefault(META, json.dumps(meta))
        _report(metrics, files)
        if fail and cfg.debug.fail_mode == "raise" and trainer.epoch >= (cfg.debug.fail_at_epoch or 0) and not last:
            raise InjectedFailure(f"injected failure after epoch {trainer.epoch} (debug.fail_at_epoch)")


def _final_files(trainer: Any, cfg: SweepConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """Test metrics merged into the last epoch's result; per-class table and figure as files."""
    import pyarrow.parquet as pq

    from gitlib.tracking.plots import ekld_vs_class_size

    final, table = trainer.final_metrics()
    metrics.update(final)
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    with tempfile.TemporaryDirectory(prefix="gitsweep-final-") as d:
        tmp = Path(d)
        pq.write_table(table, tmp / PER_CLASS)
        ekld_vs_class_size(table, tmp / EKLD_PNG, spearman=final.get("ekld/size_spearman"),
                           title=f"{cfg.name} gen_frac={cfg.classifier.gen_frac:g}")
        return {PER_CLASS: (tmp / PER_CLASS).read_bytes(), EKLD_PNG: (tmp / EKLD_PNG).read_bytes(),
                FINAL: json.dumps(summary)}


@_trial_entry
def generator_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Train one generator as a trial (sweeping generator.* knobs): losses and a checkpoint every
    generator.checkpoint_every iterations, label preservation / diversity and a sample grid at the end."""
    from gitlib.models.munit import save_generator
    from gitlib.train.generator import GeneratorTrainer
    from sweeps import generator_store

    cfg = trial_config(base, config)
    set_threads(cfg.resources.cpu)
    device = _device(cfg)
    data = shared_dataset(cfg)
    state, _, final = _read_checkpoint()
    trainer = GeneratorTrainer(cfg.generator, data, cfg.seed, device)
    if state is not None:
        trainer.load_state_dict(state)
    if final is not None:
        _report(final, None)
        return
    gcfg = cfg.generator
    start, where = trainer.iteration, describe_device(device)
    while trainer.iteration < gcfg.iterations:
        n = min(gcfg.checkpoint_every - trainer.iteration % gcfg.checkpoint_every, gcfg.iterations - trainer.iteration)
        rec = trainer.train(n, log_every=n)[-1]
        metrics: dict[str, Any] = {f"loss/{k}": v for k, v in rec.items() if k != "iteration"}
        metrics.update({"iteration": rec["iteration"], "trial/start_iteration": float(start),
                        "trial/device": where})
        files: dict[str, Any] = {STATE: trainer.state_dict(), META: json.dumps({"iteration": trainer.iteration})}
        if trainer.iteration >= gcfg.iterations:
            with tempfile.TemporaryDirectory(prefix="gitsweep-gen-") as d:
                tmp = Path(d)
                save_generator(tmp / "generator.pt", trainer.model, gcfg, data.channels)
                generator_store._sample_grid(trainer, data, tmp / "samples.png")
                files["generator.pt"] = (tmp / "generator.pt").read_bytes()
                files["samples.png"] = (tmp / "samples.png").read_bytes()
            metrics.update(generator_store._quality(trainer, gcfg, data, device))
            files[FINAL] = json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        _report(metrics, files)
        if _should_fail(cfg) and trainer.iteration < gcfg.iterations:
            raise InjectedFailure(f"injected failure at iteration {trainer.iteration}")


TRAINABLES = {"classifier": classifier_trial, "generator": generator_trial}


def trainable_for(cfg: SweepConfig) -> Any:
    """The Tune trainable of `cfg.trial`, with the resolved config bound and its resources attached."""
    from ray import tune

    fn = TRAINABLES[cfg.trial]
    base = to_dict(cfg)
    bound = tune.with_parameters(fn, base=base)
    res: dict[str, float] = {"cpu": cfg.resources.cpu}
    if cfg.resources.gpu > 0:
        res["gpu"] = cfg.resources.gpu
    return tune.with_resources(bound, res)
