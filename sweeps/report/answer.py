"""The sweep's answer, stated where researchers look: the best configuration (sweeps.report.groups.best_group,
the one rule of the closing summary, the report and MLflow) and its contrast with its partner in the trial
kind's default contrast (the classifier's: GIT against its baseline at the same other settings).

It becomes one sentence a person reads (the first of the parent run's description, and of the closing
summary), the parent's tag `gitsweep.best_group` and its metrics `contrast/<metric>/diff`, `/ci95_low`,
`/ci95_high` and `/p` (paired t) for each search metric: contrast.csv's row of that pair, as rounded there.

When the best configuration is side B (the baseline won), the contrast shown is the best side-A group's
against it: the row of contrast.csv that says by how much the baseline won.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import pandas as pd

from sweeps.config import SweepConfig
from sweeps.groups import Group
from sweeps.kinds import kind_of
from sweeps.report import groups as gr

REPEAT_UNITS = {"seed": "seeds", "dataset.instance": "data set instances"}
CONTRAST_PARTS = {"diff": "diff", "ci95_low": "ci95_low", "ci95_high": "ci95_high", "p": "p_ttest"}


@dataclass(frozen=True)
class Answer:
    """The best group, the default contrast's pair that involves it (A, B), that pair's contrast rows (as
    contrast.csv holds them, full precision) and the sentence."""

    best: Group | None
    pair: tuple[Group, Group] | None
    rows: pd.DataFrame
    sentence: str

    def is_pair(self, a: Group, b: Group) -> bool:
        return self.pair is not None and self.pair[0] is a and self.pair[1] is b

    def metrics(self, names: Sequence[str]) -> dict[str, float]:
        """`contrast/<metric>/diff|ci95_low|ci95_high|p` of the pair, rounded as contrast.csv rounds them."""
        out: dict[str, float] = {}
        for m in names:
            found = self.rows[self.rows["metric"] == m] if len(self.rows) else self.rows
            if len(found):
                row = found.iloc[0]
                out.update({f"contrast/{m}/{part}": gr.rounded(float(row[col]), col)
                            for part, col in CONTRAST_PARTS.items()})
        return out


def unit(repeat_over: str) -> str:
    return REPEAT_UNITS.get(repeat_over, f"values of {repeat_over}")


def answer_pair(cfg: SweepConfig, groups: Sequence[Group], best: Group,
                dropped: Collection[str] = ()) -> tuple[Group, Group] | None:
    """The default contrast's pair that involves the best group: (best, its baseline) when it is side A,
    else (the best side-A group paired with it, best); None when it pairs with nothing."""
    pairs = [p for p in gr.default_pairs(cfg, groups) if p[0].finished and p[1].finished]
    as_a = [p for p in pairs if p[0] is best]
    if as_a:  # several baselines would agree on every other searched key: the one with the most pairs
        return max(as_a, key=lambda p: len(set(p[0].finished) & set(p[1].finished)))
    challengers = [a for a, b in pairs if b is best and a.group_id not in dropped]
    top = gr.best_group(cfg, challengers)
    return None if top is None else (top, best)


def find_answer(cfg: SweepConfig, groups: Sequence[Group], dropped: Collection[str] = ()) -> Answer:
    best = gr.best_group(cfg, groups, dropped)
    pair = answer_pair(cfg, groups, best, dropped) if best is not None and cfg.search.repeats > 1 else None
    keys = list(cfg.search.space)
    rows = gr.contrast_rows([pair], keys, cfg.search.metric) if pair else pd.DataFrame(columns=gr.CONTRAST_COLUMNS)
    return Answer(best, pair, rows, sentence(cfg, best, pair, rows))


def _mean(g: Group, m: str) -> str:
    s = g.stats(m)
    return f"{m} {s.mean:.4f}" + (f" [95% CI {s.ci95_low:.4f}, {s.ci95_high:.4f}]" if s.n > 1 else "")


def _effects(rows: pd.DataFrame, metrics: Sequence[str]) -> str:
    parts = []
    for m in metrics:
        found = rows[rows["metric"] == m]
        if len(found):
            r = found.iloc[0]
            p = "n/a" if not math.isfinite(r["p_ttest"]) else f"{r['p_ttest']:.2g}"
            parts.append(f"{m} by {r['diff']:+.4f} [95% CI {r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}] (p = {p})")
    return " and ".join(parts)


def sentence(cfg: SweepConfig, best: Group | None, pair: tuple[Group, Group] | None, rows: pd.DataFrame) -> str:
    """One sentence: which configuration won, by how much against its baseline, with the CI and n."""
    if best is None:
        return "No configuration has finished yet, so the sweep has no answer."
    keys, metrics = list(cfg.search.space), list(cfg.search.metric)
    # the rule in short (sweeps.results.best_rule has the ties too, which the closing summary prints)
    rule = f"{'highest' if cfg.search.mode[0] == 'max' else 'lowest'} mean {metrics[0]}"
    if cfg.search.repeats < 2:
        values = ", ".join(_mean(best, m) for m in metrics)
        return (f"The best configuration is {gr.label(best, keys)}, with {values}; with one trial per "
                "configuration there is no confidence interval and no contrast.")
    contrast = kind_of(cfg.trial).contrast
    n = f"n = {len(best.finished)} {unit(cfg.search.repeat_over)}"
    if pair is None or contrast is None:
        values = "; ".join(_mean(best, m) for m in metrics)
        why = ("this trial kind has no default contrast" if contrast is None else
               f"it has no partner in the {contrast.label} contrast")
        return f"The best configuration is {gr.label(best, keys)} ({rule}): {values}, {n}; {why}."
    a_name, b_name = (part.strip() for part in contrast.label.split(" - ", 1))
    a, b = pair
    paired = f"paired over n = {int(rows['n'].iloc[0])} {unit(cfg.search.repeat_over)}"
    if best is a:
        return (f"{a_name} {gr.label(a, keys)} is the best configuration ({rule}); against its {b_name} "
                f"{gr.label(b, keys)} it changes {_effects(rows, metrics)}, {paired}.")
    return (f"The {b_name} {gr.label(b, keys)} is the best configuration ({rule}); the best {a_name} "
            f"configuration, {gr.label(a, keys)}, differs from it by {_effects(rows, metrics)} "
            f"({contrast.label}, {paired}).")
