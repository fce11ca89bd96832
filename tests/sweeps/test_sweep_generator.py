"""A sweep whose trials train generators (`trial: generator`): losses every checkpoint interval, quality
metrics and a sample grid at the end, one nested `gitsweep.role=generator` run per trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import artifacts, metric_history, mlflow_runs, run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow  # a real sweep: Ray, MLflow, training


def test_generator_trials(tmp_path: Path, storage: Path) -> None:
    cfg = tiny_config(
        "gens", trial="generator",
        search={"num_samples": 1, "max_concurrent": 1, "sampler": "grid", "metric": ["preservation/all"],
                "mode": ["max"], "space": {"generator.lr": {"type": "categorical", "choices": [0.0005]}}},
    )
    res = run_cli(["run", str(write_config(tmp_path / "gens.yaml", cfg)), "--storage", str(storage)], timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = [r for r in mlflow_runs(storage, "gens") if r.data.tags.get("gitsweep.role") == "generator"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert "gitsweep.trial_id" in run.data.tags  # a trial's run, not a shared generator's
    assert len(metric_history(storage, run, "loss/recon_x")) == 2  # every checkpoint_every=10 of 20 steps
    assert {"preservation/all", "diversity/ratio"} <= set(run.data.metrics)
    assert "samples.png" in artifacts(storage, run)
