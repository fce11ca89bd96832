"""MsrConfig: one meta-learning-symmetries trial (problem, model, MAML recipe). Torch-free.

The problem and model registries live here, with lazy `"module:attr"` entries, so that a config validates
(and the CLI lists the choices) without importing torch; `gitlib.msr.tasks` and `gitlib.msr.layers`
re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from gitlib.configs import join, require
from gitlib.registry import Registry

# Task families: generated on the fly from (family seed, task index); see gitlib.msr.tasks.
PROBLEMS: Registry = Registry("msr.problem", {
    "rank1": "gitlib.msr.tasks:Rank1Family",
    "rank2": "gitlib.msr.tasks:Rank2Family",
    "rank5": "gitlib.msr.tasks:Rank5Family",
    "rot8": "gitlib.msr.tasks:Rot8Family",
    "rot8_flip": "gitlib.msr.tasks:Rot8FlipFamily",
}, aliases={"2d_rot8": "rot8", "2d_rot8_flip": "rot8_flip"})

# One-layer models; each entry is a builder `(shape: ProblemShape, latent_size: int, generator) -> module`.
MODELS: Registry = Registry("msr.model", {
    "fc": "gitlib.msr.layers:build_fc",
    "lc": "gitlib.msr.layers:build_lc",
    "conv": "gitlib.msr.layers:build_conv",
    "msr_fc": "gitlib.msr.layers:build_msr_fc",
    "msr_conv": "gitlib.msr.layers:build_msr_conv",
}, aliases={"share_fc": "msr_fc", "share_conv": "msr_conv"})


@dataclass(frozen=True)
class ProblemShape:
    """Input/output sizes of a problem: 1-D (features) or 2-D (channels of 32x32 -> 30x30 maps)."""

    dims: int  # 1 or 2
    in_size: int  # 1-D: input length; 2-D: input channels
    out_size: int  # 1-D: output length; 2-D: output channels
    kernel: int = 3  # filter taps per spatial axis
    image: int = 32  # 2-D input side (valid conv: output side image - kernel + 1)


PROBLEM_SHAPES: dict[str, ProblemShape] = {
    "rank1": ProblemShape(1, 70, 68),
    "rank2": ProblemShape(1, 70, 68),
    "rank5": ProblemShape(1, 70, 68),
    "rot8": ProblemShape(2, 1, 24),
    "rot8_flip": ProblemShape(2, 1, 48),
}

# The paper's latent sizes for 1-D; for 2-D the dimension of the task family's filter space
# (3 base 3x3 filters, each expanded over the group: 27 numbers per task for both C8 and D8).
DEFAULT_LATENT: dict[str, int] = {"rank1": 3, "rank2": 6, "rank5": 30, "rot8": 27, "rot8_flip": 27}

# Which models make sense on which problems (an FC layer on 2-D maps would be 22M x k wide).
MODEL_DIMS: dict[str, tuple[int, ...]] = {
    "fc": (1,), "lc": (1,), "conv": (1, 2), "msr_fc": (1,), "msr_conv": (2,),
}

TRAIN_FRACTION = 0.8  # first 80% of task indices are meta-train, the rest meta-test


def split_sizes(num_tasks: int) -> tuple[int, int]:
    """(meta-train, meta-test) task counts: indices [0, n_train) and [n_train, num_tasks)."""
    n_train = int(num_tasks * TRAIN_FRACTION)
    return n_train, num_tasks - n_train


@dataclass(frozen=True)
class MsrConfig:
    """One MSR trial; defaults are the paper's synthetic recipe (MAML, 1 inner step, Adam 1e-3, 32 tasks)."""

    problem: Annotated[str, PROBLEMS] = "rank1"
    model: Annotated[str, MODELS] = "msr_fc"
    latent_size: int | None = None  # k of the MSR layers; None = DEFAULT_LATENT[problem]; others ignore it
    inner_steps: int = 1  # SGD steps on the support set
    inner_lr: float = 0.1  # initial value of each learned per-tensor inner learning rate
    outer_lr: float = 1e-3  # Adam
    outer_steps: int = 1000
    tasks_per_step: int = 32  # meta-train tasks per outer step
    k_support: int = 1  # examples per task for the inner loop
    k_query: int = 19  # examples per task for the outer loss / evaluation
    eval_every: int = 100  # outer steps between evaluations (and checkpoints)
    eval_tasks: int = 300  # meta-test tasks per evaluation
    num_tasks: int = 10000  # task indices of the family (first 80% meta-train)
    family_seed: int = 0  # fixes the task family (rank-r connectivity and every task); not the trial seed

    def validate(self, prefix: str = "msr") -> None:
        k = lambda name: join(prefix, name)  # noqa: E731
        problem = PROBLEMS.canonical(self.problem, key=k("problem")) or self.problem
        model = MODELS.canonical(self.model, key=k("model")) or self.model
        dims = PROBLEM_SHAPES[problem].dims
        require(dims in MODEL_DIMS[model], k("model"),
                f"{model!r} does not apply to the {dims}-D problem {problem!r} (valid: "
                f"{', '.join(m for m, d in MODEL_DIMS.items() if dims in d)})")
        require(self.latent_size is None or self.latent_size >= 1, k("latent_size"),
                f"must be >= 1, got {self.latent_size}")
        for name in ("inner_steps", "outer_steps", "tasks_per_step", "k_support", "k_query", "eval_every"):
            require(getattr(self, name) >= 1, k(name), f"must be >= 1, got {getattr(self, name)}")
        require(0 < self.inner_lr <= 10, k("inner_lr"), f"must be in (0, 10], got {self.inner_lr}")
        require(0 < self.outer_lr <= 1, k("outer_lr"), f"must be in (0, 1], got {self.outer_lr}")
        require(self.num_tasks >= 10, k("num_tasks"), f"must be >= 10, got {self.num_tasks}")
        require(self.family_seed >= 0, k("family_seed"), f"must be >= 0, got {self.family_seed}")
        n_train, n_test = split_sizes(self.num_tasks)
        require(self.tasks_per_step <= n_train, k("tasks_per_step"),
                f"must be <= the {n_train} meta-train tasks, got {self.tasks_per_step}")
        require(2 <= self.eval_tasks <= n_test, k("eval_tasks"),
                f"must be in [2, {n_test}] (the meta-test tasks), got {self.eval_tasks}")

    @property
    def shape(self) -> ProblemShape:
        return PROBLEM_SHAPES[PROBLEMS.canonical(self.problem) or self.problem]

    @property
    def resolved_latent_size(self) -> int:
        """k of the MSR layers: `latent_size`, or the problem's default."""
        problem = PROBLEMS.canonical(self.problem) or self.problem
        return self.latent_size if self.latent_size is not None else DEFAULT_LATENT[problem]
