"""MLflow writes that wait while the tracking server is away.

The driver's callback hands every MLflow write to the outbox as an event (a tracker method and plain,
JSON-able arguments). While the server answers, an event is written at once. When a write fails because
the server cannot be reached, the event and every later one wait here, in order; the outbox retries with
backoff (1 s, doubling up to a minute) from its writer thread, so Tune's loop never waits on the server and
trials keep training and reporting. Every tracker write is idempotent (runs are found by
their tags, metric points by their steps, finals by a tag set last), so a write that reached the server
before its answer was lost is harmless to repeat. If the sweep ends with the server still away, the
events are saved to `<sweep>/mlflow_outbox.json`; `gitsweep sync NAME` or `gitsweep resume NAME` writes
them when it is back.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIRST_WAIT_S, LONGEST_WAIT_S = 1.0, 60.0
FILE = "mlflow_outbox.json"
LATER = "<later>"  # an event whose (method, arguments) a callable makes when its turn comes


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
    """Ordered MLflow writes: sent while the server answers, held and retried while it does not.

    With `background=True` (the driver's callback), a writer thread sends them, so Tune's loop hands a write
    over and goes on starting and feeding trials: a trial's writes (its run, final metrics and table, its
    end) took about 150 ms of driver time on SQLite in the scale benchmark's profile. One write
    runs at a time (the tracker is not thread-safe); `drain` from the caller's thread waits for the writer's
    current write and then sends the rest itself, which is how a snapshot and the sweep's end make sure
    MLflow is not behind them. A write that fails for a reason other than an outage is raised in the
    caller's thread at its next `send` or `drain`, as it would have been without the thread."""

    def __init__(self, tracker: Any, log: Any = print, background: bool = False) -> None:
        self.tracker, self.log = tracker, log
        self.events: deque[tuple[str, list[Any]]] = deque()
        self.wait_s, self.next_try = FIRST_WAIT_S, 0.0
        self.down_since: float | None = None
        self._writing = threading.Lock()  # held for one write, by the writer thread or a draining caller
        self._queued = threading.Condition()  # the writer thread sleeps on it until there is work
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._background, self._closed = background, False

    def send(self, kind: str, *args: Any) -> None:
        """Run tracker.<kind>(*args) in order after every earlier write: now, or from the writer thread."""
        self._raise_error()
        with self._queued:
            self.events.append((kind, list(args)))
            if self._background and not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._write_loop, name="gitsweep-mlflow", daemon=True)
                    self._thread.start()
                self._queued.notify()
                return
        self.drain()

    def send_later(self, make: Callable[[], tuple[str, list[Any]]]) -> None:
        """Like send, for a write whose arguments take work to make (a group's statistics and figure): the
        writer thread calls `make` for (method, arguments) when the write's turn comes."""
        self.send(LATER, make)

    def drain(self, force: bool = False) -> bool:
        """Write the held events in order, while the server answers; True when none is left. `force` tries
        now even while an outage's backoff waits."""
        self._raise_error()
        with self._writing:
            return self._drain(force)

    def _drain(self, force: bool) -> bool:
        if self.events and not force and time.monotonic() < self.next_try:
            return False
        while self.events:
            self._make_head()
            kind, args = self.events[0]
            try:
                getattr(self.tracker, kind)(*args)
            except Exception as exc:
                if not is_outage(exc):
                    self.events.popleft()  # raised once, where it would have been raised without a thread
                    raise
                self._down(exc)
                return False
            self.events.popleft()
        if self.down_since is not None:
            self.log(f"MLflow server back after {time.monotonic() - self.down_since:.0f} s: held writes sent")
            self.down_since, self.wait_s = None, FIRST_WAIT_S
        return True

    def _make_head(self) -> None:
        kind, args = self.events[0]
        if kind == LATER:  # made once: a retry after an outage writes what was made
            made, made_args = args[0]()
            self.events[0] = (made, list(made_args))

    def _write_loop(self) -> None:
        while True:
            with self._queued:
                while not self._closed and (not self.events or time.monotonic() < self.next_try):
                    self._queued.wait(max(0.05, self.next_try - time.monotonic()) if self.events else None)
                if self._closed:
                    return
            try:
                with self._writing:
                    self._drain(False)
            except Exception as exc:  # handed to the caller's thread
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def close(self) -> None:
        """Stop the writer thread after its current write; what is still held stays for `drain` and `save`."""
        with self._queued:
            self._closed = True
            self._queued.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log(f"MLflow server unreachable ({type(exc).__name__}); trials go on, writes are held and "
                     "retried")
        self.next_try = time.monotonic() + self.wait_s
        self.wait_s = min(self.wait_s * 2, LONGEST_WAIT_S)

    def save(self, folder: Path) -> Path | None:
        """Persist the held events (the tracker's unwritten metric points first become an event)."""
        with self._writing:
            for _ in range(len(self.events)):  # plain data only on disk: deferred writes are made now
                self._make_head()
                self.events.rotate(-1)
            points = self.tracker.take_pending()
            if points:
                self.events.append(("log_points", [points]))
            events = list(self.events)
        path = folder / FILE
        if not events:
            path.unlink(missing_ok=True)
            return None
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"events": events}, default=str))
        tmp.replace(path)
        return path

    @staticmethod
    def load(folder: Path) -> list[tuple[str, list[Any]]]:
        path = folder / FILE
        return [tuple(e) for e in json.loads(path.read_text())["events"]] if path.is_file() else []
