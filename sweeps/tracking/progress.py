"""What `run` and `resume` print while a sweep runs.

One line when a trial starts and one when it ends (with its key results); per-epoch lines only with
`--verbose`. On a terminal, a status line stays at the bottom and is redrawn as things change: trials (and
groups) done, running, pending and failed, elapsed time, an estimate of the time left, and the best value
so far of each objective. When the output is not a terminal (CI, nohup), the same status is printed as a
plain line at most once a minute.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from sweeps import results as rs

SHOW = ("train/loss", "val/balanced_acc", "test/balanced_acc", "ekld/tail", "loss/gen_total", "meta_test/mse")
PLAIN_EVERY_S = 60.0


class Progress:
    def __init__(self, total_trials: int, objectives: list[tuple[str, str]], repeats: int = 1,
                 verbose: bool = False, stream: TextIO | None = None) -> None:
        self.total, self.objectives, self.repeats, self.verbose = total_trials, objectives, repeats, verbose
        self.stream = stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started_at = time.monotonic()
        self.running: set[str] = set()
        self.done: dict[str, dict[str, float]] = {}  # trial id -> final numbers
        self.failed: set[str] = set()
        self._shown_at = time.monotonic() if not self.live else -math.inf  # plain status: first after a minute
        self._status = ""

    # ---- events ---------------------------------------------------------------------------------

    def started(self, trial_id: str, config: dict[str, Any]) -> None:
        self.running.add(trial_id)
        self._line(trial_id, config, "started")

    def result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any], epochs: int) -> None:
        if not self.verbose:
            self.tick()
            return
        if "epoch" in result:
            head = f"epoch {int(result['epoch'])}/{epochs}"
        elif "step" in result:
            head = f"step {int(result['step'])}"
        else:
            head = f"iteration {int(result.get('iteration', result.get('training_iteration', 0)))}"
        self._line(trial_id, config, head + " " + " ".join(f"{k} {rs.short(result[k])}" for k in SHOW if k in result))

    def finished(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        self.running.discard(trial_id)
        self.done[trial_id] = rs.numbers(result)
        keys = dict.fromkeys([*(m for m, _ in self.objectives), *(k for k in SHOW if not rs.is_series(k))])
        shown = " ".join(f"{k} {rs.short(result[k])}" for k in keys if k in result)
        self._line(trial_id, config, f"finished: {shown}")

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

    def status(self) -> str:
        elapsed = time.monotonic() - self.started_at
        n_done = len(self.done) + len(self.failed)
        pending = max(self.total - n_done - len(self.running), 0)
        eta = "-"
        if n_done:
            left = elapsed / n_done * (self.total - n_done)  # mean time per ended trial, at this concurrency
            eta = _duration(left)
        best = []
        for metric, mode in self.objectives:
            found = [v[metric] for v in self.done.values() if metric in v and v[metric] == v[metric]]
            if found:
                best.append(f"best {metric} {rs.short(max(found) if mode == 'max' else min(found))}")
        unit = f" ({self.repeats} repeats per group)" if self.repeats > 1 else ""
        return (f"trials{unit}: {len(self.done)} done, {len(self.running)} running, {pending} pending, "
                f"{len(self.failed)} failed | {_duration(elapsed)} elapsed, ~{eta} left" +
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


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
