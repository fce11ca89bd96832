"""The per-task reference of the batched meta-learner: the same maths, one task at a time, with
`torch.autograd.grad(create_graph=True)` in the inner loop (as MAML is usually written). Tests check the
batched learner against it; the benchmark measures how much the batching buys.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from gitlib.msr.meta import Batch, MetaLearner, Params, mse

__all__ = ["PerTaskMetaLearner", "per_task_query_losses"]


def per_task_query_losses(model: nn.Module, symmetry: Params, init: Params, lrs: Params, batch: Batch,
                          steps: int, create_graph: bool = True) -> torch.Tensor:
    """(T,) query MSEs after `steps` inner SGD steps, task by task; differentiable w.r.t. every outer
    parameter when `create_graph` (second order)."""
    xs, ys, xq, yq = batch
    losses = []
    for t in range(xs.shape[0]):
        params = dict(init)
        for _ in range(steps):
            loss = mse(functional_call(model, {**symmetry, **params}, (xs[t],)), ys[t])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
            params = {n: p - lrs[n] * g for (n, p), g in zip(params.items(), grads, strict=True)}
        losses.append(mse(functional_call(model, {**symmetry, **params}, (xq[t],)), yq[t]))
    return torch.stack(losses)


class PerTaskMetaLearner(MetaLearner):
    """MetaLearner whose outer step loops over tasks in Python (the reference implementation's shape)."""

    def query_losses(self, batch: Batch) -> torch.Tensor:
        outer = torch.is_grad_enabled()  # evaluate runs under no_grad: first order is enough there
        with torch.enable_grad():  # autograd.grad needs the inner graph either way
            losses = per_task_query_losses(self.model, self.symmetry, self.init, self.inner_lrs, batch,
                                           self.cfg.inner_steps, create_graph=outer)
        return losses if outer else losses.detach()
