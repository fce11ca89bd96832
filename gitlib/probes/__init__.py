"""Bias probes: how a trained classifier's accuracy on its test images responds to spectral filtering,
band-limited noise and common corruptions, overall and per class (head vs tail).

`run_probes(names, predict, images, labels, ...)` runs the probes named in `PROBES` ("spectral",
"critical_band", "corruptions") and returns a `ProbeResult` (scalars, per-class columns, curves). The
registry loads without torch (configs validate the `probes` key with it); the rest loads on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gitlib.registry import Registry

PROBES: Registry = Registry("probes", {
    "spectral": "gitlib.probes.spectral:spectral_probe",
    "critical_band": "gitlib.probes.critical_band:critical_band_probe",
    "corruptions": "gitlib.probes.corruptions:corruptions_probe",
})

__all__ = ["PROBES", "ProbeResult", "run_probes"]


def __getattr__(name: str) -> Any:
    if name in ("ProbeResult", "run_probes"):
        return getattr(import_module("gitlib.probes.base"), name)
    raise AttributeError(f"module 'gitlib.probes' has no attribute {name!r}")
