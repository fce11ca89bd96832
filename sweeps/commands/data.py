"""`gitsweep data build CONFIG [--set ...]`: build (or reuse) the config's data set, print its classes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import numpy as np

from sweeps.config import load_config
from sweeps.paths import local_root
from sweeps.preflight import preflight

if TYPE_CHECKING:  # torch loads only once the config is known to be valid
    from gitlib.data.dataset import BuiltDataset


def class_table(data: BuiltDataset) -> str:
    """Class, train / val / test counts per class, and a total row."""
    c = data.num_classes
    cols = [np.bincount(y.numpy(), minlength=c) for y in (data.train_y, data.val_y, data.test_y)]
    lines = [f"{'class':>6} {'train':>7} {'val':>6} {'test':>6}"]
    lines += [f"{k:>6} {cols[0][k]:>7} {cols[1][k]:>6} {cols[2][k]:>6}" for k in range(c)]
    lines.append(f"{'total':>6} {cols[0].sum():>7} {cols[1].sum():>6} {cols[2].sum():>6}")
    return "\n".join(lines)


def build(args: argparse.Namespace) -> int:
    cfg, _ = load_config(args.config, args.overrides)
    preflight(cfg)  # headers only, before torch loads
    spec = cfg.dataset
    from gitlib.data.builds import ensure_built

    # ensure_built reads (and so checks) every source file before it writes anything.
    data, built = ensure_built(spec, local_root(cfg.storage))
    print(class_table(data))
    print(
        f"{'built' if built else 'reused'} {spec.source} / {spec.nuisance} / {spec.profile}: "
        f"{len(data.train_y)} train, {len(data.val_y)} val, {len(data.test_y)} test "
        f"(+{len(data.test_ty)} transformed), {data.channels}x{data.image_size}x{data.image_size}"
    )
    print(f"written to {data.path}")
    return 0
