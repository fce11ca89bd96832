"""The classifier trial: the shared data set and generator, then gitlib's one classifier run, reporting
every epoch to Tune (a checkpoint every `classifier.checkpoint_every` epochs, at most one per
`classifier.checkpoint_every_s` seconds) and the final metrics with
the per-class table and figure. `gitsweep train classifier` prepares its inputs with the same function.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gitlib.augmenter import Augmenter
from gitlib.data.dataset import BuiltDataset
from gitlib.runs.classifier import ClassifierResult, run_classifier
from gitlib.train.classifier import ClassifierTrainer, TrainingDiverged
from gitlib.train.config import ClassifierConfig
from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.stores import dataset_for, generator_for
from sweeps.trials.entry import InjectedFailure, TrialContext, device_note, injected_failure_due, trial_device
from sweeps.trials.stops import stoppable


def needs_generator(cfg: SweepConfig) -> bool:
    """GIT trains with the shared generator; without a known nuisance, eKLD measures invariance to it."""
    return cfg.section(ClassifierConfig).effective_augment == "git" or cfg.dataset.nuisance == "none"


def classifier_inputs(cfg: SweepConfig, device: torch.device, generator_file: Path | None = None,
                      ) -> tuple[BuiltDataset, Augmenter | None, dict[str, Any]]:
    """(data set, generator or None, notes for the record) of a classifier run: from the shared stores, or
    the generator from `generator_file` (a generator.pt of `gitsweep train generator`)."""
    from gitlib.models.munit import load_generator

    data = dataset_for(cfg)
    notes: dict[str, Any] = device_note(device)
    if generator_file is not None:
        return data, load_generator(generator_file, device), {**notes, "generator/file": str(generator_file)}
    if not needs_generator(cfg):
        return data, None, notes
    entry = generator_for(cfg, data, device)
    notes.update({"generator/digest": entry.digest, "generator/folder": str(entry.folder)})
    return data, load_generator(entry.model_path, device), notes


def final_files(result: ClassifierResult, cfg: SweepConfig, title: str, colour: str = "C0") -> dict[str, Any]:
    """The result contract's files of a finished classifier: final.json, the per-class table, the figure."""
    import pyarrow.parquet as pq

    from gitlib.plots import ekld_vs_class_size

    with tempfile.TemporaryDirectory(prefix="gitsweep-final-") as d:
        tmp = Path(d)
        pq.write_table(result.per_class, tmp / rs.PER_CLASS)
        ekld_vs_class_size(result.per_class, tmp / rs.EKLD_PNG, spearman=result.metrics.get("ekld/size_spearman"),
                           title=title, colour=colour)
        return {rs.PER_CLASS: (tmp / rs.PER_CLASS).read_bytes(), rs.EKLD_PNG: (tmp / rs.EKLD_PNG).read_bytes(),
                rs.CURVES: json.dumps(result.curves)}


def classifier_trial(cfg: SweepConfig, ctx: TrialContext) -> None:
    """Train one classifier (GIT with the shared generator when classifier.augment == 'git')."""
    device = trial_device(cfg.resources)
    data, generator, notes = classifier_inputs(cfg, device)
    start_epoch = int(ctx.state["epoch"]) if ctx.state else 0
    notes["trial/start_epoch"] = float(start_epoch)
    if ctx.final is not None:  # finished before an interruption: hand Tune the final result again
        ctx.report({**ctx.final, **notes})
        return
    ccfg = cfg.section(ClassifierConfig)
    epochs, last = ccfg.epochs, {}
    done = {"epoch": start_epoch, "checkpointed_at": time.monotonic()}  # the restored checkpoint counts
    fail = injected_failure_due(cfg)

    def on_epoch(trainer: ClassifierTrainer, metrics: dict[str, float]) -> None:
        done["epoch"] = trainer.epoch
        metrics.update(notes)
        if trainer.epoch >= epochs:
            last.update(metrics)  # reported together with the final metrics
            return
        files = None
        if trainer.epoch % ccfg.checkpoint_every == 0 and \
                time.monotonic() - done["checkpointed_at"] >= ccfg.checkpoint_every_s:
            files = {rs.STATE: trainer.state_dict(), rs.META: json.dumps({"epoch": trainer.epoch})}
            done["checkpointed_at"] = time.monotonic()
        ctx.report(metrics, files)
        if fail and cfg.debug.fail_mode == "nan" and trainer.epoch + 1 >= (cfg.debug.fail_at_epoch or 0):
            raise TrainingDiverged(f"classifier training loss became nan in epoch {trainer.epoch + 1} "
                                   "(injected by debug.fail_mode=nan)")
        if fail and cfg.debug.fail_mode == "raise" and trainer.epoch >= (cfg.debug.fail_at_epoch or 0):
            raise InjectedFailure(f"injected failure after epoch {trainer.epoch} (debug.fail_at_epoch)")

    try:
        result = run_classifier(ccfg, data, cfg.seed, device, generator, ctx.state, on_epoch, cfg.probes,
                                should_stop=ctx.stop_check if stoppable(cfg) else None)
    except TrainingDiverged as exc:
        ctx.fail(f"TrainingDiverged: {exc}", {"epoch": float(done["epoch"])})
        return
    final = {**last, **result.metrics}
    if result.stopped_early:  # evaluated where ASHA or the time budget stopped it
        final.update({"epoch": float(result.trainer.epoch), "trial/stopped_early": 1.0})
    files = final_files(result, cfg, title=f"{cfg.name} {ctx.label}", colour=ctx.colour)
    files.update({rs.STATE: result.trainer.state_dict(), rs.META: json.dumps({"epoch": result.trainer.epoch}),
                  rs.FINAL: json.dumps(rs.numbers(final))})
    ctx.report(final, files)
