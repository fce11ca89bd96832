"""Content-addressed Parquet builds of data sets: built once, shared by every trial after.

Folder `<storage>/datasets/<digest>/`, digest = sha256 of the spec (sorted JSON) and BUILDER_VERSION,
holding `train.parquet`, `val.parquet`, `test.parquet`, `test_t.parquet` (columns: image as
fixed-size uint8 bytes (C*H*W, row-major), label, split, source_index, nuisance_<param>..., `copy` in
test_t, and `base_image` in train: the untransformed base image, same layout as image) and `manifest.json`
(spec, shape, class counts per split, sizes). A build happens in a temporary sibling folder, under a
file lock, and is renamed into place at the end, so concurrent builders of one spec leave exactly one
complete copy and readers never see a half-written one. The temporary folders of killed builds
(`.<digest>.tmp-<pid>-<rand>`) are removed by the next `ensure_built` of that digest, under its lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from filelock import FileLock

from gitlib.configs import from_dict, to_dict
from gitlib.data.builder import SPLITS, Split, build_splits, check_buildable
from gitlib.data.dataset import BuiltDataset
from gitlib.data.profiles import class_order
from gitlib.data.sources import SourceArrays, load_source
from gitlib.data.spec import DatasetSpec
from gitlib.errors import DataError

# Bump whenever the bytes a spec builds to change (recipe, nuisance code, file layout): old builds
# then stop matching instead of being silently reused.
BUILDER_VERSION = "2"  # 2: train.parquet has base_image
MANIFEST = "manifest.json"


def spec_digest(spec: DatasetSpec) -> str:
    """Content address of a spec's build: 16 hex digits of sha256(spec JSON + builder version)."""
    payload = json.dumps({"spec": to_dict(spec), "builder": BUILDER_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def dataset_dir(spec: DatasetSpec, storage_root: Path) -> Path:
    return Path(storage_root) / "datasets" / spec_digest(spec)


# pa.array() and ChunkedArray.to_numpy() import pandas (about a second) merely to check their input,
# so columns go in and out through their buffers: numeric, no nulls, zero-copy.
def _column(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:  # Arrow booleans are bit-packed
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _split_name(name: str, n: int) -> pa.DictionaryArray:
    text = name.encode()
    names = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(np.array([0, len(text)], np.int32)), pa.py_buffer(text)]
    )
    return pa.DictionaryArray.from_arrays(_column(np.zeros(n, np.int32)), names)


def _numpy(column: pa.ChunkedArray, dtype: np.dtype, width: int = 1) -> np.ndarray:
    """A fixed-width column without nulls as a numpy array of `dtype` (width items per row)."""
    array = column.combine_chunks()
    n = len(array) * width
    if n == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=n, offset=array.offset * width * dtype.itemsize)


def _images(images: torch.Tensor) -> pa.FixedSizeBinaryArray:
    """uint8 images (N, C, H, W) as fixed-size binary (C*H*W bytes each), zero-copy."""
    x = np.ascontiguousarray(images.numpy())
    n, width = x.shape[0], int(np.prod(x.shape[1:]))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(x)])


def split_table(name: str, split: Split) -> pa.Table:
    """One split as an Arrow table; images as fixed-size binary (C*H*W bytes each), zero-copy."""
    n = split.x.shape[0]
    columns: dict[str, pa.Array] = {
        "image": _images(split.x),
        "label": _column(split.y.numpy().astype(np.int64)),
        "split": _split_name(name, n),
        "source_index": _column(split.source_index.numpy().astype(np.int64)),
    }
    for key, value in split.params.items():
        # "copy" (which transformed copy of a test image) is bookkeeping, not a nuisance draw
        columns[key if key == "copy" else f"nuisance_{key}"] = _column(value.cpu().numpy())
    if split.base_x is not None:
        columns["base_image"] = _images(split.base_x)
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def write_split(path: Path, name: str, split: Split) -> None:
    pq.write_table(split_table(name, split), path)


def read_images(
    path: Path, shape: tuple[int, int, int], base: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images uint8 (N, C, H, W), labels int64 (N,), base images uint8 (N, C, H, W) or None) from one
    split file; the base images only with `base` and where the file has them (train, builder >= 2)."""
    file = pq.ParquetFile(path)
    base = base and "base_image" in file.schema_arrow.names
    table = file.read(columns=["image", "label", *(["base_image"] if base else [])])
    width = int(np.prod(shape))
    x = _numpy(table.column("image"), np.dtype(np.uint8), width).reshape(-1, *shape).copy()
    y = _numpy(table.column("label"), np.dtype(np.int64)).copy()
    b = _numpy(table.column("base_image"), np.dtype(np.uint8), width).reshape(-1, *shape).copy() if base else None
    return torch.from_numpy(x), torch.from_numpy(y), (torch.from_numpy(b) if b is not None else None)


def _counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return np.bincount(labels.numpy(), minlength=num_classes).astype(int).tolist()


def _manifest(spec: DatasetSpec, digest: str, splits: dict[str, Split], num_classes: int) -> dict[str, Any]:
    return {
        "digest": digest,
        "builder_version": BUILDER_VERSION,
        "spec": to_dict(spec),
        "num_classes": num_classes,
        "shape": list(splits["train"].x.shape[1:]),
        "class_order": class_order(num_classes, spec.instance).tolist(),  # largest class first
        "class_counts": {name: _counts(s.y, num_classes) for name, s in splits.items()},
        "sizes": {name: len(s.y) for name, s in splits.items()},
        "files": {name: f"{name}.parquet" for name in splits},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write(folder: Path, spec: DatasetSpec, digest: str, splits: dict[str, Split], num_classes: int) -> None:
    folder.mkdir(parents=True)
    for name, split in splits.items():
        write_split(folder / f"{name}.parquet", name, split)
    # The manifest goes last: a folder with a manifest is complete.
    (folder / MANIFEST).write_text(json.dumps(_manifest(spec, digest, splits, num_classes), indent=1))


def _to_built(spec: DatasetSpec, num_classes: int, splits: dict[str, Split], digest: str, path: Path) -> BuiltDataset:
    s = splits
    return BuiltDataset(
        spec=spec, num_classes=num_classes,
        train_x=s["train"].x, train_y=s["train"].y, val_x=s["val"].x, val_y=s["val"].y,
        test_x=s["test"].x, test_y=s["test"].y, test_tx=s["test_t"].x, test_ty=s["test_t"].y,
        digest=digest, path=path, train_base_x=s["train"].base_x,
    )


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(str(Path(path) / MANIFEST), f"unreadable manifest: {exc}") from None


def load_built(path: Path) -> BuiltDataset:
    """A stored build from its folder (the spec comes from its manifest)."""
    path = Path(path)
    manifest = read_manifest(path)
    c, h, w = manifest["shape"]
    splits = {}
    for name in SPLITS:
        x, y, base = read_images(path / manifest["files"][name], (c, h, w), base=name == "train")
        splits[name] = Split(x, y, torch.empty(0), base_x=base)
    spec = from_dict(DatasetSpec, manifest["spec"], "dataset")
    return _to_built(spec, int(manifest["num_classes"]), splits, manifest["digest"], path)


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (a pid we may not signal runs too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_builds(final: Path) -> list[Path]:
    """Remove the temporary folders killed builds of this digest left (`.<digest>.tmp-<pid>-<rand>`).

    Call only while holding the digest's lock: a builder holds it from before its temporary folder
    exists until after the rename, so under the lock every such folder is a dead build's, on any host.
    A pid alive on this host is still skipped, in case the lock file was replaced under a running build;
    at worst a leftover then waits for a later build."""
    removed = []
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.removeprefix(f".{final.name}.tmp-").split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _tidy_reused(final: Path) -> None:
    """Leftovers next to a complete build: removed when the lock is free now, else left for the next build."""
    if not any(final.parent.glob(f".{final.name}.tmp-*")):
        return
    from filelock import Timeout

    try:
        with FileLock(str(final.parent / f"{final.name}.lock"), timeout=0):
            remove_stale_builds(final)
    except Timeout:
        pass


def ensure_built(spec: DatasetSpec, storage_root: Path) -> tuple[BuiltDataset, bool]:
    """The build of `spec` under `storage_root`, and whether this call built it (False = reused)."""
    final = dataset_dir(spec, storage_root)
    if (final / MANIFEST).is_file():
        _tidy_reused(final)
        return load_built(final), False
    # Read (and so validate) the source before anything is written: bad input leaves no trace.
    source: SourceArrays = load_source(spec.source, spec.root, spec.image_size)
    check_buildable(source, spec.source)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f"{final.name}.lock")):
        remove_stale_builds(final)  # killed builds of this spec: we hold the lock, so they are gone
        if (final / MANIFEST).is_file():  # another process built it while we waited
            return load_built(final), False
        if final.exists():  # left without a manifest by something else: not ours to trust
            shutil.rmtree(final)
        splits, _ = build_splits(spec, source)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _write(tmp, spec, final.name, splits, source.num_classes)
            os.replace(tmp, final)  # atomic on one file system
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _to_built(spec, source.num_classes, splits, final.name, final), True


def get_dataset(spec: DatasetSpec, storage_root: Path) -> BuiltDataset:
    """The built data set of `spec`: read from `<storage_root>/datasets/<digest>/`, built first if absent."""
    return ensure_built(spec, storage_root)[0]
