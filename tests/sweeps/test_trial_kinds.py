"""A trial kind is one record: a kind declared inside the test (a body and one registration, nothing else)
runs through Tune (a local Ray in this process), MLflow (its series at the right steps, its final metrics,
its result files and figure), `status` and `report`. Nothing else in sweeps/ asks which kind it holds."""

from __future__ import annotations

import ast
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
from support import artifacts, metric_history, mlflow_runs, write_config

from sweeps import results as rs
from sweeps.cli import main
from sweeps.kinds import TRIAL_KINDS, TrialKind

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
REAL_KINDS = ("classifier", "generator", "msr", "synthetic")


def test_a_kind_declared_here_runs_through_everything(tmp_path: Path, storage: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSWEEP_NUM_CPUS", "2")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def coin(cfg, ctx) -> None:  # the body: three steps, then a score and a figure
        from matplotlib.figure import Figure

        for step in (1, 2, 3):
            ctx.report({"step": float(step), "coin/loss": 1.0 / step}, {rs.META: json.dumps({"step": step})})
        fig, buf = Figure(figsize=(2, 2)), io.BytesIO()
        fig.add_subplot(1, 1, 1).plot([0, 1], [cfg.seed, 1])
        fig.savefig(buf, format="png")
        final = {"coin/score": 0.5 + cfg.seed / 10}
        ctx.report({"step": 3.0, **final}, {rs.FINAL: json.dumps(final), "coin.png": buf.getvalue()})

    TRIAL_KINDS.register("coin")(TrialKind(  # the one registration
        body=coin, length=3, step="step", series=("coin/loss",), result_files=(rs.FINAL, "coin.png"),
        figures=("coin.png",), headline=("coin/score",), metrics=("coin/",)))
    try:
        config = write_config(tmp_path / "coin.yaml", {
            "name": "coin", "trial": "coin", "probes": [], "resources": {"cpu": 1},
            "search": {"num_samples": 2, "sampler": "grid", "metric": "coin/score", "mode": "max",
                       "space": {"seed": {"type": "categorical", "choices": [1, 2]}}}})
        assert main(["run", str(config), "--storage", str(storage)]) == 0
        status, report = io.StringIO(), io.StringIO()
        with redirect_stdout(status):
            assert main(["status", "coin", "--storage", str(storage)]) == 0
        with redirect_stdout(report):
            assert main(["report", "coin", "--storage", str(storage)]) == 0
    finally:
        TRIAL_KINDS.remove("coin")

    trials = [r for r in mlflow_runs(storage, "coin") if r.data.tags.get("gitsweep.role") == "coin"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    for r in trials:
        seed = int(r.data.params["seed"])
        assert metric_history(storage, r, "coin/loss") == [1.0, 0.5, pytest.approx(1 / 3)]  # steps 1..3
        assert r.data.metrics["coin/score"] == pytest.approx(0.5 + seed / 10)  # final: step 0
        assert "coin.png" in artifacts(storage, r)  # its result file, logged as a figure
        assert f"{0.5 + seed / 10:.4g}" in status.getvalue()  # `status` shows its headline metric
    table = pd.read_csv(storage / "sweeps" / "coin" / "report" / "trials.csv")
    assert sorted(table["coin/score"]) == pytest.approx([0.6, 0.7])
    assert "best trial" in report.getvalue() and "coin/score 0.7000" in report.getvalue()
    kept = storage / "sweeps" / "coin" / "results"
    assert sorted(p.name for p in kept.glob("*/coin.png")) == ["coin.png", "coin.png"]  # kept as declared


def _string_constants(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def test_no_module_branches_on_a_real_kinds_name() -> None:
    """Outside a kind's own modules and the registry, sweeps/ never names a real kind: what differs
    between kinds is read from their records. The exceptions are names that are also something else:
    the `generator` config section and shared generator store (and its MLflow runs), and the
    `classifier` / `generator` subcommands of `gitsweep train`."""
    own = {"kinds.py", "synthetic.py", "trials/classifier.py", "trials/generator.py", "trials/msr.py",
           "trials/synthetic.py", "report/msr.py"}
    allowed = {("cli.py", "classifier"), ("cli.py", "generator"),  # `gitsweep train classifier|generator`
               ("commands/train.py", "classifier"), ("commands/train.py", "generator"),
               ("tracking/tracker.py", "generator"), ("stores/generators.py", "generator"),  # the shared store
               ("config.py", "generator"),  # the `generator` section, after which the kinds' sections go
               ("config.py", "classifier")}  # the default of `trial:`
    hits = []
    for path in sorted((ROOT / "sweeps").rglob("*.py")):
        rel = str(path.relative_to(ROOT / "sweeps"))
        if rel in own:
            continue
        hits += [(rel, s) for s in _string_constants(path) if s in REAL_KINDS and (rel, s) not in allowed]
    assert not hits, hits
