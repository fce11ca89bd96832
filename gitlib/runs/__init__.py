"""One code path per model: the whole classifier run and the whole generator run.

`gitsweep train classifier|generator`, the shared generator store and the sweep trials all call these;
they differ only in the hooks they pass (a progress bar, or a Tune report with a checkpoint).
"""

from __future__ import annotations

from gitlib.runs.classifier import ClassifierResult, ekld_transform, run_classifier
from gitlib.runs.generator import GeneratorResult, train_generator

__all__ = ["ClassifierResult", "GeneratorResult", "ekld_transform", "run_classifier", "train_generator"]
