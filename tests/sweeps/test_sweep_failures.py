"""One real sweep (local Ray, SQLite MLflow, Optuna grid) with two healthy trials, one that raises on
every attempt and one whose loss goes NaN; then `status` and `report` on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import artifacts, metric_history, mlflow_runs, run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow  # a real sweep: Ray, MLflow, training


def test_sweep_with_failures(tmp_path: Path, storage: Path) -> None:
    cfg = tiny_config(
        "fails",
        classifier={"epochs": 4},
        search={"num_samples": 4, "max_concurrent": 2, "sampler": "grid", "max_failures": 1,
                "space": {"debug.fail_at_epoch": {"type": "categorical", "choices": [None, 2]},
                          "debug.fail_mode": {"type": "categorical", "choices": ["raise", "nan"]}}},
    )
    path = write_config(tmp_path / "fails.yaml", cfg)
    res = run_cli(["run", str(path), "--storage", str(storage)], timeout=400)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out  # a sweep with errored trials exits non-zero
    assert "gitsweep resume fails --restart-errored" in res.stdout  # and says how to resume

    runs = mlflow_runs(storage, "fails")
    parents = [r for r in runs if r.data.tags.get("gitsweep.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("gitsweep.role") == "classifier"]
    gens = [r for r in runs if r.data.tags.get("gitsweep.role") == "generator"]
    assert len(parents) == 1 and parents[0].data.tags["gitsweep.sweep"] == "fails"
    assert parents[0].info.status == "FAILED"  # the sweep as a whole did not finish cleanly
    assert "config.yaml" in artifacts(storage, parents[0])
    assert "mlflow.source.git.commit" in parents[0].data.tags  # provenance recorded
    assert len(trials) == 4  # one run per trial: retries did not create twins
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials + gens)
    assert not [r for r in runs if r.info.status == "RUNNING"]  # nothing left running
    assert {r.data.tags["gitsweep.device"] for r in trials} == {"cpu, 1 thread"}  # where each trial ran

    finished = [r for r in trials if r.info.status == "FINISHED"]
    failed = {r.data.tags["gitsweep.param.debug.fail_mode"]: r for r in trials if r.info.status == "FAILED"}
    assert len(finished) == 2 and set(failed) == {"raise", "nan"}
    for r in finished:
        assert {"per_class.parquet", "per_class.json", "ekld_vs_class_size.png"} <= artifacts(storage, r)
        for key in ("test/acc", "test/balanced_acc", "test/many_acc", "test/medium_acc", "test/few_acc",
                    "ekld/mean", "ekld/head", "ekld/tail", "ekld/size_spearman"):
            assert key in r.data.metrics, key  # every final metric of the MLflow layout is there
        assert len(metric_history(storage, r, "val/balanced_acc")) == 4  # one point per epoch
        assert r.data.params["classifier.epochs"] == "4"  # params: the flattened resolved config
        assert r.data.params["classifier.augment"] == "git"  # with generated images (gen_frac 0.5): GIT ran

    raised = failed["raise"]
    assert "InjectedFailure" in raised.data.tags["gitsweep.error"]  # the reason is visible in MLflow
    # Retried from its checkpoint: the retry started at epoch 2 (where the first attempt stopped), not 0,
    # failed again after epoch 3, and with max_failures=1 the trial then ended as failed.
    assert metric_history(storage, raised, "trial/start_epoch") == [0.0, 0.0, 2.0]
    assert max(metric_history(storage, raised, "epoch")) == 3
    nan = failed["nan"]
    assert "TrainingDiverged" in nan.data.tags["gitsweep.error"]
    assert max(metric_history(storage, nan, "epoch")) == 1  # diverged in epoch 2: never trained further

    # Tune keeps its own per-trial result.json, but no TensorBoard copy of what MLflow holds.
    tune_dir = storage / "sweeps" / "fails" / "tune"
    assert len([d for d in tune_dir.glob("*/trial_*") if (d / "result.json").is_file()]) == 4
    assert not list(tune_dir.rglob("events.out.tfevents*"))

    # The generator was trained once, shared by the GIT trials, and logged once for this sweep.
    folders = list((storage / "generators").iterdir())
    assert len(folders) == 1
    events = [json.loads(line) for line in (folders[0] / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["started", "finished"]
    assert len(gens) == 1 and gens[0].info.status == "FINISHED" and "preservation/all" in gens[0].data.metrics

    # status and report read the sweep's index and kept results: they run where torch cannot be imported
    stub = tmp_path / "no_torch" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no torch on this machine')\n")
    no_torch = {"PYTHONPATH": os.pathsep.join([str(stub.parent), str(Path(__file__).resolve().parents[2])])}
    status = run_cli(["status", "fails", "--storage", str(storage)], timeout=120, env=no_torch)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("ERROR") >= 2 and "TrainingDiverged" in status.stdout  # reasons shown

    report = run_cli(["report", "fails", "--storage", str(storage)], timeout=180, env=no_torch)
    assert report.returncode == 0, report.stdout + report.stderr
    folder = storage / "sweeps" / "fails" / "report"
    for name in ("trials.parquet", "trials.csv", "summary.json", "ekld_vs_class_size.png"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["trials"] == 4 and summary["best"]["state"] == "TERMINATED"
