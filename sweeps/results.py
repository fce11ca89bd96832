"""The trial result contract, torch- and Ray-free: what a trial writes, where the driver keeps it, and how
`status`, `report` and the MLflow callback read it.

A trial's report to Tune may carry a checkpoint folder holding:

    state.pt              trainer state for an exact resume (torch; read by the trial only)
    meta.json             {"epoch": e} or {"iteration": i}
    final.json            final metrics (flat numbers), in the trial's last checkpoint only
    per_class.parquet     per-class table (class, train_count, accuracy, ekld, consistency, probe columns)
    curves.json           metric series of the final model: name -> {step: value} (the probes' curves)
    ekld_vs_class_size.png
    generator.pt, samples.png   a generator trial's model and sample grid
    sharing_pattern.png   an MSR trial's learned sharing pattern
    fatal.json            a non-retryable failure: a retry fails at once with the same reason

The result that carries the final checkpoint also carries `trial/final = 1`. The driver copies a finished
trial's result files (those its kind declares, sweeps.kinds) into `<sweep>/results/<trial_id>/`, and keeps
one record per trial in `<sweep>/trials.json` (state, Tune config, last metrics, error).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

STATE = "state.pt"
META = "meta.json"
FINAL = "final.json"
PER_CLASS = "per_class.parquet"
CURVES = "curves.json"
EKLD_PNG = "ekld_vs_class_size.png"
GENERATOR_PT = "generator.pt"
SAMPLES_PNG = "samples.png"
SHARING_PNG = "sharing_pattern.png"
FATAL = "fatal.json"
FINAL_KEY = "trial/final"  # set on the result whose checkpoint holds FINAL
GROUP_KEY, REPEAT_KEY = "_group", "_repeat"  # bookkeeping keys in a Tune config: not config keys


def sampled_values(config: dict[str, Any]) -> dict[str, Any]:
    """The config keys a trial's Tune config sets (its bookkeeping keys left out)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def short(v: Any) -> str:
    """A value as labels and progress lines show it: floats to 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def describe(values: Mapping[str, Any], full_keys: bool = False, sep: str = ", ") -> str:
    """'gen_frac=0.6, seed=1': searched values for a label (the last part of each key unless full_keys)."""
    return sep.join(f"{k if full_keys else k.split('.')[-1]}={short(v)}" for k, v in values.items())


@dataclass
class TrialRecord:
    """One trial as the driver last saw it."""

    trial_id: str
    status: str  # PENDING, RUNNING, TERMINATED or ERROR (Tune's states)
    config: dict[str, Any]  # Tune's config: sampled values and bookkeeping keys
    last: dict[str, float] = field(default_factory=dict)  # numbers of its latest result
    error: str = ""
    stopped_early: bool = False  # stopped by ASHA or the time budget, and evaluated where it stopped
    stopped_by_race: bool = False  # stopped by the race (its group was dropped): no final results
    final: bool = False  # its final results are under results/<trial_id>/

    @property
    def group_id(self) -> str:
        return str(self.config.get(GROUP_KEY, self.trial_id))

    @property
    def repeat(self) -> int:
        return int(self.config.get(REPEAT_KEY, 0))

    @property
    def slot(self) -> tuple[str, int]:
        """(group, repeat): what the trial runs for the search, kept when a lost trial runs again."""
        return self.group_id, self.repeat


def numbers(result: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a result dict (bools and strings dropped)."""
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def journal_of(index: Path) -> Path:
    """Records changed since the index was last written, one JSON line each (`trials.jsonl`)."""
    return index.with_suffix(".jsonl")


def add_record(records: dict[str, TrialRecord], rec: TrialRecord) -> None:
    """Put `rec` in `records`. A new trial in a slot drops the slot's unfinished records: a repeat that a
    killed driver's Tune lost runs again under a new id."""
    if rec.trial_id not in records:
        for k in [k for k, r in records.items() if r.slot == rec.slot and r.status != "TERMINATED"]:
            del records[k]
    records[rec.trial_id] = rec


def read_index(path: Path) -> list[TrialRecord]:
    """The index as last written, with the journal's later records over it."""
    records: dict[str, TrialRecord] = {}
    if path.is_file():
        records = {r["trial_id"]: TrialRecord(**r) for r in json.loads(path.read_text())["trials"]}
    journal = journal_of(path)
    if journal.is_file():
        for line in journal.read_text().splitlines():
            with contextlib.suppress(ValueError, TypeError):  # a line cut short by a kill
                add_record(records, TrialRecord(**json.loads(line)))
    return list(records.values())


def write_index(path: Path, records: list[TrialRecord]) -> None:
    """The whole index, then an empty journal (a kill in between leaves a journal the index already holds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"trials": [asdict(r) for r in records]})
    journal_of(path).unlink(missing_ok=True)


def append_record(path: Path, rec: TrialRecord) -> None:
    """One changed record onto the index's journal: a line, not the whole index, per trial event."""
    with journal_of(path).open("a") as f:
        f.write(json.dumps(asdict(rec), default=str) + "\n")


def keep_results(checkpoint_dir: Path, dest: Path, files: Sequence[str]) -> bool:
    """Copy a final checkpoint's result `files` into `dest`; False when it holds no final.json."""
    if not (checkpoint_dir / FINAL).is_file():
        return False
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in files:
        if (checkpoint_dir / name).is_file():
            shutil.copyfile(checkpoint_dir / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return True


def read_final(folder: Path) -> dict[str, Any] | None:
    path = folder / FINAL
    return dict(json.loads(path.read_text())) if path.is_file() else None


def read_curves(folder: Path) -> dict[str, dict[int, float]]:
    path = folder / CURVES
    if not path.is_file():
        return {}
    return {name: {int(k): float(v) for k, v in series.items()} for name, series in json.loads(path.read_text()).items()}


def read_per_class(folder: Path) -> pa.Table | None:
    path = folder / PER_CLASS
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    return pq.read_table(path)


PER_CLASS_SERIES = {"ekld": "per_class/ekld", "accuracy": "per_class/acc", "consistency": "per_class/consistency"}


def per_class_series(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Per-class rows (a per-class table's, or a group's mean table's) as metric series with step =
    class-size rank (0 = the largest class, ties by class id), so that MLflow's line chart of several
    runs draws them against class size."""
    rows = sorted(rows, key=lambda r: (-r["train_count"], r.get("class", r.get("rank", 0))))
    return {name: {rank: float(r[col]) for rank, r in enumerate(rows)}
            for col, name in PER_CLASS_SERIES.items() if rows and col in rows[0]}


def _sort_key(values: dict[str, float], objectives: Sequence[tuple[str, str]]) -> tuple[float, ...]:
    """Lexicographic, better first: NaN or missing after every number."""
    key = []
    for metric, mode in objectives:
        v = values.get(metric, float("nan"))
        key.append(float("inf") if v != v else (-v if mode == "max" else v))
    return tuple(key)


def best_of(rows: list[dict[str, float]], objectives: Sequence[tuple[str, str]]) -> int | None:
    """Index of the best row: by the first objective, ties broken by the next ones (best_rule says so)."""
    scored = [i for i, r in enumerate(rows) if r.get(objectives[0][0], float("nan")) == r.get(objectives[0][0])]
    return min(scored, key=lambda i: _sort_key(rows[i], objectives)) if scored else None


def best_rule(objectives: Sequence[tuple[str, str]]) -> str:
    first = f"{'highest' if objectives[0][1] == 'max' else 'lowest'} {objectives[0][0]}"
    ties = [f"{'highest' if m == 'max' else 'lowest'} {k}" for k, m in objectives[1:]]
    return first + (f", ties broken by {', then '.join(ties)}" if ties else "")


def pareto_front(rows: list[dict[str, float]], objectives: Sequence[tuple[str, str]]) -> list[int]:
    """Indices of the rows no other row dominates (at least as good on every objective, better on one)."""
    def vec(r: dict[str, float]) -> list[float]:
        return [(-1 if m == "max" else 1) * r.get(k, float("nan")) for k, m in objectives]  # lower is better

    points = [(i, vec(r)) for i, r in enumerate(rows) if all(v == v for v in vec(r))]
    return [i for i, a in points if not any(all(y <= x for x, y in zip(a, b, strict=True)) and b != a
                                            for _, b in points)]


def loggable(result: dict[str, Any]) -> dict[str, Any]:
    """The plain values of a Tune result (numbers, strings): what the driver logs of it, as plain data."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
