"""Config loading and the CLI's answer to bad input: exit 2, one line naming the key or file, no
traceback, nothing written. The CLI runs for real, in a subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import run_cli, run_parallel

from gitlib.data.spec import DatasetSpec
from gitlib.errors import ConfigError, DataError
from sweeps.config import load_config


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_k49(root: Path, per_class: int = 3) -> None:
    """The four K49 .npz files (key arr_0), all 49 classes, zero background."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(49, dtype=np.uint8), per_class)
        imgs = np.zeros((len(labels), 28, 28), np.uint8)
        imgs[:, 8:20, 8:20] = rng.integers(1, 256, (len(labels), 12, 12))
        np.savez(root / f"k49-{split}-imgs.npz", imgs)
        np.savez(root / f"k49-{split}-labels.npz", labels)


def gitsweep(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(args, timeout=120, env={"GITSWEEP_HOME": str(home)})


def gitsweep_parallel(calls: list[tuple[list[str], Path]]) -> list[subprocess.CompletedProcess[str]]:
    return run_parallel([(args, {"GITSWEEP_HOME": str(home)}) for args, home in calls])


def assert_bad_input(result: subprocess.CompletedProcess[str], home: Path, *names: str) -> None:
    lines = result.stderr.strip().splitlines()
    # bad input: exit code 2 ...
    assert result.returncode == 2, result.stderr
    # ... exactly one line on stderr, no traceback ...
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    # ... naming the key or file ...
    for name in names:
        assert name in lines[0], (name, lines[0])
    # ... and nothing written under the storage folder
    assert not home.exists() or not any(home.iterdir())


K49_YAML = "name: t\ndataset:\n  source: k49\n  root: {root}\n  max_per_class: 20\n"


@pytest.mark.parametrize(
    ("yaml_text", "sets", "names"),
    [
        ("name: t\ndataset:\n  colour: red\n", [], ["dataset.colour", "unknown key"]),
        ("name: t\ndataset:\n  imbalance_ratio: 0.5\n", [], ["dataset.imbalance_ratio", ">= 1"]),
        ("name: t\ndataset:\n  nuisance: blur\n", [], ["dataset.nuisance", "blur"]),
        ("name: t\ndataset:\n  source: svhn\n", [], ["dataset.source", "svhn"]),
        ("name: t\ndataset:\n  source: k49\n", [], ["dataset.root", "required"]),
        ("name: t\n", ["dataset.max_per_class=lots"], ["dataset.max_per_class", "integer"]),
        ("name: t\n", ["dataset.val_fraction=1.5"], ["dataset.val_fraction"]),
        ("name: t\n", ["dataset"], ["--set needs key.path=value"]),
    ],
)
def test_bad_config_values(tmp_path: Path, yaml_text: str, sets: list[str], names: list[str]) -> None:
    config = write_yaml(tmp_path / "c.yaml", yaml_text)
    home = tmp_path / "home"
    args = ["data", "build", str(config)] + [a for s in sets for a in ("--set", s)]
    assert_bad_input(gitsweep(args, home), home, *names)


def test_missing_config_and_yaml_syntax(tmp_path: Path) -> None:
    home = tmp_path / "home"
    missing = tmp_path / "nope.yaml"
    assert_bad_input(gitsweep(["data", "build", str(missing)], home), home, str(missing), "no such config")
    broken = write_yaml(tmp_path / "broken.yaml", "name: t\ndataset: [unclosed\n  source: digits\n")
    assert_bad_input(gitsweep(["data", "build", str(broken)], home), home, str(broken), "YAML syntax error")


def test_missing_root_and_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = tmp_path / "k49"
    config = write_yaml(tmp_path / "c.yaml", K49_YAML.format(root=root))
    # the root folder itself is missing
    assert_bad_input(gitsweep(["data", "build", str(config)], home), home, str(root), "not a folder")
    write_k49(root)
    (root / "k49-test-labels.npz").unlink()
    # one expected file is missing
    assert_bad_input(gitsweep(["data", "build", str(config)], home), home, str(root / "k49-test-labels.npz"))


def test_mismatched_and_corrupt_files(tmp_path: Path) -> None:
    roots = [tmp_path / "k49-mismatched", tmp_path / "k49-corrupt"]
    homes = [tmp_path / "home-mismatched", tmp_path / "home-corrupt"]
    configs = []
    for root in roots:
        write_k49(root)
        configs.append(write_yaml(tmp_path / f"{root.name}.yaml", K49_YAML.format(root=root)))
    labels = roots[0] / "k49-train-labels.npz"
    np.savez(labels, np.zeros(100, np.uint8))
    images = roots[1] / "k49-train-imgs.npz"
    images.write_bytes(images.read_bytes()[:200])
    mismatched, corrupt = gitsweep_parallel([(["data", "build", str(c)], h) for c, h in zip(configs, homes, strict=True)])
    # labels length differs from images length
    assert_bad_input(mismatched, homes[0], str(labels), "100 labels for 147 images")
    # a truncated (corrupt) npz
    assert_bad_input(corrupt, homes[1], str(images), "unreadable")


def test_build_prints_class_table(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = tmp_path / "k49"
    write_k49(root)
    config = write_yaml(tmp_path / "c.yaml", K49_YAML.format(root=root))
    result = gitsweep(["data", "build", str(config), "--set", "dataset.nuisance=dilation"], home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # header, one row per class (class, train, val, test), total, summary, location
    assert lines[0].split() == ["class", "train", "val", "test"] and len(lines) == 1 + 49 + 3
    assert lines[1].split() == ["0", "20", "1", "3"]
    written = Path(lines[-1].removeprefix("written to "))
    assert written.parent == home / "datasets" and (written / "manifest.json").is_file()
    again = gitsweep(["data", "build", str(config), "--set", "dataset.nuisance=dilation"], home)
    # the second build of the same spec reuses the stored one
    assert again.returncode == 0 and "reused" in again.stdout


def test_load_config_overrides_and_errors(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", "name: t\ndataset:\n  source: digits\n  profile: zipf\n")
    cfg, pinned = load_config(str(config), ["dataset.instance=4", "dataset.zipf_alpha=2"])
    # YAML sets the values, --set overrides, everything typed
    assert cfg.dataset == DatasetSpec(source="digits", profile="zipf", instance=4, zipf_alpha=2.0)
    assert pinned == []
    with pytest.raises(ConfigError) as info:
        load_config(str(config), ["dataset.instance=-1"])
    assert info.value.key == "dataset.instance"
    with pytest.raises(DataError):
        load_config(str(tmp_path / "absent.yaml"))


def test_extends_merges_over_its_base(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yaml", "dataset:\n  nuisance: dilation\n  max_per_class: 40\n"
                      "search:\n  space:\n    classifier.gen_frac: {type: float, low: 0, high: 0.9}\n"
                      "    seed: {type: int, low: 0, high: 3}\n")
    mid = write_yaml(tmp_path / "mid.yaml", "extends: base.yaml\nname: mid\ndataset:\n  max_per_class: 30\n")
    (tmp_path / "sub").mkdir()
    leaf = write_yaml(tmp_path / "sub" / "leaf.yaml", "extends: ../mid.yaml\nname: leaf\nsearch:\n  space:\n    seed: null\n")
    cfg, _ = load_config(str(leaf))
    assert cfg.name == "leaf" and cfg.dataset.nuisance == "dilation"  # through two bases, relative paths
    assert cfg.dataset.max_per_class == 30  # the nearer file wins, key by key
    assert set(cfg.search.space) == {"classifier.gen_frac"}  # null drops a base mapping entry
    assert load_config(str(mid))[0].dataset.max_per_class == 30 and base.is_file()
    bundled = load_config("k49-dil-lt")[0]
    assert bundled.dataset.nuisance == "dilation" and bundled.value("classifier.arch") == "resnet20"  # presets extend


def test_extends_cycle_and_missing_base_exit_2_naming_the_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a = write_yaml(tmp_path / "a.yaml", "extends: b.yaml\nname: a\n")
    write_yaml(tmp_path / "b.yaml", "extends: a.yaml\n")
    lost = write_yaml(tmp_path / "lost.yaml", "extends: nowhere.yaml\nname: lost\n")
    cycle, missing = gitsweep_parallel([(["run", str(a)], home), (["run", str(lost)], home)])
    assert_bad_input(cycle, home, "extends cycle", str(a))
    assert_bad_input(missing, home, str(lost), "extends 'nowhere.yaml'")
