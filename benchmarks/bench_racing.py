"""Racing against fixed repeats, on a known truth: does racing pick the truly best configuration as often
as running every configuration `REPEATS` times, and with how many trials?

Each sweep is the searcher itself (sweeps.search.GroupSearch, with its Optuna study in memory, without
Ray) over the synthetic kind's `synthetic.arm` grid: ARMS configurations whose true balanced accuracies
are exactly `arm_gap` apart (arm 0 the best), close enough that three repeats often cannot tell them
apart. A trial's value is what a synthetic trial reports (sweeps.synthetic.observed: the truth plus seed
noise); trials run two at a time with random durations, as on a cluster. Sweep i uses seeds
1000 i + r for repeat r in both arms of the comparison, so racing and fixed repeats see the same draws
wherever both run a repeat (a paired comparison), and search seed i. The pick is the configuration the
sweep reports as best: the best group mean among those with the most finished repeats (racing never picks
a dropped one). Printed: each policy's rate of picking arm 0 with its 95% Wilson interval, the paired
difference with its 95% interval, and the mean trials each used, at three noise levels.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from sweeps import results as rs
from sweeps.config import load_config
from sweeps.search import GroupSearch
from sweeps.synthetic import SyntheticConfig, observed

ARMS, REPEATS, MIN_REPEATS = 12, 10, 3
SWEEPS = int(os.environ.get("BENCH_RACING_SWEEPS", "200"))
GAP = 0.01
NOISE_LEVELS = (1.0, 2.0, 4.0)  # noise SD in units of the gap between neighbouring arms
CONCURRENCY = 2


@dataclass
class Outcome:
    correct: bool
    trials: int


def _searcher(racing: bool, noise: float, index: int) -> GroupSearch:
    sets = [f"search.repeats={REPEATS}", f"search.num_samples={ARMS}", "search.sampler=grid",
            f"search.seed={index}", "search.metric=test/balanced_acc", "search.mode=max", "search.space={}",
            f"search.space.synthetic.arm={{type: categorical, choices: {list(range(ARMS))}}}",
            f"synthetic.noise_sd={noise * GAP}", f"synthetic.arm_gap={GAP}"]
    if racing:
        sets.append(f"search.racing={{min_repeats: {MIN_REPEATS}, test: t, alpha: 0.05}}")
    cfg, _ = load_config("smoke", sets)
    return GroupSearch(cfg, None, f"bench-{index}")  # storage None: the Optuna study in memory


def one_sweep(racing: bool, noise: float, index: int) -> Outcome:
    """Run one sweep to its end: trials two at a time, each ending after a random duration."""
    search = _searcher(racing, noise, index)
    rng = np.random.default_rng([index, 7])
    running: list[tuple[float, str, int, int]] = []  # (end time, trial id, arm, repeat)
    now, started = 0.0, 0
    while True:
        while len(running) < CONCURRENCY:
            config = search.suggest(f"t{started}")
            if config is None or config == "FINISHED":
                break
            arm, r = int(config["synthetic.arm"]), int(config[rs.REPEAT_KEY])
            running.append((now + float(rng.uniform(0.8, 1.2)), f"t{started}", arm, r))
            started += 1
        if not running:
            break
        running.sort()
        now, trial_id, arm, r = running.pop(0)
        value = observed(SyntheticConfig(arm=arm, arm_gap=GAP, noise_sd=noise * GAP, instance_sd=0.0),
                         1000 * index + r, 0)
        search.on_trial_complete(trial_id, {"test/balanced_acc": value, rs.FINAL_KEY: 1})
        dropped = {gid for gid in search.state.groups if search.state.dropped(gid)}
        running = [t for t in running if search.state.trial_slot.get(t[1], ("", 0))[0] not in dropped]
    return Outcome(_pick(search) == 0, started)


def _pick(search: GroupSearch) -> int:
    live = [g for gid, g in search.state.groups.items() if not search.state.dropped(gid) and g.finished]
    most = max(len(g.finished) for g in live)
    best = max((g for g in live if len(g.finished) == most), key=lambda g: g.stats("test/balanced_acc").mean)
    return int(best.params["synthetic.arm"])


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion k / n."""
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def paired_difference(a: list[bool], b: list[bool]) -> tuple[float, float, float]:
    """Mean of a - b over paired sweeps, with its 95% normal interval."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{ARMS} configurations {GAP} apart in true balanced accuracy (arm 0 best), up to {REPEATS} repeats, "
          f"racing from {MIN_REPEATS} (paired t, alpha 0.05), {CONCURRENCY} trials at a time, {SWEEPS} sweeps "
          "per noise level")
    print(f"{'noise SD':>9}  {'fixed: picks best [95% CI]':>28}  {'racing: picks best [95% CI]':>29}  "
          f"{'racing - fixed [95% CI]':>26}  {'trials fixed':>12}  {'racing':>6}  {'saved':>6}")
    for level in NOISE_LEVELS:
        start = time.perf_counter()
        fixed = [one_sweep(False, level, i) for i in range(SWEEPS)]
        raced = [one_sweep(True, level, i) for i in range(SWEEPS)]
        kf, kr = sum(o.correct for o in fixed), sum(o.correct for o in raced)
        lf, hf = wilson(kf, SWEEPS)
        lr, hr = wilson(kr, SWEEPS)
        diff, dl, dh = paired_difference([o.correct for o in raced], [o.correct for o in fixed])
        tf, tr = np.mean([o.trials for o in fixed]), np.mean([o.trials for o in raced])
        print(f"{level:>6.1f} gap  {kf / SWEEPS:>8.1%} [{lf:.1%}, {hf:.1%}]    {kr / SWEEPS:>8.1%} [{lr:.1%}, "
              f"{hr:.1%}]    {diff:>+7.1%} [{dl:+.1%}, {dh:+.1%}]  {tf:>12.1f}  {tr:>6.1f}  {1 - tr / tf:>6.1%}"
              f"   ({time.perf_counter() - start:.0f} s)", flush=True)
