"""Real image sources in their published file formats: one registered class per source.

A source knows its classes, native size and files, checks those files from their headers alone (the
pre-flight check every training command runs before anything starts or is written), and reads them
into uint8 tensors (N, C, H, W). Adding a source is one class here. This module imports no torch at
import time, so configs validate (and `gitsweep status` runs) without it.

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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gitlib.errors import DataError
from gitlib.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["SOURCES", "Source", "SourceArrays", "check_source", "digits_images", "load_source", "resize"]

DIGITS_TEST_PER_CLASS = 50


@dataclass
class SourceArrays:
    """A source's train and test split as uint8 images (N, C, H, W) and int64 labels (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    native_size: int


class Source:
    """One real data set format. Subclasses set the class variables and implement files / check / read."""

    name: ClassVar[str]
    num_classes: ClassVar[int]
    native_size: ClassVar[int]
    needs_root: ClassVar[bool] = True

    def files(self, root: Path) -> list[Path]:
        """The files (or folders) `read` uses."""
        raise NotImplementedError

    def check(self, root: Path) -> None:
        """Headers, dtypes and shapes of every file, without reading whole arrays; DataError naming the file."""
        raise NotImplementedError

    def read(self, root: Path, size: int) -> SourceArrays:
        raise NotImplementedError

    def check_root(self, root: str | Path | None) -> Path:
        """The root as a folder holding every expected file (existence only)."""
        if not self.needs_root:
            return Path(root or ".")
        if not root:
            raise DataError("dataset.root", f"required for source '{self.name}'")
        base = Path(root)
        if not base.is_dir():
            raise DataError(str(root), f"source root for '{self.name}' is not a folder")
        for path in self.files(base):
            if not path.exists():
                raise DataError(str(path), f"missing (source '{self.name}' expects it under {root})")
        return base


SOURCES: Registry[type[Source]] = Registry("dataset.source")


def _source(name: str) -> Source:
    return SOURCES.get(name)()


def check_source(name: str, root: str | Path | None) -> None:
    """Pre-flight: root and files present, headers readable, dtypes and shapes right (reads headers only)."""
    src = _source(name)
    src.check(src.check_root(root))


def load_source(name: str, root: str | Path | None = None, image_size: int | None = None) -> SourceArrays:
    """Read source `name` from `root`, resized to `image_size` (None = native size)."""
    src = _source(name)
    base = src.check_root(root)
    src.check(base)
    size = image_size or src.native_size
    arrays = src.read(base, size)
    arrays.train_x = resize(arrays.train_x, size)
    arrays.test_x = resize(arrays.test_x, size)
    return arrays


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), bilinear with antialiasing; weights are
    non-negative, so an all-zero neighbourhood stays exactly 0 (the background nuisance relies on it)."""
    import torch
    import torch.nn.functional as F

    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _labels(path: Path, labels: np.ndarray, n_images: int, num_classes: int) -> torch.Tensor:
    import torch

    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(str(path), f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != n_images:
        raise DataError(str(path), f"{len(labels)} labels for {n_images} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(str(path), f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return torch.from_numpy(labels.astype(np.int64))


# ---- digits ---------------------------------------------------------------------------------------


def digits_images(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits in their own order: uint8 (N, 1, size, size), int64 labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images * (255.0 / 16.0)).float().unsqueeze(1)  # (N, 1, 8, 8) in 0..255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8), torch.from_numpy(np.asarray(digits.target, np.int64))


@SOURCES.register("digits")
class Digits(Source):
    name, num_classes, native_size, needs_root = "digits", 10, 16, False

    def files(self, root: Path) -> list[Path]:
        return []

    def check(self, root: Path) -> None:
        return None  # shipped inside scikit-learn

    def read(self, root: Path, size: int) -> SourceArrays:
        import torch

        x, y = digits_images(size)
        # No test split ships: hold out the same 50 images per class every time (seeded, stratified).
        rng = np.random.default_rng(0)
        labels = y.numpy()
        test_idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:DIGITS_TEST_PER_CLASS]
                                   for c in range(self.num_classes)])
        is_test = torch.zeros(len(y), dtype=torch.bool)
        is_test[torch.from_numpy(test_idx)] = True
        return SourceArrays(x[~is_test], y[~is_test], x[is_test], y[is_test], self.num_classes, self.native_size)


# ---- k49 ------------------------------------------------------------------------------------------


def npz_header(path: Path, key: str = "arr_0") -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array `key` in an .npz, from its .npy header alone (works for compressed files)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except KeyError:
        raise DataError(str(path), f"no array '{key}' in the .npz") from None
    except Exception as exc:  # not a zip, not an .npy inside, truncated: unusable either way
        raise DataError(str(path), f"unreadable .npz: {type(exc).__name__}: {exc}") from None
    return tuple(shape), np.dtype(dtype)


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["arr_0"])
    except KeyError:
        raise DataError(str(path), "no array 'arr_0' in the .npz") from None
    except Exception as exc:  # zip, pickle or I/O failure: any of them means the file is unusable
        raise DataError(str(path), f"unreadable .npz: {type(exc).__name__}: {exc}") from None


@SOURCES.register("k49")
class K49(Source):
    name, num_classes, native_size = "k49", 49, 28

    def files(self, root: Path) -> list[Path]:
        return [root / f"k49-{split}-{kind}.npz" for split in ("train", "test") for kind in ("imgs", "labels")]

    def check(self, root: Path) -> None:
        for split in ("train", "test"):
            img_path, lab_path = root / f"k49-{split}-imgs.npz", root / f"k49-{split}-labels.npz"
            shape, dtype = npz_header(img_path)
            if dtype != np.uint8 or len(shape) != 3:
                raise DataError(str(img_path), f"expected uint8 images (N, H, W), got {dtype} {shape}")
            lshape, ldtype = npz_header(lab_path)
            if len(lshape) != 1 or not np.issubdtype(ldtype, np.integer):
                raise DataError(str(lab_path), f"labels must be a 1-D integer array, got {ldtype} {lshape}")
            if lshape[0] != shape[0]:
                raise DataError(str(lab_path), f"{lshape[0]} labels for {shape[0]} images")

    def read(self, root: Path, size: int) -> SourceArrays:
        import torch

        parts: list[torch.Tensor] = []  # train_x, train_y, test_x, test_y
        for split in ("train", "test"):
            img_path, lab_path = root / f"k49-{split}-imgs.npz", root / f"k49-{split}-labels.npz"
            imgs = _read_npz(img_path)
            parts += [torch.from_numpy(imgs).unsqueeze(1), _labels(lab_path, _read_npz(lab_path), len(imgs), 49)]
        return SourceArrays(parts[0], parts[1], parts[2], parts[3], self.num_classes, self.native_size)


# ---- MNIST family -----------------------------------------------------------------------------------


def idx_count(path: Path, ndim: int) -> int:
    """Validate an uncompressed uint8 IDX file's header and length; returns its item count."""
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


class _MnistLike(Source):
    native_size, num_classes = 28, 10
    folder: ClassVar[str]
    dataset_class: ClassVar[str]  # torchvision.datasets class that reads this layout
    IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def files(self, root: Path) -> list[Path]:
        return [root / self.folder / "raw" / f for f in self.IDX]

    def check(self, root: Path) -> None:
        raw = root / self.folder / "raw"
        for prefix in ("train", "t10k"):
            img_path, lab_path = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
            n_images, n_labels = idx_count(img_path, 3), idx_count(lab_path, 1)
            if n_labels != n_images:
                raise DataError(str(lab_path), f"{n_labels} labels for {n_images} images in {img_path.name}")

    def read(self, root: Path, size: int) -> SourceArrays:
        from torchvision import datasets

        cls = getattr(datasets, self.dataset_class)
        raw = root / self.folder / "raw"
        parts: list[torch.Tensor] = []  # train_x, train_y, test_x, test_y
        for train, prefix in ((True, "train"), (False, "t10k")):
            try:
                ds = cls(str(root), train=train, download=False)
            except Exception as exc:  # torchvision raises RuntimeError / AssertionError on bad files
                raise DataError(str(raw), f"torchvision {cls.__name__} could not read it: {exc}") from None
            lab_path = raw / f"{prefix}-labels-idx1-ubyte"
            parts += [ds.data.unsqueeze(1).contiguous(),
                      _labels(lab_path, ds.targets.numpy(), len(ds.data), self.num_classes)]
        return SourceArrays(parts[0], parts[1], parts[2], parts[3], self.num_classes, self.native_size)


@SOURCES.register("mnist")
class Mnist(_MnistLike):
    name, folder, dataset_class = "mnist", "MNIST", "MNIST"


@SOURCES.register("kmnist")
class Kmnist(_MnistLike):
    name, folder, dataset_class = "kmnist", "KMNIST", "KMNIST"


@SOURCES.register("fashion-mnist")
class FashionMnist(_MnistLike):
    name, folder, dataset_class = "fashion-mnist", "FashionMNIST", "FashionMNIST"


# ---- CIFAR ------------------------------------------------------------------------------------------


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except Exception as exc:  # truncated or foreign file: unusable either way
        raise DataError(str(path), f"unreadable CIFAR pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(str(path), "expected a pickled dict with 'data' and labels")
    return data


class _Cifar(Source):
    native_size = 32
    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    label_key: ClassVar[str]

    def files(self, root: Path) -> list[Path]:
        return [root / self.folder / f for f in (*self.train_files, *self.test_files)]

    def check(self, root: Path) -> None:
        # A pickle has no header to read without unpickling: check its opening protocol byte and that
        # it is at least one 32x32 RGB image long; `read` validates keys, dtypes and shapes.
        for path in self.files(root):
            try:
                with open(path, "rb") as f:
                    head = f.read(2)
                size = path.stat().st_size
            except OSError as exc:
                raise DataError(str(path), f"unreadable: {exc.strerror or exc}") from None
            if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
                raise DataError(str(path), "not a python pickle (CIFAR batches are pickled dicts)")
            if size < 3 * 32 * 32:
                raise DataError(str(path), f"{size} bytes: too small to hold a CIFAR batch")

    def _batches(self, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        xs, ys = [], []
        for path in paths:
            batch = _read_pickle(path)
            if "data" not in batch or self.label_key not in batch:
                raise DataError(str(path), f"missing key 'data' or '{self.label_key}'")
            data = np.asarray(batch["data"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataError(str(path), f"'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
            xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))
            ys.append(_labels(path, np.asarray(batch[self.label_key]), len(data), self.num_classes))
        return torch.cat(xs), torch.cat(ys)

    def read(self, root: Path, size: int) -> SourceArrays:
        train_x, train_y = self._batches([root / self.folder / f for f in self.train_files])
        test_x, test_y = self._batches([root / self.folder / f for f in self.test_files])
        return SourceArrays(train_x, train_y, test_x, test_y, self.num_classes, self.native_size)


@SOURCES.register("cifar10")
class Cifar10(_Cifar):
    name, num_classes, folder, label_key = "cifar10", 10, "cifar-10-batches-py", "labels"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)


@SOURCES.register("cifar100")
class Cifar100(_Cifar):
    name, num_classes, folder, label_key = "cifar100", 100, "cifar-100-python", "fine_labels"
    train_files, test_files = ("train",), ("test",)


# ---- GTSRB ------------------------------------------------------------------------------------------


def _read_images(paths: list[Path], size: int) -> torch.Tensor:
    """Variable-sized image files -> uint8 (N, 3, size, size); one PIL decode each (load time only)."""
    import torch
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        except Exception as exc:  # missing, truncated or not an image
            raise DataError(str(path), f"unreadable image: {type(exc).__name__}: {exc}") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@SOURCES.register("gtsrb")
class Gtsrb(Source):
    name, num_classes, native_size = "gtsrb", 43, 32

    def files(self, root: Path) -> list[Path]:
        g = root / "gtsrb"
        return [g / "GTSRB" / "Training", g / "GTSRB" / "Final_Test" / "Images", g / "GT-final_test.csv"]

    def _classes(self, train_dir: Path) -> list[str]:
        # As torchvision's GTSRB (ImageFolder rules): class index = position of the folder in sorted order.
        classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
        if len(classes) != self.num_classes:
            raise DataError(str(train_dir), f"expected {self.num_classes} class folders, found {len(classes)}")
        return classes

    def _test_rows(self, csv_path: Path) -> list[dict[str, str]]:
        try:
            with open(csv_path, newline="") as f:
                reader = csv.DictReader(f, delimiter=";", skipinitialspace=True)
                rows = list(reader)
                columns = list(reader.fieldnames or [])
            missing = [c for c in ("Filename", "ClassId") if c not in columns]
            if missing:  # checked on the header: a file without rows has no row to fail on
                raise KeyError(", ".join(missing))
            for row in rows:
                row["Filename"], row["ClassId"] = str(row["Filename"]), str(int(row["ClassId"]))
        except (OSError, KeyError, ValueError, TypeError, csv.Error) as exc:
            raise DataError(str(csv_path), f"expected ';'-separated columns Filename and ClassId: {exc}") from None
        if not rows:  # the test split would be empty, and every trial would fail on it
            raise DataError(str(csv_path), "has a header but no rows: no test images are listed")
        return rows

    def check(self, root: Path) -> None:
        base = root / "gtsrb"
        self._classes(base / "GTSRB" / "Training")
        self._test_rows(base / "GT-final_test.csv")

    def read(self, root: Path, size: int) -> SourceArrays:
        base = root / "gtsrb"
        train_dir = base / "GTSRB" / "Training"
        train_paths, train_labels = [], []
        for label, cls in enumerate(self._classes(train_dir)):
            for dirpath, _, files in sorted(os.walk(train_dir / cls, followlinks=True)):
                for fname in sorted(files):
                    if fname.lower().endswith(".ppm"):
                        train_paths.append(Path(dirpath) / fname)
                        train_labels.append(label)
        csv_path = base / "GT-final_test.csv"
        rows = self._test_rows(csv_path)
        test_dir = base / "GTSRB" / "Final_Test" / "Images"
        c = self.num_classes
        train_y = _labels(train_dir, np.array(train_labels, dtype=np.int64), len(train_paths), c)
        test_y = _labels(csv_path, np.array([int(r["ClassId"]) for r in rows], dtype=np.int64), len(rows), c)
        test_x = _read_images([test_dir / r["Filename"] for r in rows], size)
        return SourceArrays(_read_images(train_paths, size), train_y, test_x, test_y, c, self.native_size)
