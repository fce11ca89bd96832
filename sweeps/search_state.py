"""The search's durable state (torch-, Ray- and Optuna-free): which configurations (groups) the search
proposed, which Tune trial runs which repeat, what each repeat ended with, and the race's decisions.

Every change is appended to `<sweep>/search.jsonl` before it takes effect outside the driver (before Tune
starts the trial, before Optuna is told), and a resumed sweep replays the log: the restored state is
never older than what MLflow, the trial index or Optuna already hold, whenever the driver was killed.
Appending keeps the cost of a change constant, however long the sweep. `status` and `report` read the
same log for the race's decisions.

Events (one JSON object a line; a line cut short by a kill is ignored):

    {"e": "group",  "g": id, "n": optuna number, "p": params}      a configuration was proposed
    {"e": "assign", "g": id, "r": repeat, "t": trial id}            a repeat was handed to a Tune trial
    {"e": "end",    "t": trial id, "s": state, "v": {metric: value} | null}   a trial ended
    {"e": "drop",   "g": id, "vs": id, "p": p value, "n": pairs, "k": repeats finished, "r": [paired repeats]}
    {"e": "survive", ...the same}                                   ran every repeat without being dropped
    {"e": "told",   "g": id, "n": optuna number}                    Optuna was told the group's value (in
                                                                    trial n: a new one when told again)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.groups import Group, Repeat

FILE = "search.jsonl"


@dataclass(frozen=True)
class Decision:
    """The race's decision on a group: dropped (worse than the incumbent) or survived (ran every repeat)."""

    group: str
    decision: str  # "dropped" | "survived"
    vs: str  # the incumbent at the decision
    p: float  # one-sided p-value of the paired test against it (NaN: the group was the incumbent)
    n: int  # pairs the test used (repeats both had finished)
    k: int  # the group's finished repeats at the decision
    pairs: tuple[int, ...] = ()  # the repeats the test paired


@dataclass
class SearchState:
    groups: dict[str, Group] = field(default_factory=dict)
    trial_slot: dict[str, tuple[str, int]] = field(default_factory=dict)  # trial id -> (group, repeat)
    decisions: dict[str, Decision] = field(default_factory=dict)
    told: set[str] = field(default_factory=set)
    path: Path | None = None  # the log; None: in memory only (tests, benchmarks)

    # ---- changes (each one logged first) ------------------------------------------------------

    def add_group(self, gid: str, number: int, params: dict[str, Any]) -> Group:
        self._log({"e": "group", "g": gid, "n": number, "p": params})
        return self._group(gid, number, params)

    def assign(self, gid: str, repeat: int, trial_id: str) -> None:
        self._log({"e": "assign", "g": gid, "r": repeat, "t": trial_id})
        self._assign(gid, repeat, trial_id)

    def end(self, trial_id: str, status: str, values: dict[str, float] | None) -> bool:
        """Record how a trial ended; False (and nothing recorded) for a trial the search does not know,
        or one whose repeat has ended already (a trial Tune runs again after a resume)."""
        slot = self.trial_slot.get(trial_id)
        if slot is None or self.repeat(*slot).status in ("TERMINATED", "ERROR", "STOPPED"):
            return False
        self._log({"e": "end", "t": trial_id, "s": status, "v": values})
        self._end(trial_id, status, values)
        return True

    def decide(self, d: Decision) -> None:
        self._log({"e": "drop" if d.decision == "dropped" else "survive", "g": d.group, "vs": d.vs,
                   "p": d.p, "n": d.n, "k": d.k, "r": list(d.pairs)})
        self.decisions[d.group] = d

    def mark_told(self, gid: str) -> None:
        """Optuna holds the group's value, in its trial `number` (a new one when it was told again)."""
        self._log({"e": "told", "g": gid, "n": self.groups[gid].number})
        self.told.add(gid)

    # ---- reading ------------------------------------------------------------------------------

    def repeat(self, gid: str, r: int) -> Repeat:
        return self.groups[gid].repeats[r]

    def dropped(self, gid: str) -> bool:
        d = self.decisions.get(gid)
        return d is not None and d.decision == "dropped"

    def ended(self, g: Group) -> int:
        return sum(rep.status in ("TERMINATED", "ERROR", "STOPPED") for rep in g.repeats.values())

    def running(self, g: Group) -> int:
        return len(g.repeats) - self.ended(g)

    # ---- the log --------------------------------------------------------------------------------

    def _log(self, event: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(event, default=_plain) + "\n"
        # One write per event, flushed: a killed driver (SIGKILL) loses nothing the kernel has, and leaves
        # at most one partial last line, which replay skips.
        with self.path.open("a") as f:
            f.write(line)

    def _group(self, gid: str, number: int, params: dict[str, Any]) -> Group:
        g = self.groups[gid] = Group(gid, dict(params), number=number)
        return g

    def _assign(self, gid: str, repeat: int, trial_id: str) -> None:
        g = self.groups[gid]
        old = g.repeats.get(repeat)
        if old is not None:
            self.trial_slot.pop(old.trial_id, None)  # a repeat handed out again after a resume
            if old.status == "ERROR":  # restarted (`resume --restart-errored`): what Optuna was told will change
                self.told.discard(gid)
        g.repeats[repeat] = Repeat(trial_id, "RUNNING")
        self.trial_slot[trial_id] = (gid, repeat)

    def _end(self, trial_id: str, status: str, values: dict[str, float] | None) -> None:
        rep = self.repeat(*self.trial_slot[trial_id])
        rep.status = status
        rep.metrics = dict(values) if values is not None and status == "TERMINATED" else None

    @classmethod
    def load(cls, path: Path) -> SearchState:
        """The state the log at `path` records (an empty state if there is none yet); appends go there."""
        state = cls(path=None)
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:  # the last line of a log whose writer was killed mid-write
                    continue
                state._apply(event)
        state.path = path
        return state

    def _apply(self, e: dict[str, Any]) -> None:
        kind = e["e"]
        if kind == "group":
            self._group(e["g"], int(e["n"]), e["p"])
        elif kind == "assign":
            self._assign(e["g"], int(e["r"]), e["t"])
        elif kind == "end" and e["t"] in self.trial_slot:
            self._end(e["t"], e["s"], e["v"])
        elif kind in ("drop", "survive"):
            p = math.nan if e["p"] is None else float(e["p"])
            self.decisions[e["g"]] = Decision(e["g"], "dropped" if kind == "drop" else "survived", e["vs"], p,
                                              int(e["n"]), int(e["k"]), tuple(e.get("r", ())))
        elif kind == "told":
            self.told.add(e["g"])
            if "n" in e:  # told again as a new Optuna trial
                self.groups[e["g"]].number = int(e["n"])


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)


def read_decisions(root: Path) -> dict[str, Decision]:
    """The race's decisions recorded in a sweep folder (for `status` and `report`)."""
    return SearchState.load(root / FILE).decisions


class LogReader:
    """Follows a sweep's search log from another part of the driver (the race scheduler, the MLflow
    callback): each `poll` reads only what was appended since the last one, and nothing when the file has
    not grown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.decisions: dict[str, Decision] = {}
        self._offset = 0

    def poll(self) -> list[Decision]:
        """The decisions appended since the last poll."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size <= self._offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read(size - self._offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete)
        state = SearchState()
        new = []
        for line in complete.decode().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("e") in ("drop", "survive"):
                state._apply(event)
                new.append(state.decisions[event["g"]])
        self.decisions.update((d.group, d) for d in new)
        return new

    def dropped(self, gid: str) -> bool:
        self.poll()
        d = self.decisions.get(gid)
        return d is not None and d.decision == "dropped"
