"""Batched second-order MAML: equals the per-task reference loop (losses and every outer gradient), resumes
exactly, evaluates with the stated interval, and measures equivariance of the adapted layer."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from gitlib.msr import meta
from gitlib.msr.config import MsrConfig
from gitlib.msr.layers import conv_sharing_matrix
from gitlib.msr.meta import MetaLearner, adapt, build_learner, run_msr
from gitlib.msr.reference import PerTaskMetaLearner, per_task_query_losses

SMALL = {"tasks_per_step": 4, "k_query": 3, "eval_tasks": 6, "outer_steps": 6, "eval_every": 3}


def _learner(problem: str, model: str, seed: int = 0, **kw: Any) -> MetaLearner:
    return build_learner(MsrConfig(problem=problem, model=model, **{**SMALL, **kw}), seed)


def _outer_params(learner: MetaLearner) -> dict[str, torch.Tensor]:
    return {**learner.symmetry, **learner.init, **{f"lr/{n}": p for n, p in learner.inner_lrs.items()}}


@pytest.mark.parametrize("problem,model,inner_steps", [
    ("rank2", "msr_fc", 1), ("rank1", "msr_fc", 2), ("rank5", "lc", 2), ("rank1", "conv", 1),
    ("rank1", "fc", 1),
    ("rot8", "msr_conv", 2), ("rot8_flip", "conv", 1),
])
def test_batched_inner_loop_equals_the_per_task_reference(problem: str, model: str, inner_steps: int) -> None:
    learner = _learner(problem, model, inner_steps=inner_steps, k_support=2, k_query=2)
    learner.model.double()  # float64 so both orders of summation agree tightly
    learner.inner_lrs = {n: torch.nn.Parameter(lr.detach().double()) for n, lr in learner.inner_lrs.items()}
    batch = tuple(t.double() for t in learner.batch(torch.tensor([1, 50, 7000])))
    outer = _outer_params(learner)
    with torch.no_grad():  # move off the tiny init so every term of the gradient matters
        for p in outer.values():
            p.add_(0.05 * torch.randn_like(p))
    batched = learner.query_losses(batch)  # type: ignore[arg-type]
    looped = per_task_query_losses(learner.model, learner.symmetry, learner.init, learner.inner_lrs,
                                   batch, inner_steps)  # type: ignore[arg-type]
    assert torch.allclose(batched, looped, rtol=1e-10, atol=1e-12)  # same per-task query losses
    g_batched = torch.autograd.grad(batched.mean(), list(outer.values()))
    g_looped = torch.autograd.grad(looped.mean(), list(outer.values()))
    for name, a, b in zip(outer, g_batched, g_looped, strict=True):
        assert b.abs().sum() > 0, name  # the outer loss reaches every outer parameter
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12), name  # same second-order outer gradient


def test_only_non_symmetry_params_are_adapted() -> None:
    learner = _learner("rank1", "msr_fc")
    xs, ys, _, _ = learner.batch(torch.tensor([0]))
    adapted = adapt(learner.model, learner.symmetry, learner.init, learner.inner_lrs, xs[0], ys[0], 1)
    assert set(adapted) == {"v"}  # U is never adapted in the inner loop
    assert not torch.equal(adapted["v"], learner.init["v"])  # v is


def test_per_task_learner_takes_the_same_steps() -> None:
    a, b = _learner("rank2", "msr_fc"), _learner("rank2", "msr_fc")
    b.__class__ = PerTaskMetaLearner
    for _ in range(3):
        ma, mb = a.step(), b.step()
        assert math.isclose(ma["meta_train/mse"], mb["meta_train/mse"], rel_tol=1e-4)  # same outer losses
    assert torch.allclose(a.symmetry["U"], b.symmetry["U"], rtol=1e-3, atol=1e-7)  # and the same U after Adam


def _checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """Round trip through torch.save / torch.load as a trial checkpoint would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


@pytest.mark.parametrize("problem,model", [("rank2", "msr_fc"), ("rank1", "conv")])
def test_resume_equals_uninterrupted(problem: str, model: str) -> None:
    whole = _learner(problem, model, seed=3)
    whole_metrics = [whole.step() for _ in range(6)]
    first = _learner(problem, model, seed=3)
    split_metrics = [first.step() for _ in range(3)]
    second = _learner(problem, model, seed=99)  # a different seed: everything must come from the state
    second.load_state_dict(_checkpoint(first.state_dict()))
    split_metrics += [second.step() for _ in range(3)]
    assert split_metrics == whole_metrics  # identical meta-train losses step by step
    for (n, p), q in zip(whole.model.named_parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q), n  # identical params after resuming
    assert whole.inner_learning_rates() == second.inner_learning_rates()  # identical inner lrs
    assert whole.evaluate(6) == second.evaluate(6)  # identical meta-test metrics


def test_run_msr_resumes_from_an_on_eval_checkpoint() -> None:
    cfg = MsrConfig(problem="rank1", model="msr_fc", **{**SMALL, "outer_steps": 5, "eval_every": 2})
    seen: list[int] = []
    states: dict[int, dict[str, Any]] = {}

    def on_eval(learner: MetaLearner, step: int, metrics: dict[str, float]) -> None:
        seen.append(step)
        states[step] = _checkpoint(learner.state_dict())
        assert {"meta_train/mse", "meta_test/mse", "meta_test/mse_ci95"} <= set(metrics)  # eval metrics

    final = run_msr(cfg, seed=1, device="cpu", on_eval=on_eval)
    assert seen == [2, 4, 5]  # every eval_every steps and after the last
    assert {"meta_test/mse", "meta_test/mse_ci95", "msr/equivariance_error", "msr/inner_lr/v"} <= set(final)
    resumed = run_msr(cfg, seed=1, device="cpu", state=states[2])
    assert resumed == final  # resuming from step 2 ends exactly where the uninterrupted run did


def test_evaluate_reports_the_mean_and_the_t_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    learner = _learner("rank5", "lc")
    index = learner.family.test_indices[:6]
    with torch.no_grad():
        losses = learner.query_losses(learner.batch(index)).double().numpy()
    half = scipy.stats.t.ppf(0.975, 5) * losses.std(ddof=1) / math.sqrt(6)
    result = learner.evaluate(6)
    assert math.isclose(result["meta_test/mse"], losses.mean(), rel_tol=1e-6)  # mean over the first 6 tasks
    assert math.isclose(result["meta_test/mse_ci95"], half, rel_tol=1e-6)  # t_{.975, n-1} * sd / sqrt(n)
    monkeypatch.setattr(meta, "EVAL_CHUNK", 4)
    chunked = learner.evaluate(6)["meta_test/mse"]
    assert math.isclose(chunked, result["meta_test/mse"], rel_tol=1e-6)  # chunking does not change the mean


def test_equivariance_error_is_zero_for_a_conv_and_not_for_fc() -> None:
    conv = _learner("rank1", "conv")
    assert conv.equivariance_error(4) < 1e-6  # an adapted conv commutes with shifts
    assert _learner("rank1", "fc").equivariance_error(4) > 0.1  # an adapted FC layer does not
    msr = _learner("rank1", "msr_fc")
    with torch.no_grad():
        msr.symmetry["U"].copy_(conv_sharing_matrix(70, 68, 3))
    assert msr.equivariance_error(4) < 1e-6  # MSR-FC with the conv pattern stays a conv after adaptation


def test_equivariance_error_of_a_2d_group_conv_pattern_is_zero() -> None:
    learner = _learner("rot8", "msr_conv", k_query=1)
    family = learner.family
    index = family.filter_index  # type: ignore[attr-defined]
    u = torch.zeros(3, index.shape[0], 9, 3, 9)
    for g in range(3):
        u[g, :, :, g, :] = F.one_hot(index, 9).float()
    with torch.no_grad():
        learner.symmetry["U"].copy_(u.reshape(-1, 27))
    assert learner.equivariance_error(2) < 1e-5  # U spanning the C8 bank: the adapted layer is equivariant
    assert _learner("rot8", "conv", k_query=1).equivariance_error(2) > 0.1  # a plain conv is not


def test_training_lowers_the_meta_test_error() -> None:
    learner = _learner("rank1", "conv", outer_lr=0.02, tasks_per_step=8)
    before = learner.evaluate(6)["meta_test/mse"]
    for _ in range(40):
        learner.step()
    assert learner.evaluate(6)["meta_test/mse"] < 0.5 * before  # meta-learning the init and inner lr helps


def test_sharing_pattern_is_a_2d_array() -> None:
    picture = _learner("rank2", "msr_fc").sharing_pattern()
    assert isinstance(picture, np.ndarray) and picture.shape == (68, 6 * 70)  # k = 6 blocks of (out, in)
