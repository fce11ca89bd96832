"""MSR outer-step speed on one CPU thread: the batched meta-learner (torch.func vmap over tasks) against the
per-task loop with the same maths (autograd.grad(create_graph=True) task by task), 32 tasks per step,
1 support and 19 query examples, second order. A step includes drawing the tasks and their data and the
Adam update, which both learners share; a second ratio times only the part that differs (query losses
after the inner step, and the outer backward) on a fixed batch. Target: batched / per-task >= 5x on the
1-D problems. One 2-D outer step (rot8, rot8_flip with MSR-Conv) is timed for sizing.
"""

from __future__ import annotations

import statistics
import time

import torch

from gitlib.device import seeded_rng
from gitlib.msr.config import MsrConfig
from gitlib.msr.layers import build_model
from gitlib.msr.meta import MetaLearner
from gitlib.msr.reference import PerTaskMetaLearner
from gitlib.msr.tasks import build_family

CASES = [("rank1", "msr_fc"), ("rank5", "msr_fc"), ("rank2", "lc")]
TARGET = 5.0
REPEATS = 5


def make(cls: type[MetaLearner], cfg: MsrConfig, seed: int = 0) -> MetaLearner:
    rng = seeded_rng(seed)
    model = build_model(cfg.model, cfg.problem, cfg.latent_size, generator=rng)
    return cls(model, build_family(cfg.problem, cfg.family_seed, cfg.num_tasks), cfg, rng=rng)


def rate(learner: MetaLearner, steps: int) -> float:
    """Outer steps per second over `steps` steps."""
    start = time.perf_counter()
    for _ in range(steps):
        learner.step()
    return steps / (time.perf_counter() - start)


def gradient_seconds(learner: MetaLearner, repeats: int) -> float:
    """Median seconds of query losses + outer backward on one fixed batch (no sampling, no Adam)."""
    batch = learner.batch(learner.sample_tasks())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        learner.query_losses(batch).mean().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(cfg: MsrConfig, batched_steps: int, looped_steps: int) -> tuple[float, float, float, float]:
    """Median steps/s of both learners, the median of the per-repeat step ratios, and the ratio of the
    gradient part alone. The two learners are timed in alternation, so a change in the machine's load hits
    both alike."""
    batched, looped = make(MetaLearner, cfg), make(PerTaskMetaLearner, cfg)
    for learner in (batched, looped):  # warm-up
        learner.step()
        learner.step()
    pairs = [(rate(batched, batched_steps), rate(looped, looped_steps)) for _ in range(REPEATS)]
    gradient = statistics.median(gradient_seconds(looped, 3) / gradient_seconds(batched, 15)
                                 for _ in range(REPEATS))
    return (statistics.median(b for b, _ in pairs), statistics.median(p for _, p in pairs),
            statistics.median(b / p for b, p in pairs), gradient)


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; "
          "32 tasks/step, k_support 1, k_query 19")
    for problem, model in CASES:
        batched, looped, ratio, gradient = compare(MsrConfig(problem=problem, model=model), 40, 8)
        print(f"{model} {problem}: batched {batched:.1f} steps/s, per-task {looped:.1f} steps/s, "
              f"ratio {ratio:.1f}x (target >= {TARGET:.0f}x); gradient part alone {gradient:.1f}x",
              flush=True)
    for problem in ("rot8", "rot8_flip"):
        cfg = MsrConfig(problem=problem, model="msr_conv")
        learner = make(MetaLearner, cfg)
        learner.step()  # warm-up
        speed = statistics.median(rate(learner, 1) for _ in range(REPEATS))
        print(f"msr_conv {problem}: batched {1 / speed:.2f} s/step ({speed:.2f} steps/s)", flush=True)


if __name__ == "__main__":
    main()
