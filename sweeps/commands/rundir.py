"""Run folders of the single-run commands (`train classifier`, `train generator`)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path


def new_run_dir(storage: Path, kind: str) -> Path:
    """A fresh `<storage>/runs/<kind>-<UTC timestamp>[-n]/`, created here so two runs never share one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = storage / "runs" / f"{kind}-{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # two runs in the same second get their own folders
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
