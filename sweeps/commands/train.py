"""`gitsweep train classifier|generator CONFIG [--set ...]`: one run without Ray, for debugging.

The same code as a sweep trial (gitlib.runs, with the shared stores); only the hooks differ: a progress
bar instead of Tune reports. Each run writes into a fresh `<storage>/runs/<kind>-<UTC timestamp>/`:
the resolved config, metrics.json and the result files (per_class.parquet and ekld_vs_class_size.png, or
generator.pt and samples.png).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from gitlib.train.config import ClassifierConfig
from sweeps.config import SweepConfig, load_config
from sweeps.paths import local_root
from sweeps.preflight import preflight

CLASSIFIER_KEYS = ("test/acc", "test/balanced_acc", "test/many_acc", "test/medium_acc", "test/few_acc",
                   "ekld/mean", "ekld/head", "ekld/tail", "ekld/size_spearman")


def new_run_dir(storage: Path, kind: str) -> Path:
    """A fresh `<storage>/runs/<kind>-<UTC timestamp>[-n]/`, created here so two runs never share one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = storage / "runs" / f"{kind}-{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # two runs in the same second get their own folders
            path, n = base.with_name(f"{base.name}-{n}"), n + 1


def _json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _start(cfg: SweepConfig, kind: str) -> Path:
    run_dir = new_run_dir(local_root(cfg.storage), kind)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
    return run_dir


def classifier(args: argparse.Namespace) -> int:
    cfg, _ = load_config(args.config, args.overrides)  # validated before torch loads: bad input exits fast
    preflight(cfg)  # data sources too, from their headers
    from tqdm import tqdm

    from gitlib.metrics.table import format_table
    from gitlib.runs.classifier import run_classifier
    from sweeps.trials.classifier import classifier_inputs, final_files
    from sweeps.trials.entry import trial_device

    device = trial_device(cfg.resources)
    data, generator, notes = classifier_inputs(cfg, device, Path(args.generator) if args.generator else None)
    run_dir = _start(cfg, "classifier")
    c = cfg.section(ClassifierConfig)
    print(f"classifier {c.arch} loss={c.loss} rule={c.train_rule} augment={c.effective_augment} on "
          f"{data.spec.source}/{data.spec.nuisance}: {len(data.train_y)} train images, {data.num_classes} "
          f"classes, {notes['trial/device']}")
    start = time.perf_counter()
    with tqdm(total=c.epochs, unit="epoch", desc="train") as bar:

        def on_epoch(_: Any, m: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{m['train/loss']:.3f}", val_bacc=f"{m['val/balanced_acc']:.3f}", lr=f"{m['lr']:.2g}")

        result = run_classifier(c, data, cfg.seed, device, generator, on_epoch=on_epoch, probes=cfg.probes)
    metrics = {**(result.history[-1] if result.history else {}), **result.metrics,
               "time/total_s": time.perf_counter() - start}
    for name, blob in final_files(result, cfg, f"{data.spec.source}/{data.spec.nuisance} augment={c.augment}").items():
        (run_dir / name).write_bytes(blob if isinstance(blob, bytes) else blob.encode())
    (run_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2, sort_keys=True))
    print(format_table(result.per_class))
    print("  ".join(f"{k}={metrics[k]:.4f}" for k in CLASSIFIER_KEYS))
    print(f"train + eval {metrics['time/total_s']:.1f} s; written to {run_dir}")
    return 0


def generator(args: argparse.Namespace) -> int:
    cfg, _ = load_config(args.config, args.overrides)  # validated before torch loads: bad input exits fast
    preflight(cfg)  # data sources too, from their headers
    from tqdm import tqdm

    from gitlib.runs.generator import GRID_FILE, MODEL_FILE, train_generator
    from sweeps.stores import dataset_for
    from sweeps.trials.entry import trial_device

    gcfg = cfg.generator
    device = trial_device(cfg.resources)
    data = dataset_for(cfg)
    run_dir = _start(cfg, "generator")
    print(f"data: {cfg.dataset.source} {tuple(data.train_x.shape)}, class counts {data.class_counts.tolist()}")
    print(f"device: {device}; run folder: {run_dir}")
    with tqdm(total=gcfg.iterations, desc="generator", unit="it") as bar:

        def on_chunk(trainer: Any, rec: dict[str, float]) -> None:
            bar.update(trainer.iteration - bar.n)
            bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("gen_adv", "recon_x", "recon_s", "recon_c", "dis")})

        result = train_generator(gcfg, data, cfg.seed, device, run_dir, on_chunk=on_chunk)
    (run_dir / "metrics.json").write_text(json.dumps(
        {"metrics": _json_safe(result.metrics), "losses": result.records, "config": cfg.as_dict(),
         "class_counts": data.class_counts.tolist()}, indent=2))
    m = result.metrics
    print(f"trained {int(m['iteration'])} iterations in {m['time/train_s']:.1f} s wall, {m['time/train_cpu_s']:.1f} s "
          f"CPU (evaluation {m['time/eval_s']:.1f} s)")
    for key, value in m.items():
        if key.startswith(("preservation/", "diversity/")):
            print(f"  {key:28s} {value:.4f}")
    print(f"generator: {run_dir / MODEL_FILE}\nsamples:   {run_dir / GRID_FILE}\nmetrics:   {run_dir / 'metrics.json'}")
    return 0
