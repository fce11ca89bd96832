"""Sweep overhead: 4 short classifier trials at concurrency 2 (Ray Tune + Optuna + MLflow callback)
against the same 4 trainings back to back in this process, one thread each. A training on either side
ends as a trial does: final metrics, per_class.parquet and the eKLD-vs-class-size figure written.

Ideal parallel time is sequential / 2 (two trials at once on two cores); the printed ratio
sweep / (sequential / 2) is the cost of the machinery (Tune's set-up, trial actors, checkpoints,
reporting, MLflow writes); target <= 1.15. Both sides start timing in the same state: the
sequential loop with torch imported and the data set built; the sweep once Ray is up and its prestarted
workers have imported torch and the trial code (runner.WORKER_PRELOAD; they go on importing for a few
seconds after ray.init returns) and the SQLite tables exist (once per storage). That start-up is paid
once per session and printed separately, with the ratio it would give if counted. The span from the
first trial's start to the last one's end is printed as well: the rest is Tune's set-up and the final
MLflow reconcile.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from dataclasses import dataclass, replace
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


def sequential(cfg, seeds: list[int]) -> float:  # one process, one thread, the trainings back to back
    import matplotlib.pyplot  # noqa: F401  (imported before timing, as the sweep's workers preload it)
    import pyarrow.parquet as pq
    import torch

    from gitlib.data.store import get_dataset
    from gitlib.tracking.plots import ekld_vs_class_size
    from gitlib.train.classifier import ClassifierTrainer

    torch.set_num_threads(1)
    data = get_dataset(cfg.dataset, cfg.storage_path)
    out = cfg.storage_path / "sequential"
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    for seed in seeds:
        trainer = ClassifierTrainer(cfg.classifier, data, seed, torch.device("cpu"))
        while trainer.epoch < cfg.classifier.epochs:
            trainer.run_epoch()
        final, table = trainer.final_metrics()
        pq.write_table(table, out / f"per_class_{seed}.parquet")
        ekld_vs_class_size(table, out / f"ekld_vs_class_size_{seed}.png", spearman=final.get("ekld/size_spearman"))
    return time.perf_counter() - start


@dataclass
class SweepTiming:
    wall: float  # runner.start, from the call to its return
    startup: float  # ray.init
    preload: float  # after ray.init, until the prestarted workers had imported the trial code
    trials: list[tuple[float, float]]  # (start, end) of each trial's MLflow run, s after runner.start began
    fresh_workers: bool  # a trial ran in a process other than the prestarted ones


def sweep(cfg) -> SweepTiming:
    import ray

    from sweeps import runner, worker_procs

    os.environ["GITSWEEP_NUM_CPUS"] = str(CONCURRENCY)
    t0 = time.perf_counter()
    runner.connect_ray(None)
    startup = time.perf_counter() - t0
    try:
        pids = worker_procs.wait_until_idle(CONCURRENCY)
        preload = time.perf_counter() - t0 - startup
        tracker = runner._tracker(cfg, None)
        tracker.client.search_experiments()  # creates the SQLite tables: once per storage
        began, start = time.time(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the per-result progress lines
            code = runner.start(cfg)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    if code != 0:
        raise RuntimeError(f"benchmark sweep failed (exit {code})")
    trials = runner.load_trials(runner.SweepPaths(cfg.storage_path / "sweeps" / cfg.name))
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`gitsweep.role` = 'classifier'")
    spans = sorted((r.info.start_time / 1000 - began, r.info.end_time / 1000 - began) for r in runs)
    return SweepTiming(wall, startup, preload, spans, not {t.last_result["pid"] for t in trials} <= pids)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gitsweep-bench-") as tmp:
        cfg = _config(Path(tmp))
        # Half the sequential trainings before the sweep and half after: this machine's speed drifts by
        # 10% or more over minutes, and both sides of the ratio then see the same drift.
        half = TRIALS // 2
        seq = sequential(cfg, SEEDS[:half])  # also builds the data set, so the sweep's trials only read it
        t = sweep(replace(cfg, name="bench-sweep"))
        seq += sequential(cfg, SEEDS[half:])
    ideal = seq / CONCURRENCY
    span = max(end for _, end in t.trials) - min(start for start, _ in t.trials)
    print(f"sequential: {TRIALS} trainings back to back, 1 thread (half before the sweep, half after): "
          f"{seq:.1f} s ({seq / TRIALS:.1f} s each)")
    print(f"sweep: {TRIALS} trials at concurrency {CONCURRENCY}: {t.wall:.1f} s (ideal {ideal:.1f} s); "
          f"first trial start to last trial end: {span:.1f} s")
    print("trials (start-end, s into the sweep): " + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in t.trials))
    if t.fresh_workers:
        print("note: a trial ran in a freshly started worker process, not a prestarted one")
    print(f"ratio sweep / (sequential / {CONCURRENCY}): {t.wall / ideal:.2f} (target <= 1.15); "
          f"trial span only: {span / ideal:.2f}")
    once = t.startup + t.preload
    print(f"not in the ratio, paid once per session: ray.init {t.startup:.1f} s, then the workers' imports "
          f"{t.preload:.1f} s; with them the ratio would be {(t.wall + once) / ideal:.2f}")


if __name__ == "__main__":
    main()
