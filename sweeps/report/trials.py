"""The report's trial part: the trial table, best trial, response surface, parameter importances and
eKLD-vs-class-size curves of the best trial of each side of the kind's default contrast (for the
classifier: the best GIT trial against the best baseline)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeps import results as rs
from sweeps.config import SweepConfig, trial_config
from sweeps.groups import colour
from sweeps.kinds import kind_of

SURFACE_METRICS = (("test/balanced_acc", "balanced test accuracy"), ("ekld/tail", "tail eKLD"))


def trial_table(cfg: SweepConfig, records: list[rs.TrialRecord]) -> pd.DataFrame:
    """One row per trial: id, state, searched values (and the values of the keys that select the kind's
    default contrast, as they ran), steps run, final metrics, error."""
    kind = kind_of(cfg.trial)
    selects = [*kind.contrast.a, *kind.contrast.b] if kind.contrast else []
    rows = []
    for t in records:
        state = "STOPPED" if t.stopped_by_race else t.status
        row: dict[str, Any] = {"trial_id": t.trial_id, "group_id": t.group_id, "repeat": t.repeat, "state": state,
                               "stopped_early": t.stopped_early}
        row.update(rs.sampled_values(t.config))
        if selects:
            ran = trial_config(cfg, t.config).resolved()
            row.update({k: ran.value(k) for k in selects})
        row[f"{kind.step}s_run"] = t.last.get(kind.step)
        row.update({k: v for k, v in t.last.items() if ("/" in k and not kind.is_series(k)) or k.startswith("val/")})
        row["error"] = t.error if t.status == "ERROR" else ""
        rows.append(row)
    return pd.DataFrame(rows)


def objectives_of(cfg: SweepConfig) -> list[tuple[str, str]]:
    return list(zip(cfg.search.metric, cfg.search.mode, strict=True))


def _best(df: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.Series | None:
    rows = [{k: float(v) for k, v in r.items() if isinstance(v, (int, float))} for r in df.to_dict("records")]
    i = rs.best_of(rows, objectives) if objectives[0][0] in df else None
    return None if i is None else df.iloc[i]


def response_surface(df: pd.DataFrame, keys: tuple[str, str], path: Path) -> Path | None:
    """Two panels over (keys[0], keys[1]): balanced accuracy and tail eKLD, scatter + contour."""
    from matplotlib.figure import Figure

    if not all(k in df for k in keys):
        return None
    fig = Figure(figsize=(10, 4.2), dpi=110)
    for i, (metric, label) in enumerate(SURFACE_METRICS):
        ax = fig.add_subplot(1, 2, i + 1)
        sub = df[df[metric].notna()] if metric in df else df.iloc[0:0]
        x = sub[keys[0]].astype(float).to_numpy()
        y = sub[keys[1]].astype(float).to_numpy()
        z = sub[metric].astype(float).to_numpy() if metric in sub else np.array([])
        if len(z) >= 4 and len(set(x)) > 1 and len(set(y)) > 1:
            try:  # a contour needs a non-degenerate triangulation; the scatter alone is still useful
                cs = ax.tricontourf(x, y, z, levels=12, cmap="viridis", alpha=0.55)
                fig.colorbar(cs, ax=ax, label=label)
            except (ValueError, RuntimeError):
                pass
        sc = ax.scatter(x, y, c=z if len(z) else None, cmap="viridis", edgecolors="k", s=50)
        if len(z) and not ax.collections[:-1]:
            fig.colorbar(sc, ax=ax, label=label)
        ax.set_xlabel(keys[0])
        ax.set_ylabel(keys[1])
        if keys[1].endswith("imbalance_ratio"):
            ax.set_yscale("log")
        ax.set_title(f"{label} ({len(z)} trials)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def importances(cfg: SweepConfig, df: pd.DataFrame) -> dict[str, Any]:
    """Optuna fANOVA importances of the searched keys for the first metric, from the trial table."""
    import optuna

    from sweeps.space import distributions

    metric, mode = cfg.search.metric[0], cfg.search.mode[0]
    dists = distributions(cfg.search)
    keys = [k for k in dists if k in df]
    done = df[df[metric].notna()] if metric in df else df.iloc[0:0]
    if len(done) < 2 or not keys:
        return {"metric": metric, "importances": {}, "note": f"needs 2+ finished trials, have {len(done)}"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    try:
        for _, row in done.iterrows():
            params = {k: _json(row[k]) for k in keys}  # pandas NaN back to the None a choice may be
            study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in keys},
                                                      value=float(row[metric])))
        # fANOVA, seeded: Optuna 5's default (PED-ANOVA) compares the top 10% of trials, which in a
        # sweep of a few trials is one trial and gives arbitrary answers.
        values = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=cfg.search.seed))
    except (ValueError, RuntimeError) as exc:  # e.g. every trial has the same value
        return {"metric": metric, "importances": {}, "note": f"not computable: {exc}"}
    return {"metric": metric, "evaluator": "fanova", "importances": {k: float(v) for k, v in values.items()},
            "trials": len(done)}


def _native(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _selected(df: pd.DataFrame, selector: dict[str, Any]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for k, v in selector.items():
        mask &= df[k] == v if k in df else False
    return df[mask]


def ekld_curves(cfg: SweepConfig, df: pd.DataFrame, results: Path, path: Path) -> dict[str, Any]:
    """eKLD against class size: the best trial of the default contrast's side A against the best of side B
    (the classifier's: the best GIT trial against the best baseline; the oracle is neither), on the axes
    and in the colours of every eKLD figure of the sweep."""
    from gitlib.plots import ekld_bands

    contrast = kind_of(cfg.trial).contrast
    if contrast is None or "ekld/tail" not in df:
        return {}
    metric, objectives = cfg.search.metric[0], objectives_of(cfg)
    a_label, b_label = (part.strip() for part in contrast.label.split(" - "))
    first = _best(_selected(df, contrast.a), objectives)
    base = _selected(df, contrast.b)
    if first is not None:  # compare like with like: side B at side A's data set, when there is one
        same = base
        for key in (k for k in cfg.search.space if k.startswith("dataset.") and k in df):
            same = same[same[key] == first[key]]
        base = same if len(same) and same[metric].notna().any() else base
    picks = {a_label: first, b_label: _best(base, objectives)}
    curves, colours, chosen = {}, {}, {}
    for side, row in picks.items():
        table = None if row is None else rs.read_per_class(results / str(row["trial_id"]))
        if row is None or table is None:
            continue
        t = table.to_pandas()
        name = f"{side} ({row['trial_id']})"
        nan = np.full(len(t), np.nan)  # one trial: no band
        curves[name] = (t["train_count"].to_numpy(), t["ekld"].to_numpy(), nan, nan)
        colours[name] = colour(str(row["group_id"]))
        chosen[side] = str(row["trial_id"])
    ekld_bands(curves, path, f"eKLD vs class size: best {a_label} vs best {b_label}", colours)
    return chosen


def trial_summary(cfg: SweepConfig, df: pd.DataFrame, results: Path, out: Path) -> dict[str, Any]:
    """trials.parquet / .csv, the best trial, response surface, importances and eKLD curves into `out`."""
    df.to_parquet(out / "trials.parquet", index=False)
    df.to_csv(out / "trials.csv", index=False)
    metric, mode = cfg.search.metric[0], cfg.search.mode[0]
    done = df[df["state"] == "TERMINATED"] if "state" in df else df
    best = _best(done, objectives_of(cfg))
    summary: dict[str, Any] = {"sweep": cfg.name, "trials": len(df), "metric": metric, "mode": mode,
                               "best_rule": rs.best_rule(objectives_of(cfg)),
                               "best": None if best is None else {k: _json(v) for k, v in best.items()}}
    searched = [k for k in cfg.search.space if k in df and pd.to_numeric(df[k], errors="coerce").notna().all()]
    if len(searched) >= 2:
        response_surface(df, (searched[0], searched[1]), out / "response_surface.png")
    summary["importances"] = importances(cfg, df)
    if cfg.search.repeats == 1:  # with repeats the report draws every group's band instead (report.groups)
        summary["ekld_curves"] = ekld_curves(cfg, df, results, out / "ekld_vs_class_size.png")
    return summary


def _json(v: Any) -> Any:
    v = _native(v)
    return None if isinstance(v, float) and math.isnan(v) else v


def pareto(cfg: SweepConfig, models: pd.DataFrame, out: Path) -> list[str]:
    """pareto.csv and pareto.png for several objectives: the models (trials, or groups with repeats) no
    other model beats on every objective. Returns the ids on the front."""
    from matplotlib.figure import Figure

    objectives = objectives_of(cfg)
    if len(objectives) < 2 or not all(m in models for m, _ in objectives):
        return []
    rows = [{m: float(r[m]) for m, _ in objectives} for r in models.to_dict("records")]
    front = rs.pareto_front(rows, objectives)
    id_col = "group_id" if "group_id" in models else "trial_id"
    table = models.iloc[front].sort_values(objectives[0][0], ascending=objectives[0][1] != "max")
    table.to_csv(out / "pareto.csv", index=False)
    (x, mx), (y, my) = objectives[:2]
    fig = Figure(figsize=(5.6, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    # each model in its group's colour (the same in every figure of the sweep); the front circled in black
    ax.scatter(models[x], models[y], s=18, c=[colour(str(g)) for g in models["group_id"]], alpha=0.5, label="all")
    ax.scatter(table[x], table[y], s=40, c=[colour(str(g)) for g in table["group_id"]], edgecolors="k",
               linewidths=1.2, label="Pareto front")
    for _, r in models.iterrows():  # every model named, so a colour reads as its group here too
        ax.annotate(str(r[id_col]), (r[x], r[y]), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel(f"{x} ({mx})")
    ax.set_ylabel(f"{y} ({my})")
    ax.set_title(f"Pareto front over {len(models)} {'groups' if id_col == 'group_id' else 'trials'}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pareto.png")
    return [str(v) for v in table[id_col]]
