"""Where each source's files live (torch-free, so the CLI can check a root before loading torch)."""

from __future__ import annotations

from pathlib import Path

from gitlib.errors import DataError

NUM_CLASSES = {
    "digits": 10, "k49": 49, "mnist": 10, "kmnist": 10, "fashion-mnist": 10,
    "cifar10": 10, "cifar100": 100, "gtsrb": 43,
}
NATIVE_SIZE = {
    "digits": 16, "k49": 28, "mnist": 28, "kmnist": 28, "fashion-mnist": 28,
    "cifar10": 32, "cifar100": 32, "gtsrb": 32,
}
DIGITS_TEST_PER_CLASS = 50
MNIST_FOLDERS = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "FashionMNIST"}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def source_files(name: str, root: str | Path | None) -> list[Path]:
    """The files (or folders, for gtsrb) `load_source` reads; empty for digits."""
    if name == "digits":
        return []
    base = Path(root or "")
    if name == "k49":
        return [base / f"k49-{split}-{kind}.npz" for split in ("train", "test") for kind in ("imgs", "labels")]
    if name in MNIST_FOLDERS:
        return [base / MNIST_FOLDERS[name] / "raw" / f for f in IDX_FILES]
    if name in CIFAR_FILES:
        folder, train, test, _ = CIFAR_FILES[name]
        return [base / folder / f for f in (*train, *test)]
    if name == "gtsrb":
        g = base / "gtsrb"
        return [g / "GTSRB" / "Training", g / "GTSRB" / "Final_Test" / "Images", g / "GT-final_test.csv"]
    raise DataError(name, f"unknown source (known: {', '.join(NUM_CLASSES)})")


def check_source(name: str, root: str | Path | None) -> None:
    """Raise DataError naming the root or the first expected file that is missing (reads nothing)."""
    if name != "digits":
        if not root:
            raise DataError("dataset.root", f"required for source '{name}'")
        if not Path(root).is_dir():
            raise DataError(str(root), f"source root for '{name}' is not a folder")
    for path in source_files(name, root):
        if not path.exists():
            raise DataError(str(path), f"missing (source '{name}' expects it under {root})")
