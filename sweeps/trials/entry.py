"""Tune's side of a trial: the trainable of a sweep's trial kind (its body from sweeps.kinds, the typed
config bound to it), restore from the checkpoint Tune hands back, run the body in a training thread that
reports ahead of Tune (sweeps.trials.report_ahead), write each report's checkpoint folder at once, and
turn failures a retry cannot fix into non-retryable ones. Torch loads only for the kinds that use it.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gitlib.errors import UserError
from sweeps import results as rs
from sweeps.config import ResourcesConfig, SweepConfig, trial_config
from sweeps.groups import colour as group_colour
from sweeps.kinds import TrialKind, kind_of, resolve
from sweeps.trials.report_ahead import Report, ReportAhead
from sweeps.trials.stops import StopCheck

if TYPE_CHECKING:
    import torch

Body = Callable[[SweepConfig, "TrialContext"], None]


class InjectedFailure(RuntimeError):
    """Raised by `debug.fail_at_epoch` to exercise retries and failure handling."""


class NonRetryable(RuntimeError):
    """A failure a retry cannot fix (a diverged loss, bad input); the trial ends as failed with this reason."""


def trial_device(resources: ResourcesConfig) -> torch.device:
    """CUDA when the trial asked for a GPU and has one, else the CPU with one torch thread per granted CPU."""
    import torch

    from gitlib.device import pick_device, set_threads

    set_threads(resources.cpu)
    return pick_device("cuda" if resources.gpu > 0 and torch.cuda.is_available() else "cpu")


def injected_failure_due(cfg: SweepConfig) -> bool:
    """Whether `debug.fail_at_epoch` applies to this trial (its `fail_when` condition holds)."""
    if cfg.debug.fail_at_epoch is None:
        return False
    values = cfg.flat()
    for cond in filter(None, (cfg.debug.fail_when or "").split(",")):  # every 'key=value' must hold
        key, _, raw = cond.partition("=")
        if values.get(key.strip()) != yaml.safe_load(raw):
            return False
    return True


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    # weights_only: a checkpoint never unpickles code, even from a shared storage path
    return dict(torch.load(path, map_location="cpu", weights_only=True))


class TrialContext:
    """A running trial's link to Tune: what it was restored from, and its reports."""

    def __init__(self, ahead: ReportAhead, folder: Path | None, label: str = "",
                 stop_check: Callable[..., bool] | None = None, colour: str = "C0") -> None:
        self._ahead = ahead
        self.label = label  # "trial <id>: <searched values>", for figure titles
        self.colour = colour  # its group's colour (sweeps.groups.colour), for its figures
        self.stop_check = stop_check or (lambda *_: False)  # has the driver asked this trial to stop?
        self.state: dict[str, Any] | None = None  # trainer state to resume from
        self.meta: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None  # final metrics of a trial that had already finished
        if folder is not None:
            if (folder / rs.FATAL).is_file():
                raise NonRetryable(json.loads((folder / rs.FATAL).read_text())["reason"])
            self.state = _load_state(folder / rs.STATE) if (folder / rs.STATE).is_file() else None
            self.meta = json.loads((folder / rs.META).read_text()) if (folder / rs.META).is_file() else {}
            self.final = rs.read_final(folder)
            if self.final is not None:  # reported again as it was: the final result of the trial
                self.final[rs.FINAL_KEY] = 1.0

    def report(self, metrics: dict[str, Any], files: dict[str, Any] | None = None) -> None:
        """Queue a report with a checkpoint folder holding `files` (name -> tensor state, bytes or text),
        written now so later training steps cannot change it."""
        folder = None
        if files is not None:
            if rs.FINAL in files:
                metrics = {**metrics, rs.FINAL_KEY: 1.0}  # tells the driver there is a final to keep
            folder = Path(tempfile.mkdtemp(prefix="gitsweep-ckpt-"))
            for name, obj in files.items():
                if isinstance(obj, bytes):
                    (folder / name).write_bytes(obj)
                elif isinstance(obj, str):
                    (folder / name).write_text(obj)
                else:
                    import torch

                    torch.save(obj, folder / name)
        self._ahead.submit(Report(metrics, folder))

    def fail(self, reason: str, meta: dict[str, Any]) -> None:
        """Record a non-retryable failure in a checkpoint, then raise: a Tune retry stops at once."""
        self.report({"trial/failed": 1.0, **meta}, {rs.FATAL: json.dumps({"reason": reason}),
                                                    rs.META: json.dumps(meta)})
        raise NonRetryable(reason)


def _tune_report(report: Report) -> None:
    from ray import tune

    if report.folder is None:
        tune.report(report.metrics)
    else:
        tune.report(report.metrics, checkpoint=tune.Checkpoint.from_directory(report.folder))


def _restored_folder() -> Any:
    from ray import tune

    return tune.get_checkpoint()


def tune_entry(body: Body) -> Callable[[dict[str, Any], SweepConfig, TrialKind], None]:
    """Tune's function trainable for a trial body: `(config, base, kind)` -> the trial's resolved config, its
    restored checkpoint, and a training thread that reports ahead. Bad config or data inside a trial
    fails it at once, since retrying cannot help. The kind's record travels with the trainable, so a
    kind registered only in the driver (a plug-in, a test) is known where its trials run."""

    @functools.wraps(body)
    def run(config: dict[str, Any], base: SweepConfig, kind: TrialKind) -> None:
        from ray import tune

        from sweeps import kinds  # the module's registry: a global of this closure would travel as a copy

        if base.trial not in kinds.TRIAL_KINDS:
            kinds.TRIAL_KINDS.register(base.trial)(kind)
        ahead = ReportAhead()
        checkpoint = _restored_folder()
        trial_id = tune.get_context().get_trial_id()
        values = rs.describe(dict(sorted(rs.sampled_values(config).items())))
        label = f"trial {trial_id}" + (f": {values}" if values else "")
        colour = group_colour(str(config.get(rs.GROUP_KEY, trial_id)))
        stop = StopCheck(base.name, trial_id)

        def train() -> None:
            try:
                cfg = trial_config(base, config)
                if checkpoint is None:
                    body(cfg, TrialContext(ahead, None, label, stop, colour))
                    return
                with checkpoint.as_directory() as d:
                    ctx = TrialContext(ahead, Path(d), label, stop, colour)
                body(cfg, ctx)
            except UserError as exc:
                raise NonRetryable(f"{type(exc).__name__}: {exc}") from None

        ahead.run(train, _tune_report)

    return run




def device_note(device: torch.device) -> dict[str, Any]:
    from gitlib.device import describe_device

    return {"trial/device": describe_device(device)}


def trainable_for(cfg: SweepConfig) -> Any:
    """The Tune trainable of `cfg.trial`: its body with the typed config bound, and its resources."""
    from ray import tune

    kind = kind_of(cfg.trial)
    bound = tune.with_parameters(tune_entry(resolve(kind.body)), base=cfg, kind=kind)
    res: dict[str, float] = {"cpu": cfg.resources.cpu}
    if cfg.resources.gpu > 0:
        res["gpu"] = cfg.resources.gpu
    return tune.with_resources(bound, res)
