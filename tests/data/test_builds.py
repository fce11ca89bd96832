from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from source_files import write_k49

from gitlib.configs import to_dict
from gitlib.data.builds import dataset_dir, ensure_built, get_dataset, load_built, spec_digest
from gitlib.data.profiles import class_counts
from gitlib.data.spec import DatasetSpec
from gitlib.errors import DataError

SPEC = DatasetSpec(source="digits", nuisance="background", profile="exponential", imbalance_ratio=50.0,
                   max_per_class=300, instance=2, val_per_class=20, test_per_class=30, test_copies=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("store")
    return root, get_dataset(SPEC, root)


def test_splits_follow_the_recipe(built: tuple) -> None:
    _, data = built
    expected = class_counts("exponential", 10, 300, 50.0, instance=2)
    # training class sizes equal the profile exactly, in the instance's class order
    assert np.array_equal(data.class_counts, expected)
    # validation is balanced at val_per_class; test has test_per_class untransformed images per class
    assert np.bincount(data.val_y.numpy()).tolist() == [20] * 10
    assert np.bincount(data.test_y.numpy()).tolist() == [30] * 10
    # test_copies transformed copies, copy-major
    assert data.test_tx.shape == (600, 1, 16, 16) and torch.equal(data.test_ty, data.test_y.repeat(2))
    # the nuisance is on train / val / transformed test, not on the plain test images
    has_zero = lambda x: (x == 0).flatten(1).any(1).float().mean()  # noqa: E731
    assert has_zero(data.test_x) == 1.0 and has_zero(data.train_x) < 0.05 and has_zero(data.test_tx) < 0.05
    unchanged_nonzero = (data.test_tx[:300] == data.test_x) | (data.test_x == 0)
    assert unchanged_nonzero.all()


def test_parquet_columns_cycling_and_disjoint_pools(built: tuple) -> None:
    _, data = built
    table = pq.read_table(data.path / "train.parquet").to_pandas()
    # columns: image bytes, label, split, source row, nuisance parameters
    assert {"image", "label", "split", "source_index", "nuisance_level"} <= set(table.columns)
    assert set(table["split"]) == {"train"}
    big = int(np.argmax(data.class_counts))
    rows = table[table["label"] == big]["source_index"].to_numpy()
    n_base = len(np.unique(rows))
    # example i of a class is base image (i mod n_base): the base images repeat in the same order
    assert len(rows) == 300 and n_base < 300
    assert np.array_equal(rows, np.resize(rows[:n_base], len(rows)))
    # cycled copies of one base image carry freshly drawn nuisances
    levels = table[table["label"] == big]["nuisance_level"].to_numpy()
    assert len(np.unique(levels[rows == rows[0]])) > 1
    # the validation pool is held out from the training base images
    val = pq.read_table(data.path / "val.parquet").to_pandas()
    assert not set(val["source_index"]) & set(table["source_index"])
    manifest = json.loads((data.path / "manifest.json").read_text())
    # the manifest records the spec, digest and class counts
    assert manifest["digest"] == spec_digest(SPEC) == data.path.name
    assert manifest["class_counts"]["train"] == data.class_counts.tolist()
    assert manifest["spec"]["instance"] == 2 and manifest["sizes"]["test_t"] == 600
    test_t = pq.read_table(data.path / "test_t.parquet").to_pandas()
    # transformed test copies say which copy of which test row they are
    assert test_t["copy"].tolist() == [0] * 300 + [1] * 300
    assert np.array_equal(test_t["source_index"].to_numpy()[:300], test_t["source_index"].to_numpy()[300:])


def test_train_keeps_the_untransformed_base_images(built: tuple) -> None:
    _, data = built
    table = pq.read_table(data.path / "train.parquet", columns=["base_image", "source_index", "nuisance_level"])
    base = data.train_base_x
    # one base image per training row, stored in train.parquet only
    assert base is not None and base.dtype == torch.uint8 and base.shape == data.train_x.shape
    assert table.num_rows == len(base) and "base_image" not in pq.read_schema(data.path / "val.parquet").names
    # the base image is the stored image before its nuisance: same strokes, background still 0
    ink = base != 0
    assert torch.equal(data.train_x[ink], base[ink]) and (~ink).flatten(1).any(1).all()
    level = torch.from_numpy(table.column("nuisance_level").to_numpy().copy())
    assert torch.equal(data.train_x.masked_fill(ink, 0).flatten(1).amax(1).long(), level)
    # cycled rows share their base image
    rows = table.column("source_index").to_numpy()
    same = np.flatnonzero(rows == np.bincount(rows).argmax())
    assert len(same) > 1 and all(torch.equal(base[same[0]], base[i]) for i in same)


def test_reload_is_identical_and_not_rewritten(built: tuple) -> None:
    root, data = built
    files = sorted(data.path.iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    again, was_built = ensure_built(SPEC, root)
    # the second call reuses the stored build: nothing rewritten
    assert not was_built and [f.stat().st_mtime_ns for f in files] == mtimes
    # and reads back exactly what was built
    for name in ("train_x", "train_base_x", "train_y", "val_x", "val_y", "test_x", "test_y", "test_tx", "test_ty"):
        assert torch.equal(getattr(again, name), getattr(data, name)), name
    assert again.spec == SPEC and load_built(data.path).digest == data.digest
    # one folder per spec, no temporary leftovers
    assert [p.name for p in (root / "datasets").iterdir() if p.is_dir()] == [data.digest]


def test_same_spec_same_bytes_other_spec_other_digest(tmp_path: Path, built: tuple) -> None:
    _, data = built
    fresh = get_dataset(SPEC, tmp_path)
    # a build is a pure function of the spec
    assert torch.equal(fresh.train_x, data.train_x) and torch.equal(fresh.test_tx, data.test_tx)
    other = replace(SPEC, seed=1)
    assert spec_digest(other) != spec_digest(SPEC)
    assert not torch.equal(get_dataset(other, tmp_path).train_x, data.train_x)


def test_k49_build_with_paper_profile(k49_root: Path, tmp_path: Path) -> None:
    spec = DatasetSpec(source="k49", root=str(k49_root), nuisance="rotation", profile="zipf", zipf_alpha=2.0,
                       max_per_class=4800, min_per_class=5, instance=1, rotation_degrees=30.0)
    data = get_dataset(spec, tmp_path)
    # the paper's K49-LT counts (7,822 images) over 49 classes, base images cycled
    assert data.class_counts.sum() == 7822 and sorted(data.class_counts)[-1] == 4800
    assert data.train_x.shape[1:] == (1, 28, 28)
    angles = pq.read_table(data.path / "train.parquet", columns=["nuisance_angle"]).column(0).to_numpy()
    # rotation range from spec.rotation_degrees
    assert np.abs(angles).max() <= 30.0 and np.abs(angles).max() > 29.0


def test_bad_source_writes_nothing(tmp_path: Path) -> None:
    spec = DatasetSpec(source="k49", root=str(tmp_path / "missing"))
    storage = tmp_path / "storage"
    with pytest.raises(DataError):
        get_dataset(spec, storage)
    # input is checked before the store is touched
    assert not storage.exists()
    root = tmp_path / "k49"
    write_k49(root, per_class=3)
    labels = np.repeat(np.arange(49, dtype=np.uint8), 3)
    labels[labels == 7] = 8  # class 7 loses all its training images
    np.savez(root / "k49-train-labels.npz", labels)
    with pytest.raises(DataError, match="class 7 has 0 training image"):
        get_dataset(replace(spec, root=str(root)), storage)
    # a class too small to split is found before anything is written
    assert not storage.exists()


# Each child imports everything first, says it is ready, then waits for "go": the two builds then
# really race for the same spec.
_CHILD = """
import sys, time, torch
from pathlib import Path
from gitlib.configs import from_dict
from gitlib.data.spec import DatasetSpec
from gitlib.data.builds import ensure_built
torch.set_num_threads(1)
spec = from_dict(DatasetSpec, __import__("json").loads(sys.argv[1]))
storage, sync = Path(sys.argv[2]), Path(sys.argv[3])
(sync / f"ready-{sys.argv[4]}").touch()
while not (sync / "go").exists():
    time.sleep(0.01)
data, built = ensure_built(spec, storage)
print(data.digest, built, int(data.train_x.sum()))
"""


def test_two_processes_build_one_copy(tmp_path: Path, k49_root: Path) -> None:
    spec = DatasetSpec(source="k49", root=str(k49_root), nuisance="rotation", max_per_class=2000, seed=5)
    storage, sync = tmp_path / "storage", tmp_path / "sync"
    sync.mkdir()
    args = [json.dumps(to_dict(spec)), str(storage), str(sync)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, *args, str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    deadline = time.monotonic() + 120
    while len(list(sync.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    (sync / "go").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    results = [out.split() for out, _ in outs]
    # exactly one process built, the other reused its copy; both see the same data
    assert sorted(r[1] for r in results) == ["False", "True"]
    assert results[0][0] == results[1][0] == spec_digest(spec) and results[0][2] == results[1][2]
    # one complete folder, no temporary folders left
    entries = sorted(p.name for p in (storage / "datasets").iterdir())
    assert entries == [spec_digest(spec), f"{spec_digest(spec)}.lock"]
    assert (dataset_dir(spec, storage) / "manifest.json").is_file()
