"""DatasetSpec: everything that determines a built data set (and so its content hash). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from gitlib.configs import join, require
from gitlib.data.profiles import PROFILES
from gitlib.data.sources import SOURCES
from gitlib.registry import Registry

# Nuisance transforms are torch code; the names resolve to their classes only when one is built.
NUISANCES: Registry = Registry("dataset.nuisance", {
    "rotation": "gitlib.data.nuisances:Rotation",
    "background": "gitlib.data.nuisances:Background",
    "dilation": "gitlib.data.nuisances:Dilation",
    "none": "gitlib.data.nuisances:NoNuisance",
})


@dataclass(frozen=True)
class DatasetSpec:
    """A long-tailed data set with a known nuisance, built from a real source.

    Class sizes follow `profile` from `max_per_class` down to `max_per_class / imbalance_ratio`
    (see gitlib.data.profiles; docs/science.md has the recipes). `zipf_alpha` set together with `min_per_class` gives the paper's
    K49-LT recipe instead: size_k = max(int(max * pmf(k) / pmf(1)), min_per_class).
    """

    source: Annotated[str, SOURCES] = "digits"
    root: str | None = None  # folder of the real files; not needed for digits
    nuisance: Annotated[str, NUISANCES] = "background"
    profile: Annotated[str, PROFILES] = "exponential"
    imbalance_ratio: float = 100.0  # largest / smallest class size (ignored when zipf_alpha is set)
    zipf_alpha: float | None = None  # explicit Zipf exponent (paper: 2.0); None = derived from the ratio
    max_per_class: int = 500  # size of the largest class; base images are cycled with fresh nuisances
    min_per_class: int = 1  # clip for the smallest classes (paper: 5)
    instance: int = 0  # which random class order
    image_size: int | None = None  # None = the source's native size (digits: 16)
    val_fraction: float = 0.2  # share of the source's train images held out for validation
    val_per_class: int | None = None  # balanced validation set size per class; None = all held out
    test_per_class: int | None = None  # balanced test set size per class; None = all test images
    test_copies: int = 1  # transformed copies of each test image for accuracy
    rotation_degrees: float = 180.0  # rotation nuisance range: uniform in [-deg, deg]
    seed: int = 0  # seeds the split and the stored nuisance draws (not the trial seed)

    def validate(self, prefix: str = "dataset") -> None:
        k = lambda name: join(prefix, name)  # noqa: E731
        require(self.imbalance_ratio >= 1.0, k("imbalance_ratio"), f"must be >= 1, got {self.imbalance_ratio}")
        require(self.zipf_alpha is None or self.zipf_alpha > 0, k("zipf_alpha"), "must be > 0")
        require(self.max_per_class >= 1, k("max_per_class"), f"must be >= 1, got {self.max_per_class}")
        require(1 <= self.min_per_class <= self.max_per_class, k("min_per_class"), "must be in [1, max_per_class]")
        require(self.instance >= 0, k("instance"), f"must be >= 0, got {self.instance}")
        require(self.image_size is None or 8 <= self.image_size <= 256, k("image_size"), "must be in [8, 256]")
        require(0.0 < self.val_fraction < 1.0, k("val_fraction"), "must be in (0, 1)")
        require(self.val_per_class is None or self.val_per_class >= 1, k("val_per_class"), "must be >= 1")
        require(self.test_per_class is None or self.test_per_class >= 1, k("test_per_class"), "must be >= 1")
        require(self.test_copies >= 1, k("test_copies"), "must be >= 1")
        require(0.0 < self.rotation_degrees <= 180.0, k("rotation_degrees"), "must be in (0, 180]")
        require(self.source == "digits" or bool(self.root), k("root"), f"required for source '{self.source}'")
