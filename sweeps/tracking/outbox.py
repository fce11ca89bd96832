"""MLflow writes that wait while the tracking server is away.

The driver's callback hands every MLflow write to the outbox as an event (a tracker method and plain,
JSON-able arguments). While the server answers, an event is written at once. When a write fails because
the server cannot be reached, the event and every later one wait here, in order; the outbox retries with
backoff (1 s, doubling up to a minute) from Tune's loop, which it never blocks for longer than one
request, so trials keep training and reporting. Every tracker write is idempotent (runs are found by
their tags, metric points by their steps, finals by a tag set last), so a write that reached the server
before its answer was lost is harmless to repeat. If the sweep ends with the server still away, the
events are saved to `<sweep>/mlflow_outbox.json`; `gitsweep sync NAME` or `gitsweep resume NAME` writes
them when it is back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

FIRST_WAIT_S, LONGEST_WAIT_S = 1.0, 60.0
FILE = "mlflow_outbox.json"


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the tracking store could not be reached for now (as opposed to a bad request): a
    server away, or a SQLite store that another sweep on the same home held locked past its busy timeout."""
    import requests

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                            TimeoutError)):
            return True
        text = str(exc)
        if any(s in text for s in ("Max retries exceeded", "Connection refused", "Failed to establish",
                                   "Remote end closed", "Connection aborted", "timed out", "502", "503", "504",
                                   "database is locked")):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


class Outbox:
    """Ordered MLflow writes: sent now while the server answers, held and retried while it does not."""

    def __init__(self, tracker: Any, log: Any = print) -> None:
        self.tracker, self.log = tracker, log
        self.events: list[tuple[str, list[Any]]] = []
        self.wait_s, self.next_try = FIRST_WAIT_S, 0.0
        self.down_since: float | None = None

    def send(self, kind: str, *args: Any) -> None:
        """Run tracker.<kind>(*args) now, or hold it behind earlier held writes."""
        self.events.append((kind, list(args)))
        self.drain()

    def drain(self, force: bool = False) -> bool:
        """Write the held events in order, while the server answers; True when none is left."""
        if self.events and not force and time.monotonic() < self.next_try:
            return False
        while self.events:
            kind, args = self.events[0]
            try:
                getattr(self.tracker, kind)(*args)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._down(exc)
                return False
            self.events.pop(0)
        if self.down_since is not None:
            self.log(f"MLflow server back after {time.monotonic() - self.down_since:.0f} s: held writes sent")
            self.down_since, self.wait_s = None, FIRST_WAIT_S
        return True

    def _down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log(f"MLflow server unreachable ({type(exc).__name__}); trials go on, writes are held and "
                     "retried")
        self.next_try = time.monotonic() + self.wait_s
        self.wait_s = min(self.wait_s * 2, LONGEST_WAIT_S)

    def save(self, folder: Path) -> Path | None:
        """Persist the held events (the tracker's unwritten metric points first become an event)."""
        points = self.tracker.take_pending()
        if points:
            self.events.append(("log_points", [points]))
        path = folder / FILE
        if not self.events:
            path.unlink(missing_ok=True)
            return None
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"events": self.events}, default=str))
        tmp.replace(path)
        return path

    @staticmethod
    def load(folder: Path) -> list[tuple[str, list[Any]]]:
        path = folder / FILE
        return [tuple(e) for e in json.loads(path.read_text())["events"]] if path.is_file() else []
