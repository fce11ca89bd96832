"""Per-class measures: invariance (eKLD, consistency), accuracy groups, generator quality, the per-class
table, and the final evaluation of a classifier."""

from __future__ import annotations

from gitlib.metrics.accuracy import (
    balanced_accuracy,
    head_tail,
    per_class_accuracy,
    shot_accuracies,
    size_spearman,
)
from gitlib.metrics.evaluate import final_metrics, validation_metrics
from gitlib.metrics.generator_quality import generator_quality, label_preservation, nuisance_diversity
from gitlib.metrics.invariance import consistency_per_class, ekld_per_class, invariance_per_class
from gitlib.metrics.table import format_table, per_class_table

__all__ = [
    "balanced_accuracy",
    "consistency_per_class",
    "ekld_per_class",
    "final_metrics",
    "format_table",
    "generator_quality",
    "head_tail",
    "invariance_per_class",
    "label_preservation",
    "nuisance_diversity",
    "per_class_accuracy",
    "per_class_table",
    "shot_accuracies",
    "size_spearman",
    "validation_metrics",
]
