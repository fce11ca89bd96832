"""Asking a running trial to stop early, so that it evaluates the model it has instead of being killed.

The driver (ASHA's decision, or the sweep's time budget) adds a trial id to a named Ray actor; a trial
that can be stopped checks it after every epoch and, when its id is there, ends training and reports its
final metrics, per-class table and eKLD like any finished trial, tagged as stopped early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweeps.kinds import kind_of

if TYPE_CHECKING:
    from sweeps.config import SweepConfig

NAMESPACE = "gitsweep"


def stoppable(cfg: SweepConfig) -> bool:
    """Whether the driver may ask a trial of this sweep to stop early (ASHA, or a time budget): its kind
    checks for the request every step."""
    return kind_of(cfg.trial).stoppable and (cfg.search.scheduler == "asha" or cfg.search.time_budget_s is not None)


class StopList:
    """The ids of the trials asked to stop (one actor per sweep)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def add(self, trial_ids: list[str]) -> None:
        self._ids.update(trial_ids)

    def asked(self, trial_id: str) -> bool:
        return trial_id in self._ids


def actor_name(sweep: str) -> str:
    return f"gitsweep-stops-{sweep}"


def stop_list(sweep: str) -> Any:
    """The sweep's StopList actor, created on first use (it lives as long as the driver's job)."""
    import ray

    cls = ray.remote(num_cpus=0)(StopList)
    return cls.options(name=actor_name(sweep), namespace=NAMESPACE, get_if_exists=True).remote()


def ask_to_stop(sweep: str, trial_ids: list[str]) -> None:
    if trial_ids:
        import ray

        ray.get(stop_list(sweep).add.remote(list(trial_ids)))


class StopCheck:
    """A trial's view of the stop list: one actor call per epoch (a few ms against a second-long epoch)."""

    def __init__(self, sweep: str, trial_id: str) -> None:
        self.sweep, self.trial_id = sweep, trial_id
        self._actor: Any = None

    def __call__(self, *_: Any) -> bool:
        import ray

        if self._actor is None:
            self._actor = stop_list(self.sweep)
        return bool(ray.get(self._actor.asked.remote(self.trial_id)))
