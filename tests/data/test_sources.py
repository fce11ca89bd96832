from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from source_files import write_cifar, write_gtsrb, write_idx, write_k49, write_mnist

from gitlib.data.sources import check_source, digits_images, load_source
from gitlib.errors import DataError


def test_digits_split_and_zero_background() -> None:
    from sklearn.datasets import load_digits

    s = load_source("digits", None, None)
    raw = load_digits().images
    # native size 16, uint8, one channel; 50 per class held out as test, the rest train
    assert s.train_x.shape[1:] == (1, 16, 16) and s.train_x.dtype == torch.uint8 and s.native_size == 16
    assert np.bincount(s.test_y.numpy()).tolist() == [50] * 10
    assert len(s.train_y) + len(s.test_y) == len(raw)
    x, _ = digits_images(16)
    # full intensity range; the background stays exactly 0 after upsampling: every 8x8 pixel whose
    # 3x3 neighbourhood is all zero becomes a 2x2 block of exact zeros
    assert int(x.max()) == 255
    src = torch.from_numpy(raw).float().unsqueeze(1)
    calm = torch.nn.functional.max_pool2d(src, 3, stride=1, padding=1) == 0  # (N, 1, 8, 8)
    must_be_zero = calm.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert must_be_zero.sum() > 20_000 and (x[must_be_zero] == 0).all()
    # deterministic split
    again = load_source("digits", None, None)
    assert torch.equal(again.test_x, s.test_x) and torch.equal(again.train_y, s.train_y)
    # resized on request
    assert load_source("digits", None, 28).train_x.shape[-1] == 28


def test_k49_npz(tmp_path: Path) -> None:
    written = write_k49(tmp_path, per_class=3, test_per_class=2)
    s = load_source("k49", tmp_path, None)
    # arrays as written, with a channel axis, labels int64
    assert np.array_equal(s.train_x[:, 0].numpy(), written["train_x"])
    assert np.array_equal(s.test_y.numpy(), written["test_y"]) and s.test_y.dtype == torch.int64
    assert s.num_classes == 49 and s.native_size == 28
    # resizing keeps zero background zero
    big = load_source("k49", tmp_path, 32)
    assert big.train_x.shape[1:] == (1, 32, 32) and (big.train_x[:, :, :4] == 0).all()


def test_k49_errors_name_the_file(tmp_path: Path) -> None:
    write_k49(tmp_path)
    labels = tmp_path / "k49-train-labels.npz"
    np.savez(labels, np.zeros(5, np.uint8))
    # length mismatch between labels and images names the labels file
    with pytest.raises(DataError, match="5 labels for 196 images") as info:
        load_source("k49", tmp_path, None)
    assert info.value.path == str(labels)
    labels.write_bytes(b"PK\x03\x04 not really a zip")
    # a corrupt npz is unreadable, named
    with pytest.raises(DataError, match="unreadable") as info:
        load_source("k49", tmp_path, None)
    assert info.value.path == str(labels)
    np.savez(labels, wrong_key=np.zeros(196, np.uint8))
    with pytest.raises(DataError, match="arr_0"):
        load_source("k49", tmp_path, None)
    labels.unlink()
    # a missing file is named before anything is read
    with pytest.raises(DataError, match="missing") as info:
        check_source("k49", tmp_path)
    assert info.value.path == str(labels)
    # a missing root is named
    with pytest.raises(DataError, match="not a folder") as info:
        load_source("k49", tmp_path / "nope", None)
    assert info.value.path == str(tmp_path / "nope")


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("kmnist", "KMNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_family_idx(tmp_path: Path, name: str, folder: str) -> None:
    written = write_mnist(tmp_path, folder)
    s = load_source(name, tmp_path, None)
    # read through torchvision: the bytes we wrote, in order
    assert np.array_equal(s.train_x[:, 0].numpy(), written["train_x"])
    assert np.array_equal(s.test_y.numpy(), written["t10k_y"])
    assert s.train_x.shape[1:] == (1, 28, 28) and s.num_classes == 10


def test_idx_errors_name_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    # truncated images file: header and size disagree
    with pytest.raises(DataError, match="size") as info:
        load_source("mnist", tmp_path, None)
    assert info.value.path == str(images)
    write_idx(images, np.zeros((30, 28, 28), np.uint8))
    labels = raw / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros((29,), np.uint8))
    # label count differs from image count
    with pytest.raises(DataError, match="29 labels for 30 images") as info:
        load_source("mnist", tmp_path, None)
    assert info.value.path == str(labels)
    labels.write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    # labels file with an images magic number
    with pytest.raises(DataError, match="magic"):
        load_source("mnist", tmp_path, None)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path: Path, name: str) -> None:
    written = write_cifar(tmp_path, name)
    s = load_source(name, tmp_path, None)
    # CIFAR rows are channel-major 3x32x32
    assert np.array_equal(s.train_x.numpy(), written["train_x"]) and s.train_x.shape[1:] == (3, 32, 32)
    assert np.array_equal(s.test_y.numpy(), written["test_y"])
    assert s.num_classes == (10 if name == "cifar10" else 100)


def test_cifar_errors_name_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a python pickle") as info:  # caught from its first bytes
        load_source("cifar10", tmp_path, None)
    assert info.value.path == str(batch)
    batch.write_bytes(b"\x80\x04" + b"\x00" * 4000)  # a pickle's opening, then garbage
    with pytest.raises(DataError, match="unreadable CIFAR pickle") as info:
        load_source("cifar10", tmp_path, None)
    assert info.value.path == str(batch)
    batch.unlink()
    with pytest.raises(DataError, match="missing") as info:
        load_source("cifar10", tmp_path, None)
    assert info.value.path == str(batch)


def test_gtsrb_folders(tmp_path: Path) -> None:
    written = write_gtsrb(tmp_path)
    s = load_source("gtsrb", tmp_path, None)
    # variable-sized ppm files resized to 32x32 RGB; class = sorted folder position
    assert s.train_x.shape == (86, 3, 32, 32) and s.num_classes == 43
    assert s.train_y.tolist() == written["train_y"] and s.test_y.tolist() == written["test_y"]
    # each fixture image is flat grey at 5 * class: resizing keeps the value
    assert torch.equal(s.train_x[:, 0, 5, 5].long(), s.train_y * 5)
    assert torch.equal(s.test_x[:, 1, 10, 10].long(), s.test_y * 5)
    assert load_source("gtsrb", tmp_path, 16).test_x.shape[-1] == 16


def test_gtsrb_errors_name_the_file(tmp_path: Path) -> None:
    write_gtsrb(tmp_path)
    bad = tmp_path / "gtsrb" / "GTSRB" / "Training" / "00007" / "00000_00001.ppm"
    bad.write_bytes(b"P6 not an image")
    with pytest.raises(DataError, match="unreadable image") as info:
        load_source("gtsrb", tmp_path, None)
    assert info.value.path == str(bad)
    csv_path = tmp_path / "gtsrb" / "GT-final_test.csv"
    csv_path.unlink()
    with pytest.raises(DataError, match="missing") as info:
        load_source("gtsrb", tmp_path, None)
    assert info.value.path == str(csv_path)
