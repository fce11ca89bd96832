"""The sweep's answer (sweeps.report.answer) on groups built by hand: the best group by the closing summary's
rule, its partner in the kind's default contrast whichever side wins, the numbers it states against scipy;
contrast.csv's order and rounding; and figures that compare (one eKLD axis, one colour per group)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats as st
from support import synthetic_config, tiny_config

from gitlib import plots
from sweeps.config import build
from sweeps.groups import Group, Repeat, colour
from sweeps.report import groups as gr
from sweeps.report.answer import find_answer
from sweeps.report.race import race_figure

METRICS = ["test/balanced_acc", "ekld/tail"]


def _cfg(**search: Any) -> Any:
    return build(tiny_config("ans", search={"repeats": 3, "metric": METRICS, "mode": ["max", "min"],
                                            "space": {"classifier.gen_frac": {"type": "float", "low": 0.0,
                                                                              "high": 0.9}}, **search}))


def _group(gid: str, gen_frac: float, accs: list[float], tails: list[float]) -> Group:
    g = Group(gid, {"classifier.gen_frac": gen_frac})
    g.repeats = {r: Repeat(f"{gid}-{r}", "TERMINATED", {"test/balanced_acc": a, "ekld/tail": t, "ekld/head": t / 10})
                 for r, (a, t) in enumerate(zip(accs, tails, strict=True))}
    g.config = {"classifier.gen_frac": gen_frac, "classifier.augment": "none" if gen_frac == 0 else "git"}
    return g


def _groups() -> list[Group]:
    return [_group("g0000", 0.0, [0.70, 0.74, 0.72], [0.10, 0.12, 0.11]),
            _group("g0001", 0.6, [0.75, 0.78, 0.74], [0.07, 0.08, 0.09]),
            _group("g0002", 0.3, [0.71, 0.73, 0.72], [0.09, 0.10, 0.10])]


def test_the_best_group_is_side_a_and_its_contrast_is_against_its_baseline() -> None:
    cfg, groups = _cfg(), _groups()
    answer = find_answer(cfg, groups)
    assert answer.best is groups[1]  # highest mean test/balanced_acc
    assert answer.pair == (groups[1], groups[0])  # GIT against the baseline at the same other settings
    diff = np.array([0.07, 0.08, 0.09]) - np.array([0.10, 0.12, 0.11])
    half = st.t.ppf(0.975, 2) * diff.std(ddof=1) / math.sqrt(3)
    m = answer.metrics(METRICS)
    # the parent's metrics: the paired t contrast, rounded as contrast.csv rounds it
    assert m["contrast/ekld/tail/diff"] == float(f"{diff.mean():.4g}")
    assert m["contrast/ekld/tail/ci95_low"] == float(f"{diff.mean() - half:.4g}")
    assert m["contrast/ekld/tail/p"] == float(f"{st.ttest_1samp(diff, 0).pvalue:.3g}")
    assert set(m) == {f"contrast/{k}/{p}" for k in METRICS for p in ("diff", "ci95_low", "ci95_high", "p")}
    # one sentence: the winner, by how much against which baseline, the CI and n
    assert answer.sentence.startswith("GIT g0001 (gen_frac=0.6) is the best configuration")
    assert f"ekld/tail by {diff.mean():+.4f} [95% CI {diff.mean() - half:+.4f}, {diff.mean() + half:+.4f}]" in answer.sentence
    assert "baseline g0000 (gen_frac=0)" in answer.sentence and "n = 3 seeds" in answer.sentence


def test_when_the_baseline_wins_the_best_git_configuration_is_contrasted_with_it() -> None:
    cfg, groups = _cfg(), _groups()
    groups[0] = _group("g0000", 0.0, [0.80, 0.82, 0.81], [0.10, 0.12, 0.11])
    answer = find_answer(cfg, groups)
    assert answer.best is groups[0]
    assert answer.pair == (groups[1], groups[0])  # the best GIT group (of g0001, g0002) - the winner
    assert answer.sentence.startswith("The baseline g0000 (gen_frac=0) is the best configuration")
    assert answer.rows["a"].iloc[0] == "g0001 (gen_frac=0.6)"  # the same row as contrast.csv's


def test_a_dropped_group_is_never_the_best() -> None:
    cfg, groups = _cfg(), _groups()
    answer = find_answer(cfg, groups, dropped={"g0001"})
    assert answer.best is groups[2]  # the race dropped g0001: the best of the others
    assert gr.best_group(cfg, groups, {"g0001"}) is answer.best  # the closing summary's rule


def test_a_kind_without_a_default_contrast_states_no_contrast() -> None:
    cfg = build(synthetic_config("syn", search={"repeats": 3}))
    g = Group("g0000", {"synthetic.arm": 0})
    g.repeats = {r: Repeat(str(r), "TERMINATED", {"test/balanced_acc": 0.8 + r / 100}) for r in range(3)}
    answer = find_answer(cfg, [g])
    assert answer.best is g and answer.pair is None and answer.metrics(["test/balanced_acc"]) == {}
    assert "no default contrast" in answer.sentence and "n = 3 seeds" in answer.sentence
    assert "test/balanced_acc 0.8100 [95% CI" in answer.sentence


def test_contrast_rows_lead_with_the_search_metrics_and_the_csv_is_rounded() -> None:
    groups = _groups()
    rows = gr.contrast_rows([(groups[1], groups[0]), (groups[2], groups[0])], ["classifier.gen_frac"], METRICS)
    assert list(rows["metric"][:4]) == ["test/balanced_acc"] * 2 + ["ekld/tail"] * 2  # every pair, metric by metric
    assert list(rows["metric"][4:]) == ["ekld/head"] * 2  # then the rest
    csv = gr.readable(rows)
    for col, digits in (("diff", 4), ("ci95_low", 4), ("p_ttest", 3)):
        exact, shown = rows[col].to_numpy(float), csv[col].to_numpy(float)
        ok = np.isfinite(exact)
        assert np.allclose(shown[ok], exact[ok], rtol=10 ** (1 - digits))  # rounded, not changed
        assert all(float(f"{v:.{digits}g}") == v for v in shown[ok])  # with no more digits than that


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    return figures


def test_figures_share_the_ekld_axis_and_a_colour_per_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    figures = _captured(monkeypatch)
    table = pa.table({"class": [0, 1], "train_count": [100, 5], "ekld": [0.01, 0.2]})
    plots.ekld_vs_class_size(table, tmp_path / "t.png", colour=colour("g0002"))  # a trial of g0002
    groups = _groups()
    band = (np.array([100, 5]), np.array([0.01, 0.3]), np.array([-0.01, 0.1]), np.array([0.03, 0.5]))
    bands = {g.group_id: band for g in groups}
    gr.groups_figure(groups, bands, ["classifier.gen_frac"], tmp_path / "g.png")
    gr.contrast_figure(groups[2], groups[0], bands, ["classifier.gen_frac"], tmp_path / "c.png", note="numbers")
    race_figure(groups, {}, "test/balanced_acc", tmp_path / "r.png")
    eklds = figures[:3]
    assert {f.axes[0].get_yscale() for f in eklds} == {"log"}  # one axis type ...
    assert {f.axes[0].get_ylim() for f in eklds} == {plots.EKLD_RANGE}  # ... and one scale for eKLD
    seen: dict[str, set[str]] = {}
    for f in figures:
        for line in f.axes[0].get_lines():
            gid = str(line.get_label()).split(" ")[0]
            if gid.startswith("g0"):
                seen.setdefault(gid, set()).add(line.get_color())
    assert {g: len(c) for g, c in seen.items()} == {"g0000": 1, "g0001": 1, "g0002": 1}  # one colour each
    assert len({c for cs in seen.values() for c in cs}) == 3  # and the groups' colours differ
    trial_points = figures[0].axes[0].collections[0].get_facecolor()[0]
    assert tuple(trial_points[:3]) == pytest.approx(_rgb(seen["g0002"].pop()))  # a trial's figure: its group's
    assert "numbers" in [t.get_text() for t in figures[2].texts]  # the contrast figure states its numbers


def _rgb(colour_name: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgb

    return tuple(to_rgb(colour_name))


def test_a_groups_colour_follows_its_number() -> None:
    assert [colour(g) for g in ("g0000", "g0001", "g0011")] == ["C0", "C1", "C1"]  # ten colours, then again
    assert colour("8c1f2e0a") == colour("8c1f2e0a") and _rgb(colour("8c1f2e0a"))  # an id outside any group too
