"""Models: CIFAR-style ResNet classifiers and the MUNIT generator.

`gitlib.models.arch` (architecture configs and the `classifier.arch` registry) loads without torch; the
rest loads on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gitlib.models.arch import ARCHITECTURES, MunitArch

__all__ = ["ARCHITECTURES", "CifarResNet", "Munit", "MunitArch", "build_classifier", "build_munit", "inference_copy",
           "load_generator", "predict_labels", "save_generator"]

_LAZY = {
    "CifarResNet": "gitlib.models.resnet", "build_classifier": "gitlib.models.resnet",
    "inference_copy": "gitlib.models.resnet", "predict_labels": "gitlib.models.inference",
    "Munit": "gitlib.models.munit", "build_munit": "gitlib.models.munit", "load_generator": "gitlib.models.munit",
    "save_generator": "gitlib.models.munit",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gitlib.models' has no attribute {name!r}")
