"""Real image sources in their published file formats -> uint8 tensors (N, C, H, W).

Layouts (under `root`):
- digits: scikit-learn's bundled `load_digits` (no root); 8x8 values 0..16 scaled to 0..255 and
  upsampled bilinearly (background zeros stay exactly 0); 50 images per class are held out as test.
- k49: `k49-{train,test}-{imgs,labels}.npz`, key `arr_0`.
- mnist / kmnist / fashion-mnist: torchvision's layout, `<root>/{MNIST,KMNIST,FashionMNIST}/raw/` with
  the unzipped IDX files, read through torchvision's dataset classes.
- cifar10 / cifar100: python pickles in `<root>/cifar-10-batches-py/` / `<root>/cifar-100-python/`.
- gtsrb: torchvision's layout, `<root>/gtsrb/GTSRB/Training/<class>/*.ppm`, test images in
  `<root>/gtsrb/GTSRB/Final_Test/Images/` listed in `<root>/gtsrb/GT-final_test.csv` (';'-separated).

Any missing, unreadable or mismatched file raises DataError naming the file.
"""

from __future__ import annotations

import csv
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gitlib.data.layouts import (
    CIFAR_FILES,
    DIGITS_TEST_PER_CLASS,
    MNIST_FOLDERS,
    NATIVE_SIZE,
    NUM_CLASSES,
    check_source,
    source_files,
)
from gitlib.errors import DataError

__all__ = [
    "NATIVE_SIZE", "NUM_CLASSES", "SourceArrays", "check_source", "digits_images", "load_source", "resize", "source_files",
]


@dataclass
class SourceArrays:
    """A source's train and test split as uint8 images (N, C, H, W) and int64 labels (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    native_size: int


def load_source(name: str, root: str | Path | None = None, image_size: int | None = None) -> SourceArrays:
    """Read source `name` from `root`, resized to `image_size` (None = native size)."""
    check_source(name, root)
    size = image_size or NATIVE_SIZE[name]
    if name == "digits":
        arrays = _load_digits(size)
    elif name == "k49":
        arrays = _load_k49(Path(str(root)))
    elif name in MNIST_FOLDERS:
        arrays = _load_mnist(name, Path(str(root)))
    elif name in CIFAR_FILES:
        arrays = _load_cifar(name, Path(str(root)))
    else:
        arrays = _load_gtsrb(Path(str(root)), size)
    arrays.train_x = resize(arrays.train_x, size)
    arrays.test_x = resize(arrays.test_x, size)
    return arrays


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), bilinear with antialiasing; weights are
    non-negative, so an all-zero neighbourhood stays exactly 0 (the background nuisance relies on it)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _check_labels(path: Path, labels: np.ndarray, n_images: int, num_classes: int) -> torch.Tensor:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(str(path), f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != n_images:
        raise DataError(str(path), f"{len(labels)} labels for {n_images} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(str(path), f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return torch.from_numpy(labels.astype(np.int64))


def digits_images(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits in their own order: uint8 (N, 1, size, size), int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images * (255.0 / 16.0)).float().unsqueeze(1)  # (N, 1, 8, 8) in 0..255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8), torch.from_numpy(np.asarray(digits.target, np.int64))


def _load_digits(size: int) -> SourceArrays:
    x, y = digits_images(size)
    # No test split ships: hold out the same 50 images per class every time (seeded, stratified).
    rng = np.random.default_rng(0)
    labels = y.numpy()
    test_idx = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:DIGITS_TEST_PER_CLASS] for c in range(NUM_CLASSES["digits"])]
    )
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.from_numpy(test_idx)] = True
    return SourceArrays(x[~is_test], y[~is_test], x[is_test], y[is_test], NUM_CLASSES["digits"], NATIVE_SIZE["digits"])


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["arr_0"])
    except KeyError:
        raise DataError(str(path), "no array 'arr_0' in the .npz") from None
    except Exception as exc:  # zip, pickle or I/O failure: any of them means the file is unusable
        raise DataError(str(path), f"unreadable .npz: {type(exc).__name__}: {exc}") from None


def _load_k49(root: Path) -> SourceArrays:
    parts: list[torch.Tensor] = []  # train_x, train_y, test_x, test_y
    for split in ("train", "test"):
        img_path, lab_path = root / f"k49-{split}-imgs.npz", root / f"k49-{split}-labels.npz"
        imgs = _read_npz(img_path)
        if imgs.dtype != np.uint8 or imgs.ndim != 3:
            raise DataError(str(img_path), f"expected uint8 images (N, H, W), got {imgs.dtype} {imgs.shape}")
        labels = _check_labels(lab_path, _read_npz(lab_path), len(imgs), NUM_CLASSES["k49"])
        parts += [torch.from_numpy(imgs).unsqueeze(1), labels]
    return SourceArrays(parts[0], parts[1], parts[2], parts[3], NUM_CLASSES["k49"], NATIVE_SIZE["k49"])


def _check_idx(path: Path, ndim: int) -> int:
    """Validate an uncompressed IDX file's header and length; returns its item count."""
    try:
        with open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
        file_size = path.stat().st_size
    except OSError as exc:
        raise DataError(str(path), f"unreadable: {exc.strerror or exc}") from None
    if len(header) < 4 + 4 * ndim or header[:3] != b"\x00\x00\x08" or header[3] != ndim:
        raise DataError(str(path), f"not an uint8 IDX file with {ndim} dimension(s) (bad magic number)")
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if file_size != expected:
        raise DataError(str(path), f"size {file_size} bytes, header {dims} needs {expected}")
    return dims[0]


def _load_mnist(name: str, root: Path) -> SourceArrays:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "kmnist": datasets.KMNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    raw = root / MNIST_FOLDERS[name] / "raw"
    parts: list[torch.Tensor] = []  # train_x, train_y, test_x, test_y
    for train, prefix in ((True, "train"), (False, "t10k")):
        img_path, lab_path = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
        n_images, n_labels = _check_idx(img_path, 3), _check_idx(lab_path, 1)
        if n_labels != n_images:
            raise DataError(str(lab_path), f"{n_labels} labels for {n_images} images in {img_path.name}")
        try:
            ds = cls(str(root), train=train, download=False)
        except Exception as exc:  # torchvision raises RuntimeError / AssertionError on bad files
            raise DataError(str(raw), f"torchvision {cls.__name__} could not read it: {exc}") from None
        labels = _check_labels(lab_path, ds.targets.numpy(), len(ds.data), NUM_CLASSES[name])
        parts += [ds.data.unsqueeze(1).contiguous(), labels]
    return SourceArrays(parts[0], parts[1], parts[2], parts[3], NUM_CLASSES[name], NATIVE_SIZE[name])


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except Exception as exc:  # truncated or foreign file: unusable either way
        raise DataError(str(path), f"unreadable CIFAR pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(str(path), "expected a pickled dict with 'data' and labels")
    return data


def _load_cifar_batches(paths: list[Path], label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for path in paths:
        batch = _read_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(str(path), f"missing key 'data' or '{label_key}'")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(str(path), f"'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        ys.append(_check_labels(path, np.asarray(batch[label_key]), len(data), num_classes))
    return torch.cat(xs), torch.cat(ys)


def _load_cifar(name: str, root: Path) -> SourceArrays:
    folder, train, test, label_key = CIFAR_FILES[name]
    c = NUM_CLASSES[name]
    train_x, train_y = _load_cifar_batches([root / folder / f for f in train], label_key, c)
    test_x, test_y = _load_cifar_batches([root / folder / f for f in test], label_key, c)
    return SourceArrays(train_x, train_y, test_x, test_y, c, NATIVE_SIZE[name])


def _read_images(paths: list[Path], size: int) -> torch.Tensor:
    """Variable-sized image files -> uint8 (N, 3, size, size); one PIL decode each (load time only)."""
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        except Exception as exc:  # missing, truncated or not an image
            raise DataError(str(path), f"unreadable image: {type(exc).__name__}: {exc}") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _load_gtsrb(root: Path, size: int) -> SourceArrays:
    base = root / "gtsrb"
    train_dir = base / "GTSRB" / "Training"
    # As torchvision's GTSRB (ImageFolder rules): class index = position of the folder in sorted order.
    classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if len(classes) != NUM_CLASSES["gtsrb"]:
        raise DataError(str(train_dir), f"expected {NUM_CLASSES['gtsrb']} class folders, found {len(classes)}")
    train_paths, train_labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(train_dir / cls, followlinks=True)):
            for fname in sorted(files):
                if fname.lower().endswith(".ppm"):
                    train_paths.append(Path(dirpath) / fname)
                    train_labels.append(label)
    csv_path = base / "GT-final_test.csv"
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";", skipinitialspace=True))
        test_paths = [test_dir / row["Filename"] for row in rows]
        test_labels = [int(row["ClassId"]) for row in rows]
    except (OSError, KeyError, ValueError, TypeError, csv.Error) as exc:
        raise DataError(str(csv_path), f"expected ';'-separated columns Filename and ClassId: {exc}") from None
    c = NUM_CLASSES["gtsrb"]
    train_y = _check_labels(train_dir, np.array(train_labels, dtype=np.int64), len(train_paths), c)
    test_y = _check_labels(csv_path, np.array(test_labels, dtype=np.int64), len(test_paths), c)
    train_x, test_x = _read_images(train_paths, size), _read_images(test_paths, size)
    return SourceArrays(train_x, train_y, test_x, test_y, c, NATIVE_SIZE["gtsrb"])
