"""Sweep overhead: 4 short classifier trials at concurrency 2 (Ray Tune + Optuna + MLflow callback)
against the same 4 trainings back to back in this process, one thread each.

Ideal parallel time is sequential / 2 (two trials at once on two cores); the printed ratio
sweep / (sequential / 2) is the cost of the machinery (Tune's set-up, trial actors, checkpoints,
reporting, MLflow writes); target <= 1.15. The sequential loop starts timing with torch imported and
the data set built; the sweep once ray.init has returned (printed separately: a session pays it once)
and the SQLite tables exist (once per storage). Ray's prestarted workers go on importing the trial code
after ray.init returns: whatever of that is left counts. The span from the first trial's start to the
last one's end is printed as well: the rest is Tune's set-up and the final MLflow reconcile.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

TRIALS = 4
CONCURRENCY = 2
SEEDS = list(range(TRIALS))
EXTRA = [a for a in os.environ.get("BENCH_SWEEP_SET", "").split() if a]  # extra --set overrides


def _config(storage: Path):  # -> SweepConfig
    from sweeps.config import load_config

    overrides = [
        "name=bench", f"storage={storage}",
        # trials sized like the sizing run (digits 16x16, ratio 100, 30 epochs: ~10-25 s each), so
        # the ratio measures the per-trial machinery rather than a fixed start-up spread over tiny trials
        "dataset.imbalance_ratio=100", "dataset.max_per_class=500", "dataset.test_per_class=50",
        "classifier.augment=none", "classifier.ekld_samples=30", "classifier.ekld_per_class=50",
        *EXTRA,
        f"search.num_samples={TRIALS}", f"search.max_concurrent={CONCURRENCY}", "search.sampler=grid",
        "search.points_to_evaluate=[]",
        "search.space={seed: {type: categorical, choices: " + str(SEEDS) + "}}",
        "resources.cpu=1",
    ]
    cfg, _ = load_config("demo", overrides)
    return cfg


def sequential(cfg) -> float:  # one process, one thread, the trainings back to back
    import torch

    from gitlib.data.store import get_dataset
    from gitlib.train.classifier import ClassifierTrainer

    torch.set_num_threads(1)
    data = get_dataset(cfg.dataset, cfg.storage_path)
    start = time.perf_counter()
    for seed in SEEDS:
        trainer = ClassifierTrainer(cfg.classifier, data, seed, torch.device("cpu"))
        while trainer.epoch < cfg.classifier.epochs:
            trainer.run_epoch()
        trainer.final_metrics()
    return time.perf_counter() - start


def sweep(cfg) -> tuple[float, float, float]:
    """(wall time of runner.start, span from the first trial's start to the last trial's end, ray.init)."""
    import ray

    from sweeps import runner

    os.environ["GITSWEEP_NUM_CPUS"] = str(CONCURRENCY)
    t0 = time.perf_counter()
    runner.connect_ray(None)
    startup = time.perf_counter() - t0
    try:
        # Ray's prestarted workers import the trial code meanwhile (runner.WORKER_PRELOAD); not waited for.
        runner._tracker(cfg, None).client.search_experiments()  # creates the SQLite tables: once per storage
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the per-result progress lines
            code = runner.start(cfg)
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    if code != 0:
        raise RuntimeError(f"benchmark sweep failed (exit {code})")
    trials = runner.load_trials(runner.SweepPaths(cfg.storage_path / "sweeps" / cfg.name))
    ends = [t.last_result["timestamp"] for t in trials]
    starts = [t.last_result["timestamp"] - t.last_result["time_total_s"] for t in trials]
    return elapsed, max(ends) - min(starts), startup


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gitsweep-bench-") as tmp:
        cfg = _config(Path(tmp))
        seq = sequential(cfg)  # also builds the data set, so the sweep's trials only read it
        par, span, startup = sweep(replace(cfg, name="bench-sweep"))
    ideal = seq / CONCURRENCY
    print(f"sequential: {TRIALS} trainings back to back, 1 thread: {seq:.1f} s")
    print(f"sweep: {TRIALS} trials at concurrency {CONCURRENCY}: {par:.1f} s (ideal {ideal:.1f} s); "
          f"first trial start to last trial end: {span:.1f} s")
    print(f"ratio sweep / (sequential / {CONCURRENCY}): {par / ideal:.2f} (target <= 1.15); "
          f"trial span only: {span / ideal:.2f}")
    print(f"not in the ratio, paid once per session: ray.init {startup:.1f} s; with it the ratio would be "
          f"{(par + startup) / ideal:.2f}")


if __name__ == "__main__":
    main()
