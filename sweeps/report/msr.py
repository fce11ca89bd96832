"""The MSR kind's part of the report (its record's `report` entry): meta-test MSE per problem and model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sweeps.config import SweepConfig
from sweeps.groups import Group


def msr_table(cfg: SweepConfig, groups: Sequence[Group], out: Path) -> str:
    """msr_table.csv: meta-test MSE (mean and 95% CI over repeats) per problem and model; returns it as
    text for the report's printout."""
    rows = []
    for g in groups:
        s = g.stats("meta_test/mse")
        rows.append({"problem": g.config["msr.problem"], "model": g.config["msr.model"],
                     "mse": s.mean, "ci95_low": s.ci95_low, "ci95_high": s.ci95_high, "n": s.n})
    if not rows:
        return ""
    table = pd.DataFrame(rows)
    table.to_csv(out / "msr_table.csv", index=False)
    half = (table["ci95_high"] - table["ci95_low"]) / 2
    cell = table["mse"].map("{:.3f}".format) + " ± " + half.map(lambda h: "-" if math.isnan(h) else f"{h:.3f}")
    text = table.assign(cell=cell).pivot(index="problem", columns="model", values="cell").to_string()
    return "meta-test MSE, mean ± 95% CI half-width over repeats:\n" + str(text)
