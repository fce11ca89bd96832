"""Training: the classifier's epochs and MUNIT's steps, with their configs, losses, rules and schedule.
They return metric dicts and never import ray or mlflow. The configs load without torch."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gitlib.train.config import LOSSES, ClassifierConfig, GeneratorConfig
from gitlib.train.rules import RULES

__all__ = ["LOSSES", "RULES", "ClassifierConfig", "ClassifierTrainer", "GeneratorConfig", "MunitTrainer",
           "TrainingDiverged"]

_LAZY = {"ClassifierTrainer": "gitlib.train.classifier", "TrainingDiverged": "gitlib.train.classifier",
         "MunitTrainer": "gitlib.train.generator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gitlib.train' has no attribute {name!r}")
