"""The generator trial (sweeping `generator.*` knobs): gitlib's one generator run, reporting the losses
with a checkpoint every `generator.checkpoint_every` iterations, then its quality and sample grid."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gitlib.runs.generator import GRID_FILE, MODEL_FILE, train_generator
from gitlib.train.generator import MunitTrainer
from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.stores import dataset_for
from sweeps.trials.entry import InjectedFailure, TrialContext, device_note, injected_failure_due, trial_device


def generator_trial(cfg: SweepConfig, ctx: TrialContext) -> None:
    device = trial_device(cfg.resources)
    data = dataset_for(cfg)
    if ctx.final is not None:
        ctx.report(ctx.final)
        return
    gcfg = cfg.generator
    notes = {**device_note(device), "trial/start_iteration": float(ctx.state["iteration"] if ctx.state else 0)}
    fail = injected_failure_due(cfg)

    def on_chunk(trainer: MunitTrainer, record: dict[str, float]) -> None:
        if trainer.iteration >= gcfg.iterations:
            return  # the last chunk is reported with the final metrics
        metrics = {**{f"loss/{k}": v for k, v in record.items() if k != "iteration"},
                   "iteration": record["iteration"], **notes}
        ctx.report(metrics, {rs.STATE: trainer.state_dict(), rs.META: json.dumps({"iteration": trainer.iteration})})
        if fail:
            raise InjectedFailure(f"injected failure at iteration {trainer.iteration}")

    with tempfile.TemporaryDirectory(prefix="gitsweep-gen-") as d:
        folder = Path(d)
        result = train_generator(gcfg, data, cfg.seed, device, folder, state=ctx.state, on_chunk=on_chunk)
        files: dict[str, Any] = {name: (folder / name).read_bytes() for name in (MODEL_FILE, GRID_FILE)}
    final = {**result.metrics, **notes}
    files.update({rs.FINAL: json.dumps(rs.numbers(final)), rs.META: json.dumps({"iteration": gcfg.iterations})})
    ctx.report(final, files)
