"""DatasetSpec + source arrays -> the four splits of a long-tailed data set, in memory.

Recipe (docs/science.md, "Long-tailed data sets"): per class, `val_fraction` of the source's train images is held out as the
validation pool and the rest are the base images. Class k's training set has `class_counts(...)[k]`
examples, example i being base image (i mod n_base) with a freshly drawn nuisance; the untransformed
base image of every training example is kept too (`Split.base_x`), for the oracle to re-draw on. Validation: at most
`val_per_class` held-out images per class (None = all), with the nuisance. Test: at most
`test_per_class` source test images per class (None = all), kept untransformed (`test`), plus
`test_copies` transformed copies (`test_t`, copy-major: row j * N + i is copy j of test row i).

All random choices derive from `spec.seed` (split and draws) and `spec.instance` (class order), so
the same spec always gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gitlib.data.nuisances import Nuisance, nuisance_for_spec
from gitlib.data.profiles import class_counts
from gitlib.data.sources import SourceArrays
from gitlib.data.spec import DatasetSpec
from gitlib.errors import DataError

SPLITS = ("train", "val", "test", "test_t")
CHUNK = 2048  # images per nuisance call: cache-sized, bounds peak memory; fixed, so the same draws every time


@dataclass
class Split:
    """One split: images uint8 (N, C, H, W), labels (N,), the source row each image came from (into the
    source's train split for train / val, its test split for test / test_t), nuisance parameters, and
    (train only) the untransformed base image of every row, which the oracle re-draws the nuisance on."""

    x: torch.Tensor
    y: torch.Tensor
    source_index: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    base_x: torch.Tensor | None = None


def _generator(seed: int, stream: int) -> torch.Generator:
    """Independent CPU generators per split, so e.g. changing val_per_class leaves train draws alone."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> 1))
    return g


def apply_nuisance(nuisance: Nuisance, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Nuisance over `x` in fixed-size chunks, parameters concatenated."""
    outs, params = [], []
    for start in range(0, x.shape[0], CHUNK):
        out, p = nuisance.apply(x[start : start + CHUNK], generator)
        outs.append(out)
        params.append(p)
    if not outs:
        return x.clone(), {}
    return torch.cat(outs), {k: torch.cat([p[k] for p in params]) for k in params[0]}


def _by_class(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of each class, in a seeded random order."""
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def check_buildable(source: SourceArrays, name: str) -> None:
    """Every class needs a base image and a validation image: fail before anything is written."""
    sizes = np.bincount(source.train_y.numpy(), minlength=source.num_classes)
    small = np.flatnonzero(sizes < 2)
    if len(small):
        c = int(small[0])
        raise DataError(name, f"class {c} has {sizes[c]} training image(s); every class needs at least 2")


def split_train_pool(
    labels: np.ndarray, num_classes: int, val_fraction: float, rng: np.random.Generator, source: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per class: (base image rows, validation pool rows); round(n * val_fraction) held out, at least
    one on each side."""
    bases, vals = [], []
    for c, rows in enumerate(_by_class(labels, num_classes, rng)):
        if len(rows) < 2:
            raise DataError(source, f"class {c} has {len(rows)} training image(s); every class needs at least 2")
        n_val = min(max(round(len(rows) * val_fraction), 1), len(rows) - 1)
        vals.append(rows[:n_val])
        bases.append(rows[n_val:])
    return bases, vals


def build_splits(spec: DatasetSpec, source: SourceArrays) -> tuple[dict[str, Split], np.ndarray]:
    """The four splits and the per-class training counts of `spec` built from `source`."""
    c = source.num_classes
    nuisance = nuisance_for_spec(spec)
    rng = np.random.default_rng([spec.seed, 0])
    bases, val_pool = split_train_pool(source.train_y.numpy(), c, spec.val_fraction, rng, spec.source)
    counts = class_counts(
        spec.profile, c, spec.max_per_class, spec.imbalance_ratio, spec.zipf_alpha, spec.min_per_class, spec.instance
    )

    # Train: example i of class k is base image (i mod n_base) of class k.
    train_rows = np.concatenate([b[np.arange(n) % len(b)] for b, n in zip(bases, counts, strict=True)])
    val_rows = np.concatenate([v[: spec.val_per_class] for v in val_pool])
    test_by_class = _by_class(source.test_y.numpy(), c, rng)
    test_rows = np.concatenate([t[: spec.test_per_class] for t in test_by_class])

    splits: dict[str, Split] = {}
    for name, stream, rows, x_all, y_all in (
        ("train", 1, train_rows, source.train_x, source.train_y),
        ("val", 2, val_rows, source.train_x, source.train_y),
    ):
        idx = torch.from_numpy(rows.astype(np.int64))
        base_x = x_all[idx]
        x, params = apply_nuisance(nuisance, base_x, _generator(spec.seed, stream))
        splits[name] = Split(x, y_all[idx], idx, params, base_x if name == "train" else None)

    idx = torch.from_numpy(test_rows.astype(np.int64))
    test_x = source.test_x[idx]
    splits["test"] = Split(test_x, source.test_y[idx], idx)
    copies = spec.test_copies
    tx, params = apply_nuisance(nuisance, test_x.repeat(copies, 1, 1, 1), _generator(spec.seed, 3))
    params["copy"] = torch.arange(copies).repeat_interleave(len(idx))
    splits["test_t"] = Split(tx, source.test_y[idx].repeat(copies), idx.repeat(copies), params)
    return splits, counts
