"""The synthetic trial (`trial: synthetic`): the known objective of sweeps.synthetic instead of training.

No torch and no data: it reports `synthetic.epochs` epochs that rise towards its final value (with
`synthetic.epoch_s` of sleep each, standing in for training time), checkpoints every epoch, can be asked
to stop early (ASHA, the time budget), fails when its seeded draw says so (`synthetic.fail_p`, as a
diverged training would: not retried), and ends with the classifier's final metrics, per-class table and
eKLD figure, so that every path of the machinery runs on it in seconds.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from sweeps import results as rs
from sweeps.config import SweepConfig
from sweeps.synthetic import SyntheticConfig, draw, epoch_value, final_metrics, per_class, true_value
from sweeps.trials.entry import TrialContext
from sweeps.trials.stops import stoppable


def synthetic_trial(cfg: SweepConfig, ctx: TrialContext) -> None:
    started = time.perf_counter()
    s = cfg.section(SyntheticConfig)
    if ctx.final is not None:  # finished before an interruption: hand Tune the final result again
        ctx.report(ctx.final)
        return
    d = draw(s, cfg.seed, cfg.dataset.instance)
    final = true_value(s) + d.seed_noise + d.instance_effect
    can_stop = stoppable(cfg)
    epoch = int(ctx.meta.get("epoch", 0))
    notes = {"trial/start_epoch": float(epoch)}  # > 0: resumed from a checkpoint, not started over
    stopped = False
    while epoch < s.epochs:
        epoch += 1
        time.sleep(s.epoch_s)
        if d.fails_at == epoch:
            ctx.fail(f"SyntheticFailure: diverged at epoch {epoch} (synthetic.fail_p = {s.fail_p:g})",
                     {"epoch": float(epoch)})
            return
        value = epoch_value(final, epoch, s.epochs)
        metrics = {"epoch": float(epoch), "train/loss": 1.0 - value, "val/balanced_acc": value, **notes}
        stopped = can_stop and epoch < s.epochs and ctx.stop_check()
        if epoch == s.epochs or stopped:
            break
        ctx.report(metrics, {rs.META: json.dumps({"epoch": epoch})})
    value = epoch_value(final, epoch, s.epochs)
    table = per_class(s, value, cfg.dataset.imbalance_ratio, cfg.seed)
    result: dict[str, Any] = {"epoch": float(epoch), "train/loss": 1.0 - value, "val/balanced_acc": value,
                              **notes, **final_metrics(table)}
    if stopped:
        result["trial/stopped_early"] = 1.0
    files = _table_files(table, f"{cfg.name} {ctx.label}", ctx.colour)  # its figure: half a second of CPU
    result["time/trial_s"] = time.perf_counter() - started  # this attempt's own time, start to final result
    ctx.report(result, {rs.FINAL: json.dumps(result), rs.META: json.dumps({"epoch": epoch}), **files})


def _table_files(table: dict[str, list[float]], title: str, colour: str) -> dict[str, bytes]:
    """per_class.parquet and the eKLD figure of a per-class table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gitlib.plots import ekld_vs_class_size

    arrow = pa.table(table)
    with tempfile.TemporaryDirectory(prefix="gitsweep-synthetic-") as d:
        folder = Path(d)
        pq.write_table(arrow, folder / rs.PER_CLASS)
        ekld_vs_class_size(arrow, folder / rs.EKLD_PNG, title=title, colour=colour)
        return {name: (folder / name).read_bytes() for name in (rs.PER_CLASS, rs.EKLD_PNG)}
