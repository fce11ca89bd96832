"""The MSR trial (`trial: msr`): meta-learning a layer's sharing pattern on a synthetic task family with
gitlib's one MSR path (gitlib.msr.meta.run_msr), reporting the meta-test error every `msr.eval_every`
outer steps with a checkpoint, and at the end the equivariance error and a figure of the learned sharing
pattern."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gitlib.msr.config import MsrConfig
from gitlib.msr.meta import MetaLearner, run_msr
from gitlib.plots import sharing_pattern_figure
from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.trials.entry import TrialContext, device_note, trial_device

SHARING_PNG = rs.SHARING_PNG


def msr_trial(cfg: SweepConfig, ctx: TrialContext) -> None:
    device = trial_device(cfg.resources)
    mcfg = cfg.section(MsrConfig)
    if ctx.final is not None:
        ctx.report(ctx.final)
        return
    notes = {**device_note(device), "trial/start_step": float(ctx.state["step"] if ctx.state else 0)}
    last: dict[str, Any] = {}
    pattern: dict[str, Any] = {}

    def on_eval(learner: MetaLearner, step: int, metrics: dict[str, float]) -> None:
        point = {**metrics, "step": float(step), **notes}
        if step >= mcfg.outer_steps:
            last.update(point)  # reported with the final metrics
            pattern["array"] = learner.sharing_pattern()
            return
        ctx.report(point, {rs.STATE: learner.state_dict(), rs.META: json.dumps({"step": step})})

    result = run_msr(mcfg, cfg.seed, device, state=ctx.state, on_eval=on_eval)
    final = {**last, **result}  # the last evaluation's step and notes, with the final metrics
    files: dict[str, Any] = {rs.FINAL: json.dumps(rs.numbers(final)),
                             rs.META: json.dumps({"step": mcfg.outer_steps})}
    if "array" in pattern:
        with tempfile.TemporaryDirectory(prefix="gitsweep-msr-") as d:
            png = sharing_pattern_figure(pattern["array"], Path(d) / SHARING_PNG,
                                         f"{ctx.label}\n{mcfg.model} on {mcfg.problem}: learned sharing pattern")
            files[SHARING_PNG] = png.read_bytes()
    ctx.report(final, files)
