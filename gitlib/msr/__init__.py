"""Meta-learning symmetries by reparameterization (MSR): layers whose weight is U v with a meta-learned
sharing pattern U, synthetic task families with known symmetries, and batched second-order MAML.

`gitlib.msr.config` is torch-free (configs validate without torch); everything else imports torch, so this
package resolves its exports lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gitlib.msr.config import DEFAULT_LATENT, MODELS, PROBLEM_SHAPES, PROBLEMS, MsrConfig, ProblemShape

_LAZY = {
    "MsrModule": "layers", "MsrLinear": "layers", "MsrConv2d": "layers", "Linear": "layers",
    "LocallyConnected1d": "layers", "Conv1d": "layers", "Conv2d": "layers", "build_model": "layers",
    "conv_sharing_matrix": "layers",
    "TaskFamily": "tasks", "build_family": "tasks", "hashed_normal": "tasks",
    "MetaLearner": "meta", "build_learner": "meta", "run_msr": "meta", "batched_query_losses": "meta",
    "PerTaskMetaLearner": "reference", "per_task_query_losses": "reference",
}

__all__ = ["DEFAULT_LATENT", "MODELS", "PROBLEMS", "PROBLEM_SHAPES", "MsrConfig", "ProblemShape", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"gitlib.msr.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gitlib.msr' has no attribute {name!r}")
