"""Writers of tiny real-format source files (K49 npz, IDX, CIFAR pickles, GTSRB folders)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def digit_like(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """uint8 (n, size, size): zero background with a bright random blob of strokes in the middle."""
    x = np.zeros((n, size, size), dtype=np.uint8)
    lo, hi = size // 4, 3 * size // 4
    x[:, lo:hi, lo:hi] = rng.integers(0, 256, (n, hi - lo, hi - lo)) * (rng.random((n, hi - lo, hi - lo)) < 0.5)
    return x


def write_k49(root: Path, per_class: int = 4, test_per_class: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """k49-{train,test}-{imgs,labels}.npz with all 49 classes; returns the arrays written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(49), n).astype(np.uint8)
        imgs = digit_like(rng, len(labels), 28)
        np.savez(root / f"k49-{split}-imgs.npz", imgs)
        np.savez(root / f"k49-{split}-labels.npz", labels)
        out[f"{split}_x"], out[f"{split}_y"] = imgs, labels
    return out


def write_idx(path: Path, array: np.ndarray) -> None:
    """uint8 IDX file: magic 0x0000080N (N = ndim), big-endian uint32 dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, folder: str, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = digit_like(rng, n, 28), (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", y)
        out[f"{prefix}_x"], out[f"{prefix}_y"] = x, y
    return out


def write_cifar(root: Path, name: str, per_file: int = 20) -> dict[str, np.ndarray]:
    """CIFAR python pickles (dict with 'data' uint8 (N, 3072) and 'labels' / 'fine_labels')."""
    rng = np.random.default_rng(2)
    if name == "cifar10":
        folder, train, test, key, c = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10
    else:
        folder, train, test, key, c = root / "cifar-100-python", ["train"], ["test"], "fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, files in (("train", train), ("test", test)):
        for fname in files:
            data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, c, per_file)]
            with open(folder / fname, "wb") as f:
                pickle.dump({"data": data, key: labels, "batch_label": fname}, f)
            out[f"{split}_x"].append(data.reshape(-1, 3, 32, 32))
            out[f"{split}_y"].append(np.array(labels))
    return {k: np.concatenate(v) for k, v in out.items()}


def write_gtsrb(root: Path, per_class: int = 2) -> dict[str, list]:
    """torchvision's GTSRB layout: Training/<00000..00042>/*.ppm and Final_Test/Images + GT csv."""
    rng = np.random.default_rng(3)
    base = root / "gtsrb"
    train_labels, test_rows = [], []
    for c in range(43):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            side = int(rng.integers(20, 40))
            Image.fromarray(np.full((side, side + 3, 3), c * 5, np.uint8)).save(folder / f"00000_{i:05d}.ppm")
            train_labels.append(c)
        (folder / f"GT-{c:05d}.csv").write_text("Filename;ClassId\n")  # torchvision ignores it too
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    for i, c in enumerate(rng.permutation(43)[:10]):
        name = f"{i:05d}.ppm"
        Image.fromarray(np.full((30, 30, 3), int(c) * 5, np.uint8)).save(test_dir / name)
        test_rows.append({"Filename": name, "Width": 30, "Height": 30, "Roi.X1": 1, "Roi.Y1": 1,
                          "Roi.X2": 29, "Roi.Y2": 29, "ClassId": int(c)})
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(test_rows[0]), delimiter=";")
        writer.writeheader()
        writer.writerows(test_rows)
    return {"train_y": train_labels, "test_y": [r["ClassId"] for r in test_rows]}
