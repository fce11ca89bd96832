"""Bias probes' cost against the trial they run in: the demo's trial (digits 16 x 16, ratio 100,
`resnet_small`, 30 epochs, DRS; the baseline, so no generator is needed), trained and evaluated as a
sweep trial does (gitlib.runs.classifier.run_classifier), then all three probes on the trained model.

Prints each probe's time and forwarded images, the probe values, and the line
"probes X.XX s, trial Y.YY s, ratio Z.ZZ (target <= 0.20)" with the median of 3 probe runs. One torch
thread, as a trial gets.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from gitlib.data.builds import get_dataset
from gitlib.device import set_threads
from gitlib.models.resnet import inference_copy
from gitlib.probes import PROBES, ProbeResult, run_probes
from gitlib.runs.classifier import run_classifier
from gitlib.train.config import ClassifierConfig
from sweeps.config import load_config

REPEATS = 3


def main() -> None:
    set_threads(1)
    cfg, _ = load_config("demo", ["classifier.gen_frac=0.0"])
    with tempfile.TemporaryDirectory() as tmp:
        data = get_dataset(cfg.dataset, Path(tmp))
    device = torch.device("cpu")
    start = time.perf_counter()
    ccfg = cfg.section(ClassifierConfig)
    result = run_classifier(ccfg, data, cfg.seed, device, probes=())
    trial_s = time.perf_counter() - start
    print(f"demo trial (train {ccfg.epochs} epochs + evaluation, no probes): {trial_s:.2f} s")
    net = inference_copy(result.trainer.model).eval()
    seen = {"images": 0}

    @torch.no_grad()
    def predict(batch: torch.Tensor) -> torch.Tensor:
        seen["images"] += len(batch)
        return net(batch).argmax(dim=1)

    def run(names: list[str]) -> ProbeResult:
        return run_probes(names, predict, data.test_tx, data.test_ty, data.num_classes, data.class_counts,
                          seed=cfg.seed, device=device)

    for name in PROBES.names():  # per-probe cost and forward passes (plus the clean pass each run makes)
        seen["images"] = 0
        t = time.perf_counter()
        run([name])
        print(f"  {name:<14} {time.perf_counter() - t:5.2f} s, {seen['images']} images forwarded")
    walls = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        probed = run(list(PROBES.names()))
        walls.append(time.perf_counter() - t)
    for key, value in sorted(probed.metrics.items()):
        if not key.endswith(("_head", "_tail")):
            print(f"  {key:<36} {value:8.3f}")
    probes_s = statistics.median(walls)
    print(f"probes {probes_s:.2f} s, trial {trial_s:.2f} s, ratio {probes_s / trial_s:.2f} (target <= 0.20)")


if __name__ == "__main__":
    main()
