"""`gitsweep train classifier CONFIG [--set ...]`: one classifier run without Ray, for debugging.

Same loop as a sweep trial (gitlib.train.classifier.train_classifier). Writes the resolved config,
metrics.json, per_class.parquet and ekld_vs_class_size.png to <storage>/runs/classifier-<timestamp>/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gitlib.configs import to_dict
from gitlib.errors import UserError
from sweeps.commands.rundir import new_run_dir
from sweeps.config import SweepConfig, load_config

if TYPE_CHECKING:  # torch loads only once the config is known to be valid (bad input exits fast)
    import torch

    from gitlib.data.dataset import BuiltDataset
    from gitlib.train.augment import Augmenter


def load_augmenter(kind: str, data: BuiltDataset, device: torch.device, generator_checkpoint: Path | None,
                   cfg: SweepConfig | None = None) -> Augmenter | None:
    """The augmenter for `classifier.augment == kind`.

    none -> None; oracle -> the data set's true nuisance; git -> the MUNIT generator read from
    `generator_checkpoint`, or, without one, the shared generator for (data, cfg.generator) from the
    generator store under the storage folder (trained there first if absent, as a sweep trial does).
    """
    if kind == "none":
        return None
    if kind == "oracle":
        if data.spec.nuisance == "none":
            raise UserError("classifier.augment=oracle needs a data set nuisance (dataset.nuisance is none)")
        from gitlib.train.augment import nuisance_augmenter

        return nuisance_augmenter(data.spec)
    from gitlib.models.munit import load_generator

    if generator_checkpoint is not None:
        return load_generator(generator_checkpoint, device)
    if cfg is None or importlib.util.find_spec("gitlib.train.generator") is None:
        raise UserError("classifier.augment=git needs a trained generator: pass a generator checkpoint")
    from sweeps.generator_store import get_generator

    entry = get_generator(cfg.generator, data, cfg.storage_path, device)
    print(f"generator {entry.digest} from {entry.folder}", flush=True)
    return load_generator(entry.model_path, device)


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def main(args: argparse.Namespace) -> int:
    cfg, _ = load_config(args.config, args.overrides)
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from gitlib.data.store import get_dataset
    from gitlib.metrics.table import format_table
    from gitlib.tracking.plots import ekld_vs_class_size
    from gitlib.train.classifier import ClassifierTrainer, train_classifier
    from gitlib.train.runtime import pick_device, set_threads

    device = pick_device()
    if device.type == "cpu":
        set_threads(1)  # small convs on few shared cores run fastest (and reproducibly) on one thread
    data = get_dataset(cfg.dataset, cfg.storage_path)
    gen_path = getattr(args, "generator", None)
    augmenter = load_augmenter(cfg.classifier.augment, data, device, Path(gen_path) if gen_path else None, cfg)
    run_dir = new_run_dir(cfg.storage_path, "classifier")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    c = cfg.classifier
    print(f"classifier {c.arch} loss={c.loss} rule={c.train_rule} augment={c.augment} on "
          f"{data.spec.source}/{data.spec.nuisance}: {len(data.train_y)} train images, {data.num_classes} "
          f"classes, device {device}")

    bar = tqdm(total=c.epochs, unit="epoch", desc="train")

    def on_epoch(_: ClassifierTrainer, m: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{m['train/loss']:.3f}", val_bacc=f"{m['val/balanced_acc']:.3f}", lr=f"{m['lr']:.2g}")

    start = time.perf_counter()
    try:
        result = train_classifier(c, data, cfg.seed, device, augmenter, on_epoch=on_epoch)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    metrics = {**result.metrics, "time/total_s": elapsed}
    if result.history:
        metrics.update({k: v for k, v in result.history[-1].items() if k.startswith("val/")})
    pq.write_table(result.per_class, run_dir / "per_class.parquet")
    (run_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2, sort_keys=True))
    ekld_vs_class_size(result.per_class, run_dir / "ekld_vs_class_size.png", metrics["ekld/size_spearman"],
                       title=f"{data.spec.source}/{data.spec.nuisance} augment={c.augment}")
    print(format_table(result.per_class))
    keys = ("test/acc", "test/balanced_acc", "test/many_acc", "test/medium_acc", "test/few_acc", "ekld/mean",
            "ekld/head", "ekld/tail", "ekld/size_spearman")
    print("  ".join(f"{k}={metrics[k]:.4f}" for k in keys))
    print(f"train + eval {elapsed:.1f} s; written to {run_dir}")
    return 0
