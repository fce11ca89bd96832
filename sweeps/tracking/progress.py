"""What `run` and `resume` print while a sweep runs.

One line when a trial starts and one when it ends (with its key results); per-epoch lines only with
`--verbose`. On a terminal, a status line stays at the bottom and is redrawn as things change: trials (and
groups) done, running, pending and failed, elapsed time, an estimate of the time left, and the best value
so far of each objective. When the output is not a terminal (CI, nohup), the same status is printed as a
plain line at most once a minute.

While a shared generator is being trained (its folder in the storage's store says so: sweeps.stores.
generators.in_training), the trials that need it wait, and the time per ended trial says nothing about the
time left: the status line shows the generator's iteration out of its total and its own time to go, and
no estimate for the sweep until it is ready.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from sweeps import results as rs
from sweeps.kinds import kind_of
from sweeps.search_state import Decision

PLAIN_EVERY_S = 60.0
STORE_EVERY_S = 5.0  # how often the status line reads the generator store again


class Progress:
    def __init__(self, total_trials: int, objectives: list[tuple[str, str]], trial: str, repeats: int = 1,
                 verbose: bool = False, length: int = 0, raced: bool = False, storage: Path | None = None,
                 stream: TextIO | None = None) -> None:
        self.total, self.objectives, self.repeats, self.verbose = total_trials, objectives, repeats, verbose
        self.trial, self.length, self.raced_sweep = trial, length, raced
        self.storage = storage  # the local storage whose generator store shows generators in training
        self._training: tuple[float, list[Any]] = (-math.inf, [])
        self.kind = kind_of(trial)
        self.stream = stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started_at = time.monotonic()
        self.running: set[str] = set()
        self.done: dict[str, dict[str, float]] = {}  # trial id -> final numbers
        self.failed: set[str] = set()
        self.stopped_by_race: set[str] = set()
        self._shown_at = time.monotonic() if not self.live else -math.inf  # plain status: first after a minute
        self._status = ""

    @property
    def args(self) -> tuple[Any, ...]:
        """What a Progress is made of (the callback pickles these, not the stream)."""
        return (self.total, self.objectives, self.trial, self.repeats, self.verbose, self.length, self.raced_sweep,
                self.storage)

    # ---- events ---------------------------------------------------------------------------------

    def started(self, trial_id: str, config: dict[str, Any]) -> None:
        self.running.add(trial_id)
        self._line(trial_id, config, "started")

    def result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        if not self.verbose:
            self.tick()
            return
        step = self.kind.step
        head = f"{step} {int(result.get(step, result.get('training_iteration', 0)))}/{self.length}"
        shown = " ".join(f"{k} {rs.short(result[k])}" for k in self.kind.progress if k in result)
        self._line(trial_id, config, f"{head} {shown}")

    def finished(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        self.running.discard(trial_id)
        self.done[trial_id] = rs.numbers(result)
        keys = dict.fromkeys([*(m for m, _ in self.objectives), *self.kind.headline])
        shown = " ".join(f"{k} {rs.short(result[k])}" for k in keys if k in result)
        self._line(trial_id, config, f"finished: {shown}")

    def stopped(self, trial_id: str, config: dict[str, Any]) -> None:
        """A repeat of a group the race dropped, stopped before its end."""
        self.running.discard(trial_id)
        self.stopped_by_race.add(trial_id)
        self._line(trial_id, config, "stopped by the race (its group was dropped)")

    def raced(self, d: Decision) -> None:
        if d.decision == "dropped":
            self.note(f"race: {d.group} dropped after {d.k} repeats, worse than {d.vs} "
                      f"(one-sided p = {d.p:.3g} over {d.n} paired repeats)")
        else:
            self.note(f"race: {d.group} survived all its repeats" + (f" (vs {d.vs}, p = {d.p:.3g})"
                                                                     if d.vs != d.group and d.p == d.p else ""))

    def errored(self, trial_id: str, config: dict[str, Any], reason: str) -> None:
        self.running.discard(trial_id)
        self.failed.add(trial_id)
        self._line(trial_id, config, f"FAILED: {reason}")

    def note(self, text: str) -> None:
        self._print(f"[{time.strftime('%H:%M:%S')}] {text}")

    # ---- output ---------------------------------------------------------------------------------

    def _line(self, trial_id: str, config: dict[str, Any], text: str) -> None:
        values = rs.sampled_values(config)
        params = rs.describe(dict(sorted(values.items())), sep=" ")
        self._print(f"[{time.strftime('%H:%M:%S')}] {trial_id} {text}  ({params})")
        self.tick(force=self.live)

    def _print(self, text: str) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[2K")  # clear the status line, print above it, redraw it below
        self.stream.write(text + "\n")
        if self.live and self._status:
            self.stream.write(self._status)
        self.stream.flush()

    def generators(self) -> list[Any]:
        """The shared generators being trained now (read from the store at most every STORE_EVERY_S), while
        this sweep has trials running: what they may be waiting for."""
        if self.storage is None or not self.running:
            return []
        now = time.monotonic()
        if now - self._training[0] >= STORE_EVERY_S:
            from sweeps.stores.generators import in_training

            self._training = (now, in_training(self.storage))
        return self._training[1]

    def status(self) -> str:
        elapsed = time.monotonic() - self.started_at
        n_done = len(self.done) + len(self.failed) + len(self.stopped_by_race)
        pending = max(self.total - n_done - len(self.running), 0)
        training = self.generators()
        eta = "-"
        if n_done and not self.raced_sweep and not training:  # a race decides how many trials run, and a
            left = elapsed / n_done * (self.total - n_done)  # generator's training is not a trial's time
            eta = _duration(left)
        best = []
        for metric, mode in self.objectives:
            found = [v[metric] for v in self.done.values() if metric in v and v[metric] == v[metric]]
            if found:
                best.append(f"best {metric} {rs.short(max(found) if mode == 'max' else min(found))}")
        unit = f" ({self.repeats} repeats per group)" if self.repeats > 1 else ""
        race = f", {len(self.stopped_by_race)} stopped by the race" if self.raced_sweep else ""
        waiting = f"at most {pending} pending" if self.raced_sweep else f"{pending} pending"
        shown_eta = eta != "-" or not (self.raced_sweep or training)
        return (f"trials{unit}: {len(self.done)} done, {len(self.running)} running, {waiting}, "
                f"{len(self.failed)} failed{race} | {_duration(elapsed)} elapsed" +
                (f", ~{eta} left" if shown_eta else "") +
                "".join(f" | {_training(t)}" for t in training) +
                (" | " + ", ".join(best) if best else ""))

    def tick(self, force: bool = False) -> None:
        """Redraw the status line (terminal), or print it as a line at most once a minute (otherwise)."""
        now = time.monotonic()
        if self.live:
            if force or now - self._shown_at >= 1.0:
                self._status = self.status()
                self.stream.write("\r\x1b[2K" + self._status)
                self.stream.flush()
                self._shown_at = now
        elif now - self._shown_at >= PLAIN_EVERY_S:
            self._shown_at = now
            self.stream.write(self.status() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[2K" + self.status() + "\n")
            self._status = ""
            self.stream.flush()


def _training(t: Any) -> str:
    """'generator 1a2b3c4d: iteration 400/1800, ~3m20s to go' (a sweeps.stores.generators.Training)."""
    total = f"/{t.total}" if t.total is not None else ""
    left = t.left_s()
    to_go = f", ~{_duration(left)} to go" if left is not None else ", time to go known after its first checkpoint"
    return f"training generator {t.digest[:8]}: iteration {t.iteration}{total}{to_go}; sweep estimate after it"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
