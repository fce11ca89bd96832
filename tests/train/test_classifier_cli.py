"""`gitsweep train classifier`: bad values exit 2 before anything runs; a tiny run writes its results."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import run_cli

CONFIG = """\
name: tiny
seed: 0
storage: {storage}
dataset:
  source: digits
  nuisance: rotation
  max_per_class: 40
  imbalance_ratio: 10
  val_per_class: 5
  test_per_class: 10
classifier:
  epochs: 2
  batch_size: 32
  warmup_epochs: 1
  milestones: [1]
  lr_factors: [0.1]
  ekld_samples: 4
  ekld_per_class: 5
"""


def _gitsweep(*args: str) -> subprocess.CompletedProcess:
    return run_cli(list(args), timeout=300)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG.format(storage=tmp_path / "store"))
    return path


@pytest.mark.parametrize("override,key", [
    ("classifier.gen_frac=1.5", "classifier.gen_frac"),
    ("classifier.loss=foo", "classifier.loss"),
    ("classifier.arch=resnet1000", "classifier.arch"),
])
def test_bad_values_exit_2_naming_the_key(config: Path, override: str, key: str) -> None:
    proc = _gitsweep("train", "classifier", str(config), "--set", override)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in proc.stderr  # one line, no traceback
    assert not (config.parent / "store").exists()  # nothing written


def test_git_without_generator_or_nuisance_for_oracle_is_a_user_error(config: Path) -> None:
    proc = _gitsweep("train", "classifier", str(config), "--set", "classifier.augment=oracle",
                     "--set", "dataset.nuisance=none")
    assert proc.returncode == 2 and "oracle" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_tiny_run_writes_table_metrics_and_figure(config: Path) -> None:
    proc = _gitsweep("train", "classifier", str(config))
    assert proc.returncode == 0, proc.stderr
    runs = list((config.parent / "store" / "runs").glob("classifier-*"))
    assert len(runs) == 1
    run = runs[0]
    table = pq.read_table(run / "per_class.parquet")
    assert table.column_names[:5] == ["class", "train_count", "accuracy", "ekld", "consistency"]
    assert {"lpp", "hpp", "corruption_acc"} <= set(table.column_names)  # and the bias probes' columns
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/balanced_acc", "ekld/mean", "ekld/size_spearman", "ekld/tail"} <= set(metrics)
    assert (run / "ekld_vs_class_size.png").stat().st_size > 5000
    assert "ekld/size_spearman=" in proc.stdout and "train_count" not in proc.stdout  # the printed table
