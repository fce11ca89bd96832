"""Sweep overhead: 4 short classifier trials at concurrency 2 (Ray Tune + Optuna + MLflow callback)
against the same 4 trainings back to back in this process, one thread each. A training on either side
ends as a trial does: final metrics, per_class.parquet and the eKLD-vs-class-size figure written.

Ideal parallel time is sequential / 2 (two trials at once on two cores); the printed ratio
sweep / (sequential / 2) is the cost of the machinery (Tune's set-up, trial actors, checkpoints,
reporting, MLflow writes); target <= 1.15. Both sides start timing in the same state: the
sequential loop with torch imported and the data set built; the sweep once Ray is up and its prestarted
workers have imported torch and the trial code (connect.WORKER_PRELOAD; they go on importing for seconds
after ray.init returns, and mark the end with a file: worker_procs.wait_until_idle) and the SQLite tables
exist (once per storage). That start-up is paid
once per session and printed separately, with the ratio it would give if counted. The span from the
first trial's start to the last one's end is printed as well: the rest is Tune's set-up and the final
MLflow reconcile. BENCH_SWEEP_REPEATS sweeps (default 3), each against the sequential halves around it;
the median ratio is the figure.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

CONCURRENCY = 2
REPEATS = int(os.environ.get("BENCH_SWEEP_REPEATS", "3"))
EXTRA = [a for a in os.environ.get("BENCH_SWEEP_SET", "").split() if a]  # extra --set overrides
# BENCH_SWEEP_GROUPS=1: 2 configurations (lr 0.1, 0.05) x 3 seed repeats as groups, against the same 6
# trainings; else 4 single trials (seeds 0-3).
GROUPS = os.environ.get("BENCH_SWEEP_GROUPS", "0") == "1"
LRS, GROUP_REPEATS = [0.1, 0.05], 3
# (lr, seed) of every training, in the order the sweep runs them
TRAININGS = [(lr, s) for lr in LRS for s in range(GROUP_REPEATS)] if GROUPS else [(0.1, s) for s in range(4)]
TRIALS = len(TRAININGS)


def _config(storage: Path):  # -> SweepConfig
    from sweeps.config import load_config

    overrides = [
        "name=bench", f"storage={storage}",
        # trials sized like the sizing run (digits 16x16, ratio 100, 30 epochs: ~10-25 s each), so
        # the ratio measures the per-trial machinery rather than a fixed start-up spread over tiny trials
        "dataset.imbalance_ratio=100", "dataset.max_per_class=500", "dataset.test_per_class=50",
        "classifier.augment=none", "classifier.ekld_samples=30", "classifier.ekld_per_class=50",
        *EXTRA,
        f"search.max_concurrent={CONCURRENCY}", "search.sampler=grid", "search.points_to_evaluate=[]",
        "resources.cpu=1",
        *(["search.num_samples=2", f"search.repeats={GROUP_REPEATS}",
           "search.space={classifier.lr: {type: categorical, choices: " + str(LRS) + "}}"] if GROUPS else
          [f"search.num_samples={TRIALS}", "search.repeats=1",
           "search.space={seed: {type: categorical, choices: " + str([s for _, s in TRAININGS]) + "}}"]),
    ]
    cfg, _ = load_config("demo", overrides)
    return cfg


def sequential(cfg, trainings: list[tuple[float, int]]) -> tuple[float, float]:
    """(wall, CPU) seconds of the trainings (lr, seed) back to back in this process, one thread, each
    ending as a trial does (probes, final files written)."""
    import matplotlib.backends.backend_agg  # noqa: F401  (imported before timing, as the sweep's workers preload it)
    import torch

    from gitlib.data.builds import get_dataset
    from gitlib.runs.classifier import run_classifier
    from gitlib.train.config import ClassifierConfig
    from sweeps.paths import local_root
    from sweeps.trials.classifier import final_files

    torch.set_num_threads(1)
    data = get_dataset(cfg.dataset, local_root(cfg.storage))
    out = local_root(cfg.storage) / "sequential"
    out.mkdir(exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    for lr, seed in trainings:
        ccfg = replace(cfg.section(ClassifierConfig), lr=lr)
        result = run_classifier(ccfg, data, seed, torch.device("cpu"), probes=cfg.probes)
        for name, blob in final_files(result, cfg, f"lr {lr} seed {seed}").items():
            (out / f"{seed}_{lr}_{name}").write_bytes(blob if isinstance(blob, bytes) else blob.encode())
    return time.perf_counter() - start, time.process_time() - cpu


@dataclass
class SweepTiming:
    wall: float  # driver.start, from the call to its return
    startup: float  # ray.init
    preload: float  # after ray.init, until the prestarted workers had imported the trial code
    trials: list[tuple[float, float]]  # (start, end) of each trial's MLflow run, s after driver.start began
    fresh_workers: bool  # a trial ran in a process other than the prestarted ones
    cpu: dict[str, float]  # CPU seconds used during driver.start: "trials", "driver", "other" processes


class CpuWatch:
    """CPU seconds each process on the machine used from start() to stop(), including processes that
    exit in between (polled every 0.2 s; Tune ends the trial actors before fit() returns). A scan of
    /proc costs this process ~2 ms, about 1% of a core, counted in the driver's share."""

    def __init__(self) -> None:
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def _poll(self) -> None:
        from sweeps import worker_procs

        while not self._stop.wait(0.2):
            self.last.update(worker_procs.all_cpu_seconds())

    def start(self) -> None:
        from sweeps import worker_procs

        self.first = worker_procs.all_cpu_seconds()
        self.last = dict(self.first)
        self._thread.start()

    def stop(self) -> dict[int, float]:
        from sweeps import worker_procs

        self._stop.set()
        self._thread.join()
        self.last.update(worker_procs.all_cpu_seconds())
        return {pid: t - self.first.get(pid, 0.0) for pid, t in self.last.items()}


def sweep(cfg) -> SweepTiming:
    import ray

    from sweeps import connect, driver, worker_procs
    from sweeps.kinds import kind_of
    from sweeps.paths import find_sweep

    os.environ["GITSWEEP_NUM_CPUS"] = str(CONCURRENCY)
    t0 = time.perf_counter()
    connect.connect_ray(None, kind_of("classifier").preload)
    startup = time.perf_counter() - t0
    try:
        pids = worker_procs.wait_until_idle(CONCURRENCY)
        preload = time.perf_counter() - t0 - startup
        tracker = driver.tracker_for(cfg, None)
        tracker.client.search_experiments()  # creates the SQLite tables: once per storage
        watch = CpuWatch()
        watch.start()
        began, start = time.time(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the per-result progress lines
            code = driver.start(cfg)
        wall = time.perf_counter() - start
        used = watch.stop()
    finally:
        ray.shutdown()
    if code != 0:
        raise RuntimeError(f"benchmark sweep failed (exit {code})")
    trials = driver.tune_trials(find_sweep(cfg.name, cfg.storage))
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`gitsweep.role` = 'classifier'")
    spans = sorted((r.info.start_time / 1000 - began, r.info.end_time / 1000 - began) for r in runs)
    trial_pids = {t.last_result["pid"] for t in trials}
    cpu = {"trials": sum(used.get(p, 0.0) for p in trial_pids), "driver": used.get(os.getpid(), 0.0)}
    cpu["other"] = sum(used.values()) - cpu["trials"] - cpu["driver"]
    return SweepTiming(wall, startup, preload, spans, not trial_pids <= pids, cpu)


PLAIN = """
import sys, time
from pathlib import Path
from benchmarks.bench_sweep import _config, sequential
cfg = _config(Path(sys.argv[1]))
sequential(cfg, [])  # torch and the data set loaded before the start signal, as in the sweep's workers
print("ready", flush=True)
sys.stdin.readline()
print(sequential(cfg, [(float(x.split(":")[0]), int(x.split(":")[1])) for x in sys.argv[2].split(",")])[0],
      flush=True)
"""


def plain_parallel(cfg, sequential_s: float) -> float:
    """Control without Ray: the same trainings as CONCURRENCY plain processes started together; returns
    their wall time over sequential / CONCURRENCY (what this machine's cores give two independent jobs)."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    groups = [",".join(f"{lr}:{s}" for lr, s in TRAININGS[i::CONCURRENCY]) for i in range(CONCURRENCY)]
    from sweeps.paths import local_root

    procs = [subprocess.Popen([sys.executable, "-c", PLAIN, str(local_root(cfg.storage)), g], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for g in groups]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    # Each process's own training time (they start within milliseconds), not the wait for its exit.
    elapsed = [float(p.communicate(timeout=600)[0].split()[-1]) for p in procs]
    return max(elapsed) / (sequential_s / CONCURRENCY)


def _report(i: int, seq: float, seq_cpu: float, t: SweepTiming) -> float:
    """Print one repeat; returns its ratio."""
    ideal = seq / CONCURRENCY
    span = max(end for _, end in t.trials) - min(start for start, _ in t.trials)
    ratio = t.wall / ideal
    print(f"repeat {i + 1}: sequential {seq:.1f} s ({seq / TRIALS:.1f} s per training, ideal {ideal:.1f} s); "
          f"sweep {t.wall:.1f} s; ratio {ratio:.2f}, trial span only {span / ideal:.2f}; with ray.init "
          f"{t.startup:.1f} s and the workers' imports {t.preload:.1f} s it would be "
          f"{(t.wall + t.startup + t.preload) / ideal:.2f}")
    print("  trials (start-end, s into the sweep): " + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in t.trials))
    c = t.cpu
    print(f"  CPU during the sweep: trial processes {c['trials']:.1f} s (the same trainings in one process: "
          f"{seq_cpu:.1f} s), driver {c['driver']:.1f} s, other processes (Ray's own, the OS) {c['other']:.1f} s; "
          f"all together {sum(c.values()) / seq_cpu:.2f}x the sequential CPU")
    if t.fresh_workers:
        print("  note: a trial ran in a freshly started worker process, not a prestarted one")
    return ratio


def main() -> None:
    # The sequential trainings run in halves between the sweeps (2 before the first sweep, 2 after it, 2
    # after the next, ...) and each sweep is compared with the two halves around it: this machine's speed
    # drifts by 10% or more over minutes, and both sides of a ratio then see the same drift. The median of
    # the repeats is the figure; single runs here spread from about 1.09 to 1.33 at the same code.
    half = TRIALS // 2
    halves = [TRAININGS[:half], TRAININGS[half:]]
    print(f"{'2 groups x 3 repeats' if GROUPS else f'{TRIALS} single trials'} at concurrency {CONCURRENCY}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="gitsweep-bench-") as tmp:
        cfg = _config(Path(tmp))
        before = sequential(cfg, halves[0])  # also builds the data set, so the sweeps' trials only read it
        for i in range(REPEATS):
            t = sweep(replace(cfg, name=f"bench-sweep-{i + 1}"))
            after = sequential(cfg, halves[(i + 1) % 2])
            ratios.append(_report(i, before[0] + after[0], before[1] + after[1], t))
            before = after
        control = plain_parallel(cfg, before[0] + sequential(cfg, halves[(REPEATS + 1) % 2])[0])
    print(f"ratio sweep / (sequential / {CONCURRENCY}), median of {REPEATS}: {statistics.median(ratios):.2f} "
          f"(target <= 1.15); each: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"control, no Ray: the {TRIALS} trainings as {CONCURRENCY} plain processes at once: {control:.2f} of the "
          "ideal (the cores' own parallel efficiency and this machine's noise)")


if __name__ == "__main__":
    main()
