"""`gitsweep train generator CONFIG [--set ...]`: one MUNIT run without Ray, for debugging and demos.

Writes `generator.pt`, `samples.png` and `metrics.json` into `<storage>/runs/generator-<UTC timestamp>/`
and prints the quality metrics and the paths.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from gitlib.configs import to_dict
from sweeps.commands.rundir import new_run_dir
from sweeps.config import load_config


def main(args: argparse.Namespace) -> int:
    cfg, _ = load_config(args.config, args.overrides)  # validate before torch loads: bad input exits fast
    import torch
    from tqdm import tqdm

    from gitlib.data.nuisances import nuisance_for_spec
    from gitlib.data.store import get_dataset
    from gitlib.metrics.generator_quality import generator_quality, train_reference_classifier
    from gitlib.models.munit import save_generator
    from gitlib.tracking.grid import grid_sources, save_sample_grid
    from gitlib.train.generator import GeneratorTrainer
    from gitlib.train.runtime import make_generator, pick_device, set_threads

    gcfg = cfg.generator
    device = pick_device()
    if device.type == "cpu":
        set_threads(1)  # small convs on a shared CPU run fastest on one thread
    data = get_dataset(cfg.dataset, cfg.storage_path)
    run_dir = new_run_dir(cfg.storage_path, "generator")
    print(f"data: {cfg.dataset.source} {tuple(data.train_x.shape)}, class counts {data.class_counts.tolist()}")
    print(f"device: {device}; run folder: {run_dir}")

    start, start_cpu = time.perf_counter(), time.process_time()
    trainer = GeneratorTrainer(gcfg, data, cfg.seed, device)
    with tqdm(total=gcfg.iterations, desc="generator", unit="it") as bar:

        def on_log(rec: dict[str, float]) -> None:
            bar.update(int(rec["iteration"]) - bar.n)
            bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("gen_adv", "recon_x", "recon_s", "recon_c", "dis")})

        records = trainer.train(gcfg.iterations, on_log=on_log, log_every=10)
    train_s = time.perf_counter() - start
    train_cpu_s = time.process_time() - start_cpu  # CPU time: wall time on a shared machine depends on its load

    gen_path = run_dir / "generator.pt"
    save_generator(gen_path, trainer.model, gcfg, data.channels)

    start = time.perf_counter()
    nuisance = nuisance_for_spec(cfg.dataset) if cfg.dataset.nuisance != "none" else None
    classifier = train_reference_classifier(data, cfg.seed, device)
    quality = generator_quality(trainer.model, data, classifier, nuisance, cfg.seed,
                                eval_samples=gcfg.eval_samples, device=device)
    idx, labels = grid_sources(data.train_y, data.class_counts, 4, 4, seed=cfg.seed)
    grid_path = save_sample_grid(run_dir / "samples.png", trainer.model, data.train_x[idx], labels,
                                 make_generator(cfg.seed, device), styles=8,
                                 title=f"MUNIT on {cfg.dataset.source} ({cfg.dataset.nuisance}), "
                                       f"{trainer.iteration} iterations")
    eval_s = time.perf_counter() - start

    metrics: dict[str, Any] = {
        **quality,
        "train_seconds": train_s,
        "train_cpu_seconds": train_cpu_s,
        "eval_seconds": eval_s,
        "iterations": trainer.iteration,
        "final_losses": {k: v for k, v in records[-1].items() if k != "iteration"} if records else {},
    }
    (run_dir / "metrics.json").write_text(json.dumps(
        {"metrics": metrics, "losses": records, "config": to_dict(cfg),
         "class_counts": data.class_counts.tolist(), "torch": torch.__version__}, indent=2))
    print(f"trained {trainer.iteration} iterations in {train_s:.1f} s wall, {train_cpu_s:.1f} s CPU "
          f"(evaluation {eval_s:.1f} s)")
    for key, value in quality.items():
        print(f"  {key:28s} {value:.4f}")
    print(f"generator: {gen_path}\nsamples:   {grid_path}\nmetrics:   {run_dir / 'metrics.json'}")
    return 0
