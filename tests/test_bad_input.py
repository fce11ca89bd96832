"""Bad input at the real CLI (`python -m sweeps`, in subprocesses): exit 2, one stderr line naming the
key or file, no traceback, nothing written (no mlflow.db, no sweep folder, nothing under the storage).

Every kind of bad input the test files check at the CLI, and where (47 kinds):

tests/test_config.py (through `data build` unless said)
   1. unknown config key (dataset.colour)
   2. value out of range (dataset.imbalance_ratio < 1, dataset.val_fraction > 1; also
      classifier.epochs=0 through `run` in test_sweep_cli.py, classifier.gen_frac > 1 through
      `train classifier` in test_classifier_cli.py)
   3. unknown registry name: dataset.nuisance
   4. unknown registry name: dataset.source
   5. required key missing (dataset.root of a source that needs one)
   6. wrong type (dataset.max_per_class=lots)
   7. `--set` without `=`
   8. missing config file
   9. YAML syntax error
  10. missing dataset root
  11. missing k49 file
  12. k49 labels count differs from the images count
  13. truncated k49 .npz
  14. `extends:` cycle (run)
  15. `extends:` base missing (run)
tests/sweeps/test_sweep_cli.py (run)
  16. a GPU request no Ray node can meet (resources.gpu)
  17. `--set` on the repeat key (seed, dataset.instance) of a sweep with repeats
  18. the repeat key in search.space
  19. asha with search.repeats > 1
  20. search.repeats < 1
  21. search.repeat_over / search.group_stat not one of the allowed values
tests/train/test_classifier_cli.py (train classifier)
  22. unknown registry name: classifier.loss
  23. unknown registry name: classifier.arch
  24. augment=oracle with dataset.nuisance none (a rule across keys)
this file (one case each; the comment in each case names its rule)
  25. dataset root that is a file
  26. k49 .npz that is not a zip (the reported `run`)
  27. k49 images with the wrong dtype
  28. k49 labels with the wrong shape
  29. IDX file with a bad magic number
  30. IDX file whose size disagrees with its header
  31. CIFAR batch that is not a pickle
  32. GTSRB with the wrong number of class folders
  33. GTSRB test csv without the Filename / ClassId columns
  34. GTSRB test csv with a header and no rows
  35. a searched dataset.root choice that does not exist (run, before Ray starts)
  36. a searched dataset.source choice whose files are missing (run)
  37. resources.* in search.space
  38. unknown registry name: classifier.train_rule
  39. unknown registry name: a probes entry
  40. search.mode not one per search.metric
  41. unknown search.sampler
  42. grid sampler with a continuous key (in-process in test_sweep_cli.py; here through run)
  43. nsga2 with a single metric
  44. `--storage` that is a file (run)
  45. `resume` of a sweep that does not exist
  46. `status` of a sweep that does not exist
  47. `report --contrast` without `--vs`
In-process only (tests/test_sweep_config.py, not counted): a search.space key that is not a config
key; a searched range that proposes an invalid value.
Plus the pre-flight at every command that trains: run (the reported case), resume (the saved
config's data), train classifier, train generator and data build each refuse a missing root.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support import run_parallel

sys.path.insert(0, str(Path(__file__).parent / "data"))
from source_files import write_cifar, write_gtsrb, write_k49, write_mnist

Case = Callable[[Path], tuple[list[str], list[str]]]  # input folder -> (CLI args, names the error line holds)
PARALLEL = 4  # CLI processes at once: each pays its imports, and the machine's 2 cores are shared


def _yaml(folder: Path, text: str) -> str:
    path = folder / "c.yaml"
    path.write_text(text)
    return str(path)


def _source(folder: Path, source: str, root: Path, extra: str = "") -> str:
    return _yaml(folder, f"name: t\ndataset:\n  source: {source}\n  root: {root}\n{extra}")


def _k49(folder: Path) -> Path:
    write_k49(folder / "k49", per_class=2, test_per_class=1)
    return folder / "k49"


# ---- data files: the pre-flight check (sweeps.preflight -> Source.check) ---------------------------------


def root_is_file(f: Path) -> tuple[list[str], list[str]]:
    # rule: the root must be a folder
    (f / "k49.npz").write_bytes(b"")
    return ["data", "build", _source(f, "k49", f / "k49.npz")], [str(f / "k49.npz"), "not a folder"]


def k49_not_zip(f: Path) -> tuple[list[str], list[str]]:
    # rule: k49 files are .npz (zip) archives; the reported case, refused by `run` before Ray starts
    root = _k49(f)
    for path in root.iterdir():
        path.write_bytes(b"not numpy at all")
    return (["run", "demo", "--set", "dataset.source=k49", "--set", f"dataset.root={root}"],
            [str(root / "k49-train-imgs.npz"), "unreadable .npz"])


def k49_float_images(f: Path) -> tuple[list[str], list[str]]:
    # rule: k49 images are uint8 (N, H, W), read from the .npy header
    root = _k49(f)
    np.savez(root / "k49-test-imgs.npz", np.zeros((49, 28, 28), np.float32))
    return (["train", "classifier", _source(f, "k49", root)],
            [str(root / "k49-test-imgs.npz"), "uint8", "float32"])


def k49_2d_labels(f: Path) -> tuple[list[str], list[str]]:
    # rule: k49 labels are a 1-D integer array
    root = _k49(f)
    np.savez(root / "k49-train-labels.npz", np.zeros((98, 2), np.uint8))
    return (["train", "generator", _source(f, "k49", root)],
            [str(root / "k49-train-labels.npz"), "1-D integer array"])


def idx_bad_magic(f: Path) -> tuple[list[str], list[str]]:
    # rule: an IDX labels file starts with the uint8, 1-dimension magic number
    write_mnist(f, "MNIST")
    labels = f / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    return ["run", _source(f, "mnist", f)], [str(labels), "bad magic number"]


def idx_size(f: Path) -> tuple[list[str], list[str]]:
    # rule: an IDX file is exactly as long as its header's dimensions say
    write_mnist(f, "FashionMNIST")
    images = f / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])  # a truncated download
    return ["data", "build", _source(f, "fashion-mnist", f)], [str(images), "header [30, 28, 28]"]


def cifar_not_pickle(f: Path) -> tuple[list[str], list[str]]:
    # rule: CIFAR batches are python pickles (checked from their first bytes)
    write_cifar(f, "cifar10")
    batch = f / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(b"<html>not a pickle</html>" * 200)
    return ["run", _source(f, "cifar10", f)], [str(batch), "not a python pickle"]


def gtsrb_classes(f: Path) -> tuple[list[str], list[str]]:
    # rule: GTSRB training has one folder per class, 43 of them
    write_gtsrb(f, per_class=1)
    train = f / "gtsrb" / "GTSRB" / "Training"
    shutil.rmtree(train / "00042")
    return ["run", _source(f, "gtsrb", f)], [str(train), "expected 43 class folders, found 42"]


def gtsrb_csv(f: Path) -> tuple[list[str], list[str]]:
    # rule: the GTSRB test csv has ';'-separated Filename and ClassId columns
    write_gtsrb(f, per_class=1)
    csv = f / "gtsrb" / "GT-final_test.csv"
    csv.write_text("Name,Label\n00000.ppm,3\n")
    return ["data", "build", _source(f, "gtsrb", f)], [str(csv), "Filename and ClassId"]


def gtsrb_csv_no_rows(f: Path) -> tuple[list[str], list[str]]:
    # rule: the GTSRB test csv lists at least one test image (a header alone used to pass the pre-flight)
    write_gtsrb(f, per_class=1)
    csv = f / "gtsrb" / "GT-final_test.csv"
    csv.write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    return ["run", _source(f, "gtsrb", f)], [str(csv), "no rows"]


def searched_root(f: Path) -> tuple[list[str], list[str]]:
    # rule: every categorical choice of a searched dataset.root is checked by `run` before Ray starts
    root, missing = _k49(f), f / "k49-elsewhere"
    space = f"search:\n  space:\n    dataset.root: {{type: categorical, choices: [{root}, {missing}]}}\n"
    return ["run", _source(f, "k49", root, space)], [str(missing), "not a folder", f"dataset.root='{missing}'"]


def searched_source(f: Path) -> tuple[list[str], list[str]]:
    # rule: every searched dataset.source choice must find its files under the root
    root = _k49(f)
    space = "search:\n  space:\n    dataset.source: {type: categorical, choices: [k49, cifar100]}\n"
    train = root / "cifar-100-python" / "train"
    return ["run", _source(f, "k49", root, space)], [str(train), "missing", "dataset.source='cifar100'"]


# ---- config values, search setups, commands -------------------------------------------------------------


def _run_set(*sets: str) -> list[str]:
    return ["run", "demo", *[a for s in sets for a in ("--set", s)]]


def searched_resources(f: Path) -> tuple[list[str], list[str]]:
    # rule: resources.* is reserved once for all trials, so it cannot be searched
    return (_run_set("search.space.resources.cpu={type: categorical, choices: [1, 2]}"),
            ["search.space.resources.cpu", "not per trial"])


def train_rule(f: Path) -> tuple[list[str], list[str]]:
    # rule: classifier.train_rule is a name in the training-rule registry
    return _run_set("classifier.train_rule=balanced"), ["classifier.train_rule", "balanced"]


def probes_entry(f: Path) -> tuple[list[str], list[str]]:
    # rule: each probes entry is a name in the probe registry
    return _run_set("probes=[spectral, xray]"), ["probes[1]", "xray"]


def mode_length(f: Path) -> tuple[list[str], list[str]]:
    # rule: search.mode has one entry per search.metric
    return _run_set("search.mode=[max]"), ["search.mode", "one mode per metric"]


def sampler_name(f: Path) -> tuple[list[str], list[str]]:
    # rule: search.sampler is one of tpe, random, grid, nsga2
    return _run_set("search.sampler=cmaes"), ["search.sampler", "cmaes"]


def grid_continuous(f: Path) -> tuple[list[str], list[str]]:
    # rule: the grid sampler needs categorical, int or stepped float keys
    return (_run_set("search.sampler=grid", "search.metric=[test/balanced_acc]", "search.mode=[max]"),
            ["search.space.classifier.gen_frac", "grid sampler"])


def nsga2_single(f: Path) -> tuple[list[str], list[str]]:
    # rule: nsga2 is a multi-objective sampler
    return (_run_set("search.sampler=nsga2", "search.metric=[test/balanced_acc]", "search.mode=[max]"),
            ["search.sampler", "nsga2"])


def storage_is_file(f: Path) -> tuple[list[str], list[str]]:
    # rule: --storage is a folder (a file there ended the run in a traceback once Ray had started)
    (f / "runs").write_text("not a folder")
    return ["run", "demo", "--storage", str(f / "runs")], ["--storage", str(f / "runs"), "is a file, not a folder"]


def resume_missing(f: Path) -> tuple[list[str], list[str]]:
    # rule: resume needs a stored sweep
    return ["resume", "never-ran"], ["never-ran", "no such sweep"]


def status_missing(f: Path) -> tuple[list[str], list[str]]:
    # rule: status needs a stored sweep
    return ["status", "never-ran"], ["never-ran", "no such sweep"]


def contrast_without_vs(f: Path) -> tuple[list[str], list[str]]:
    # rule: a report contrast needs both sides (checked before the sweep is looked up)
    return ["report", "never-ran", "--contrast", "classifier.gen_frac=0.3"], ["--vs", "needs both"]


# ---- the pre-flight runs at every command that trains ------------------------------------------------------


def _missing_root(f: Path) -> tuple[str, Path]:
    root = f / "no-such-folder"
    return _source(f, "k49", root), root


def run_missing_root(f: Path) -> tuple[list[str], list[str]]:
    # rule: run checks the data before Ray starts (the reported case: every trial used to fail)
    root = f / "no-such-folder"
    return (["run", "demo", "--set", "dataset.source=k49", "--set", f"dataset.root={root}"],
            [str(root), "not a folder"])


def resume_missing_root(f: Path) -> tuple[list[str], list[str]]:
    # rule: resume checks the saved config's data before Ray starts (here: it moved away)
    config, root = _missing_root(f)
    sweep = f / "home" / "sweeps" / "old"
    sweep.mkdir(parents=True)
    shutil.copy(config, sweep / "config.yaml")
    (sweep / "sweep.json").write_text('{"name": "old"}')
    return ["resume", "old"], [str(root), "not a folder"]


def train_classifier_missing_root(f: Path) -> tuple[list[str], list[str]]:
    # rule: train classifier checks the data before torch loads
    config, root = _missing_root(f)
    return ["train", "classifier", config], [str(root), "not a folder"]


def train_generator_missing_root(f: Path) -> tuple[list[str], list[str]]:
    # rule: train generator checks the data before torch loads
    config, root = _missing_root(f)
    return ["train", "generator", config], [str(root), "not a folder"]


def data_build_missing_root(f: Path) -> tuple[list[str], list[str]]:
    # rule: data build checks through the same pre-flight
    config, root = _missing_root(f)
    return ["data", "build", config], [str(root), "not a folder"]


CASES: dict[str, Case] = {case.__name__: case for case in (
    root_is_file, k49_not_zip, k49_float_images, k49_2d_labels, idx_bad_magic, idx_size, cifar_not_pickle,
    gtsrb_classes, gtsrb_csv, gtsrb_csv_no_rows, searched_root, searched_source, searched_resources, train_rule, probes_entry,
    mode_length, sampler_name, grid_continuous, nsga2_single, storage_is_file, resume_missing, status_missing,
    contrast_without_vs, run_missing_root, resume_missing_root, train_classifier_missing_root,
    train_generator_missing_root, data_build_missing_root,
)}


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _env(home: Path) -> dict[str, str]:
    return {"GITSWEEP_HOME": str(home)}


Outcome = tuple[subprocess.CompletedProcess[str], list[str], set[str], set[str]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once, PARALLEL at a time, each in its own folder (its cwd; GITSWEEP_HOME=home)."""
    prepared = {}
    for name, case in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        args, names = case(folder)
        prepared[name] = (folder, args, names, _tree(folder))
    out: dict[str, Outcome] = {}
    pending = list(prepared)
    while pending:
        batch, pending = pending[:PARALLEL], pending[PARALLEL:]
        results = run_parallel([(prepared[name][1], _env(prepared[name][0] / "home")) for name in batch],
                               cwds=[prepared[name][0] for name in batch])
        for name, result in zip(batch, results, strict=True):
            folder, args, names, before = prepared[name]
            out[name] = (result, names, before, _tree(folder))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(outcomes: dict[str, Outcome], name: str) -> None:
    result, names, before, after = outcomes[name]
    lines = result.stderr.strip().splitlines()
    # exit code 2: bad input
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    # one line on stderr, the CLI's own, no traceback
    assert len(lines) == 1 and lines[0].startswith("gitsweep: error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # the line names the key or file, and what is wrong
    for text in names:
        assert text in lines[0], (text, lines[0])
    # nothing written: no storage folder, mlflow.db, sweep folder or run (the case folder is as it was)
    assert after == before, sorted(after ^ before)
