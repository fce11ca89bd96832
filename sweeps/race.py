"""Racing: spend repeats where they decide something (docs/sweeps.md, "Racing"). Torch-, Ray- and
Optuna-free: the searcher (sweeps.search) asks this module which repeat to run next and which groups
to drop; the benchmarks run the same functions without Ray.

- Pairing: repeat r of every group runs the repeat key at base + r, so two groups pair up by repeat.
- Incumbent: among the groups not dropped, those with the most finished repeats (a finite value of the
  race metric); of them the best by the group statistic (`search.group_stat`), ties to the older group.
- Dropping: a group other than the incumbent with at least `min_repeats` finished repeats is tested
  against the incumbent on the repeats both have finished; a one-sided paired test (t or Wilcoxon
  signed-rank) that it is worse at `alpha` drops it: it gets no new repeats, its running ones are stopped.
  A group is tested again whenever its own or the incumbent's finished repeats (or the incumbent) change.
- Earning repeats, in this order of priority when Tune asks for a trial: the incumbent's next repeat
  while some other group has started more repeats than it (elitist: challengers are judged on repeats
  both have run); the first `min_repeats` repeats of a group; a new configuration; then the next repeat of
  a group that is not dropped and has nothing running (the group with the fewest repeats first).
- A group that is not dropped ends when all `repeats` of it have ended: it survived.

Without racing the same plan runs with `min_repeats = repeats` and no test: every configuration gets all
its repeats, one configuration after the other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sweeps.groups import Group, stats
from sweeps.search_state import Decision, SearchState

NEW = ("", -1)  # next_slot: propose a new configuration


@dataclass(frozen=True)
class RacePlan:
    repeats: int  # the most repeats a group gets
    min_repeats: int  # repeats every group runs before it can be dropped (= repeats without racing)
    metric: str  # what the race compares
    mode: str  # max | min
    stat: str = "mean"  # the group statistic that ranks groups (search.group_stat)
    test: str | None = None  # t | wilcoxon; None: no racing
    alpha: float = 0.05


def finite_values(g: Group, metric: str) -> dict[int, float]:
    return {r: v for r, v in g.values(metric).items() if math.isfinite(v)}


def incumbent(state: SearchState, plan: RacePlan) -> str | None:
    """The group every other is compared with (see the module doc); None before any finished repeat."""
    live = [(gid, finite_values(g, plan.metric)) for gid, g in state.groups.items() if not state.dropped(gid)]
    live = [(gid, v) for gid, v in live if v]
    if not live:
        return None
    most = max(len(v) for _, v in live)
    sign = 1.0 if plan.mode == "max" else -1.0
    best = max((sign * stats(v.values()).value(plan.stat, plan.mode), -i, gid)
               for i, (gid, v) in enumerate(live) if len(v) == most)
    return best[2]


def one_sided_p(challenger: Mapping[int, float], incumbent_values: Mapping[int, float], mode: str,
                test: str) -> tuple[float, tuple[int, ...]]:
    """(p, pairs): the one-sided paired test that the challenger is worse than the incumbent, over the
    repeats both finished. NaN with fewer than 2 pairs. A constant difference is decided by its sign
    (p = 0 when worse, 1 otherwise): the t statistic is infinite there."""
    common = tuple(sorted(set(challenger) & set(incumbent_values)))
    n = len(common)
    if n < 2:
        return math.nan, common
    d = np.asarray([challenger[r] - incumbent_values[r] for r in common], dtype=np.float64)
    if mode == "min":
        d = -d  # worse is always d < 0 from here on
    if test == "wilcoxon":
        if not np.any(d != 0):
            return 1.0, common
        from scipy.stats import wilcoxon

        return float(wilcoxon(d, alternative="less").pvalue), common
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return (0.0 if d[0] < 0 else 1.0), common
    from scipy.special import stdtr

    t = float(d.mean()) / (sd / math.sqrt(n))
    return float(stdtr(n - 1, t)), common  # P(T <= t) under "no difference"


class Race:
    """The plan applied to a search state: decisions after each ended repeat, and the next slot to run."""

    def __init__(self, plan: RacePlan) -> None:
        self.plan = plan
        # group -> (incumbent, its finished repeats, the group's) at its last test, and that test's (p, n):
        # a group is tested again only when one of them changed
        self._tested: dict[str, tuple[str, int, int]] = {}
        self._last: dict[str, tuple[float, tuple[int, ...]]] = {}

    def decide(self, state: SearchState) -> list[Decision]:
        """New decisions given the state (recorded in it): drops, and survivals of groups whose repeats
        have all ended. Deterministic in the state, and a fixed point: deciding again adds nothing."""
        plan, out = self.plan, []
        inc = incumbent(state, plan) if plan.test else None
        inc_values = finite_values(state.groups[inc], plan.metric) if inc else {}
        for gid, g in state.groups.items():
            if gid in state.decisions:
                continue
            values = finite_values(g, plan.metric)
            key = (inc or "", len(inc_values), len(values))
            if inc is not None and gid != inc and self._tested.get(gid) != key:
                p, pairs = self._last[gid] = one_sided_p(values, inc_values, plan.mode, plan.test or "t")
                self._tested[gid] = key
                if len(values) >= plan.min_repeats and p < plan.alpha:
                    out.append(Decision(gid, "dropped", inc, p, len(pairs), len(values), pairs))
                    state.decide(out[-1])
                    continue
            if plan.test and state.ended(g) >= plan.repeats:
                p, pairs = self._last.get(gid, (math.nan, ())) if gid != inc else (math.nan, ())
                out.append(Decision(gid, "survived", inc or gid, p, len(pairs), len(values), pairs))
                state.decide(out[-1])
        return out

    def next_slot(self, state: SearchState, can_add: bool) -> tuple[str, int] | None:
        """(group, repeat) to run next, NEW for a new configuration, or None: nothing to run now."""
        plan = self.plan
        live = {gid: g for gid, g in state.groups.items() if not state.dropped(gid)}
        inc = incumbent(state, plan) if plan.test else None
        if inc is not None:
            ahead = max((len(g.repeats) for gid, g in live.items() if gid != inc), default=0)
            if len(live[inc].repeats) < min(ahead, plan.repeats):
                return inc, len(live[inc].repeats)
        for gid, g in live.items():
            if len(g.repeats) < plan.min_repeats:
                return gid, len(g.repeats)
        if can_add:
            return NEW
        waiting = [(len(g.repeats), gid) for gid, g in live.items()
                   if len(g.repeats) < plan.repeats and state.running(g) == 0]
        if waiting:
            gid = min(waiting)[1]
            return gid, len(live[gid].repeats)
        return None

    def done(self, state: SearchState, can_add: bool) -> bool:
        """Nothing will ever be run again: no new configuration, and every group dropped or all its
        repeats handed out."""
        return not can_add and all(state.dropped(gid) or len(g.repeats) >= self.plan.repeats
                                   for gid, g in state.groups.items())
