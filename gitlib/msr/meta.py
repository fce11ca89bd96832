"""Second-order MAML over the tasks of one outer step, batched with torch.func (no per-task Python loop).

Per task: start from the shared initial adapted params (MSR: the filter v; baselines: their weights),
take `inner_steps` SGD steps on the support-set MSE with one learned learning rate per adapted tensor,
then score the query-set MSE. The symmetry params (MSR: U) are never adapted; they only enter the task's
forward passes. The outer loss, the mean query MSE over the step's tasks, is differentiated through the
inner steps (second order: `torch.func.grad` inside the outer autograd keeps the inner gradients'
graph), and Adam updates the symmetry params, the initial adapted params and the inner learning rates.

`vmap` runs the per-task function over the task axis: the symmetry params, initial params and learning
rates are shared (in_dims None), the support / query sets are batched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.stats
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from gitlib.device import seeded_rng
from gitlib.msr.config import MsrConfig
from gitlib.msr.layers import MsrModule, build_model
from gitlib.msr.tasks import TaskFamily, build_family

__all__ = ["MetaLearner", "adapt", "batched_query_losses", "build_learner", "run_msr", "task_query_loss"]

Params = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # xs, ys, xq, yq: (T, K, ...)
EVAL_CHUNK = 50  # meta-test tasks per vmap call in evaluation (bounds memory on the 2-D problems)


def mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((pred - y) ** 2).mean()


def adapt(model: nn.Module, symmetry: Params, init: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor,
          steps: int) -> Params:
    """One task's inner loop: `steps` SGD steps from `init` on the support MSE (xs (K, ...), ys (K, ...))."""

    def support_loss(adapted: Params) -> torch.Tensor:
        return mse(functional_call(model, {**symmetry, **adapted}, (xs,)), ys)

    params = init
    for _ in range(steps):
        grads = grad(support_loss)(params)
        params = {n: p - lrs[n] * grads[n] for n, p in params.items()}
    return params


def task_query_loss(model: nn.Module, symmetry: Params, init: Params, lrs: Params, xs: torch.Tensor,
                    ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor, steps: int) -> torch.Tensor:
    """One task's query MSE after adaptation (a scalar)."""
    adapted = adapt(model, symmetry, init, lrs, xs, ys, steps)
    return mse(functional_call(model, {**symmetry, **adapted}, (xq,)), yq)


def batched_query_losses(model: nn.Module, symmetry: Params, init: Params, lrs: Params, batch: Batch,
                         steps: int) -> torch.Tensor:
    """(T,) query MSEs of T tasks (batch tensors (T, K, ...)), all tasks in one vmap."""
    fn = partial(task_query_loss, model, steps=steps)
    return vmap(fn, in_dims=(None, None, None, 0, 0, 0, 0))(symmetry, init, lrs, *batch)


def _task_equivariance_error(model: nn.Module, family: TaskFamily, symmetry: Params, init: Params,
                             lrs: Params, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor,
                             steps: int) -> torch.Tensor:
    """Mean over the family's symmetries T of ||f(T x) - P_T T f(x)|| / ||P_T T f(x)||, f the adapted
    layer of one task."""
    adapted = adapt(model, symmetry, init, lrs, xs, ys, steps)

    def f(x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**symmetry, **adapted}, (x,))

    pairs = family.symmetry_pairs(f, xq)
    norm = torch.linalg.vector_norm
    return torch.stack([norm(a - b) / norm(b) for a, b in pairs]).mean()


class MetaLearner:
    """MAML with a learned symmetry: `step` runs one outer step, `evaluate` scores meta-test tasks.

    `rng` (a CPU torch.Generator) draws the meta-train tasks of each step; its state is part of
    `state_dict`, so a resumed learner draws the same tasks as an uninterrupted one.
    """

    def __init__(self, model: MsrModule, family: TaskFamily, cfg: MsrConfig,
                 rng: torch.Generator | None = None) -> None:
        self.model, self.family, self.cfg = model, family, cfg
        params = dict(model.named_parameters())
        self.symmetry: Params = {n: p for n, p in params.items() if n in model.symmetry}
        self.init: Params = {n: p for n, p in params.items() if n not in model.symmetry}
        device = next(iter(params.values())).device
        self.inner_lrs: Params = {n: nn.Parameter(torch.tensor(float(cfg.inner_lr), device=device))
                                  for n in self.init}
        self.optimizer = torch.optim.Adam([*params.values(), *self.inner_lrs.values()], lr=cfg.outer_lr)
        self.rng = rng if rng is not None else seeded_rng(0)
        self.step_count = 0

    # ---- batches -------------------------------------------------------------------------------------

    def sample_tasks(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """`tasks_per_step` distinct meta-train task indices (T,), drawn with `generator` (default: the
        learner's rng)."""
        order = torch.randperm(self.family.n_train, generator=generator or self.rng)
        return self.family.train_indices[order[: self.cfg.tasks_per_step]]

    def batch(self, index: torch.Tensor) -> Batch:
        """(x_support, y_support, x_query, y_query) of tasks `index`, each (T, K, ...) on the device."""
        xs, ys, xq, yq = self.family.episode(index, self.cfg.k_support, self.cfg.k_query)
        return xs, ys, xq, yq

    def query_losses(self, batch: Batch) -> torch.Tensor:
        """(T,) per-task query MSEs after adaptation, differentiable w.r.t. every outer parameter."""
        return batched_query_losses(self.model, self.symmetry, self.init, self.inner_lrs, batch,
                                    self.cfg.inner_steps)

    # ---- outer loop ----------------------------------------------------------------------------------

    def step(self, tasks: torch.Generator | torch.Tensor | None = None) -> dict[str, float]:
        """One outer Adam step on `tasks` (task indices (T,)), or on `tasks_per_step` meta-train tasks drawn
        with `tasks` as generator (default: the learner's rng)."""
        index = tasks if isinstance(tasks, torch.Tensor) else self.sample_tasks(tasks)
        loss = self.query_losses(self.batch(index)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        return {"meta_train/mse": float(loss.detach())}

    def _test_chunks(self, num_tasks: int) -> list[torch.Tensor]:
        index = self.family.test_indices[:num_tasks]
        return list(torch.split(index, EVAL_CHUNK))

    def evaluate(self, num_tasks: int) -> dict[str, float]:
        """Mean query MSE after adaptation over the first `num_tasks` meta-test tasks, and the half-width of
        its 95% t-interval across tasks (t_{0.975, n-1} * sd / sqrt(n))."""
        with torch.no_grad():  # no outer graph; torch.func.grad still differentiates the inner loop
            losses = torch.cat([self.query_losses(self.batch(idx)) for idx in self._test_chunks(num_tasks)])
        values = losses.double().cpu().numpy()
        n = len(values)
        half = scipy.stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        return {"meta_test/mse": float(values.mean()), "meta_test/mse_ci95": float(half)}

    def equivariance_error(self, num_tasks: int) -> float:
        """Relative error of the adapted layer under the family's symmetries, on the query inputs of the
        first `num_tasks` meta-test tasks: 1-D a shift by one (valid positions), 2-D the exact 90-degree
        rotations (and the mirror for D8) with the regular representation's channel permutation."""
        fn = partial(_task_equivariance_error, self.model, self.family, steps=self.cfg.inner_steps)
        errors = []
        with torch.no_grad():
            for idx in self._test_chunks(num_tasks):
                xs, ys, xq, _ = self.batch(idx)
                errors.append(vmap(fn, in_dims=(None, None, None, 0, 0, 0))(
                    self.symmetry, self.init, self.inner_lrs, xs, ys, xq))
        return float(torch.cat(errors).mean())

    def sharing_pattern(self) -> np.ndarray:
        """The model's weight-sharing picture as a 2-D array (MsrLinear: column j of U as an (out, in)
        block, the k blocks side by side; see each layer's `sharing_pattern`)."""
        return self.model.sharing_pattern().cpu().numpy()

    def inner_learning_rates(self) -> dict[str, float]:
        return {n: float(lr.detach()) for n, lr in self.inner_lrs.items()}

    # ---- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: params, inner lrs, Adam state, step count, task-sampling rng."""
        return {
            "params": {n: p.detach().clone() for n, p in self.model.named_parameters()},
            "inner_lrs": {n: lr.detach().clone() for n, lr in self.inner_lrs.items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "step": self.step_count,
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(state["params"][n])
            for n, lr in self.inner_lrs.items():
                lr.copy_(state["inner_lrs"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.rng.set_state(state["rng"])


def build_learner(cfg: MsrConfig, seed: int, device: torch.device | str = "cpu") -> MetaLearner:
    """Model (initialised from `seed`), task family (from cfg.family_seed) and learner; the same seeded
    CPU stream then draws the meta-train tasks of each step."""
    rng = seeded_rng(seed)
    model = build_model(cfg.model, cfg.problem, cfg.latent_size, generator=rng).to(device)
    family = build_family(cfg.problem, cfg.family_seed, cfg.num_tasks, device)
    return MetaLearner(model, family, cfg, rng=rng)


def run_msr(cfg: MsrConfig, seed: int, device: torch.device | str = "cpu",
            state: dict[str, Any] | None = None,
            on_eval: Callable[[MetaLearner, int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """One MSR trial: outer steps up to cfg.outer_steps (resuming from `state`, a `state_dict()`), with
    `on_eval(learner, step, metrics)` after every `eval_every`-th step and after the last (checkpoint there
    with `learner.state_dict()`). Returns the final meta-test metrics, the equivariance error of the adapted
    layer and the last meta-train loss."""
    learner = build_learner(cfg, seed, device)
    if state is not None:
        learner.load_state_dict(state)
    train: dict[str, float] = {}
    evaluated: dict[str, float] | None = None
    while learner.step_count < cfg.outer_steps:
        train = learner.step()
        evaluated = None
        if learner.step_count % cfg.eval_every == 0 or learner.step_count == cfg.outer_steps:
            evaluated = {**train, **learner.evaluate(cfg.eval_tasks)}
            if on_eval is not None:
                on_eval(learner, learner.step_count, evaluated)
    final = evaluated if evaluated is not None else {**train, **learner.evaluate(cfg.eval_tasks)}
    final = {**final, "msr/equivariance_error": learner.equivariance_error(cfg.eval_tasks)}
    final.update({f"msr/inner_lr/{n}": v for n, v in learner.inner_learning_rates().items()})
    return final
