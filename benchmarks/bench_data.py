"""Data building speed: building K49-LT-sized sets vs. only reading the source and writing Parquet.

Fake K49 files (49 classes of 28x28 uint8 "digits" on a zero background) go to a temporary folder;
the spec is the paper's K49-LT (Zipf alpha 2, largest class 4,800, clip 5: 7,822 training images).
Baseline: load the same source arrays and write Parquet files with the same rows (same images before
the nuisance, same columns) — the I/O every build has to do anyway. Target: build / baseline < 2.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from gitlib.data.builder import SPLITS, Split, apply_nuisance
from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import nuisance_for_spec
from gitlib.data.sources import load_source
from gitlib.data.spec import DatasetSpec
from gitlib.data.store import ensure_built, write_split

TRAIN_PER_CLASS = 300  # base + validation images per class in the fake source
TEST_PER_CLASS = 60
REPEATS = 5


def write_fake_k49(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = np.repeat(np.arange(49, dtype=np.uint8), n)
        imgs = np.zeros((len(labels), 28, 28), np.uint8)
        strokes = rng.integers(0, 256, (len(labels), 16, 16)) * (rng.random((len(labels), 16, 16)) < 0.4)
        imgs[:, 6:22, 6:22] = strokes
        np.savez(root / f"k49-{split}-imgs.npz", imgs)
        np.savez(root / f"k49-{split}-labels.npz", labels)


def best_of(fn: Callable[[int], object]) -> float:
    """Fastest of REPEATS runs (the machine is shared: the minimum is the least disturbed)."""
    times = []
    for i in range(REPEATS):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return min(times)


def built_rows(built_dir: Path) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Per split: the source rows a build used and its parameter columns (read before timing)."""
    out = {}
    for name in SPLITS:
        table = pq.read_table(built_dir / f"{name}.parquet").drop_columns(["image", "label", "split"])
        idx = torch.from_numpy(table.column("source_index").to_numpy().copy())
        params = {c.removeprefix("nuisance_"): torch.from_numpy(table.column(c).to_numpy().copy())
                  for c in table.column_names if c.startswith("nuisance_") or c == "copy"}
        out[name] = (idx, params)
    return out


def baseline(spec: DatasetSpec, rows: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]], out: Path) -> None:
    """Read the source arrays, gather the built rows (untransformed) and write them as Parquet."""
    source = load_source(spec.source, spec.root, spec.image_size)
    out.mkdir(parents=True)
    for name, (idx, params) in rows.items():
        x_all, y_all = (source.train_x, source.train_y) if name in ("train", "val") else (source.test_x, source.test_y)
        write_split(out / f"{name}.parquet", name, Split(x_all[idx], y_all[idx], idx, params))


def main() -> None:
    # One thread, as a trial with resources.cpu = 1 runs; on a shared, oversubscribed machine more
    # OpenMP threads mostly add spin-waiting.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "k49"
        root.mkdir()
        write_fake_k49(root)
        base = DatasetSpec(source="k49", root=str(root), nuisance="background", profile="zipf", zipf_alpha=2.0,
                           max_per_class=4800, min_per_class=5, instance=1)
        print(f"fake K49: {49 * TRAIN_PER_CLASS} train / {49 * TEST_PER_CLASS} test images, 28x28; "
              f"torch threads {torch.get_num_threads()}; best of {REPEATS}")
        print(f"{'variant':<12} {'train':>6} {'val':>6} {'test':>6} {'build s':>8} {'baseline s':>10} {'ratio':>6} "
              f"{'nuisance s':>10} {'reuse s':>8}")
        for nuisance in ("background", "rotation", "dilation"):
            spec = replace(base, nuisance=nuisance)
            store = Path(tmp) / f"store-{nuisance}"

            def build(i: int, spec: DatasetSpec = spec, store: Path = store) -> None:
                ensure_built(spec, store / str(i))  # a fresh storage folder each time: a real build

            build_time = best_of(build)
            data, built = ensure_built(spec, store / "0")
            assert not built and data.path is not None
            rows = built_rows(data.path)

            def copy(i: int, spec: DatasetSpec = spec, rows: dict = rows, store: Path = store) -> None:
                baseline(spec, rows, store / f"baseline-{i}")

            def reuse(i: int, spec: DatasetSpec = spec, store: Path = store) -> None:
                ensure_built(spec, store / "0")

            def nuisance_only(i: int, spec: DatasetSpec = spec, data: BuiltDataset = data) -> None:
                # the nuisance alone on as many images as the build transforms (train + val + test copies)
                images = torch.cat([data.train_x, data.val_x, data.test_tx])
                apply_nuisance(nuisance_for_spec(spec), images, torch.Generator().manual_seed(i))

            base_time, reuse_time, nuisance_time = best_of(copy), best_of(reuse), best_of(nuisance_only)
            print(f"{nuisance:<12} {len(data.train_y):>6} {len(data.val_y):>6} {len(data.test_y):>6} "
                  f"{build_time:>8.3f} {base_time:>10.3f} {build_time / base_time:>6.2f} {nuisance_time:>10.3f} "
                  f"{reuse_time:>8.3f}")
        print("target: build / baseline < 2")


if __name__ == "__main__":
    main()
