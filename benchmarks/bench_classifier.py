"""Classifier speed: batched eKLD vs its bare forward passes and vs a per-image PIL loop (the reference
code's way), and one training epoch vs its bare forward + backward passes.

Prints ratios measured in this one run. Targets: eKLD <= 1.25x its bare forwards; >= 3x faster than the
PIL loop; epoch overhead (data + augmentation) <= 15%. On CPU (one torch thread) times are this
process's CPU time, so other jobs on a shared machine do not distort the ratios; on CUDA, wall time
with synchronisation.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import get_nuisance
from gitlib.data.spec import DatasetSpec
from gitlib.data.store import get_dataset
from gitlib.metrics.invariance import default_batch_size, ekld_per_class
from gitlib.train.classifier import ClassifierTrainer
from gitlib.train.config import ClassifierConfig
from gitlib.train.runtime import pick_device, set_threads

COPIES = 30  # transformed copies per test image (the CPU default of classifier.ekld_samples)
PIL_IMAGES = 40  # images in the (slow) PIL reference loop; its time is scaled to the full set


def _timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> float:
    """Best of `repeat` times of fn() in seconds: CPU time on CPU, synchronised wall time on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, clock() - t)
    return best


@torch.no_grad()
def bare_forwards(model: torch.nn.Module, x: torch.Tensor, copies: int, batch_size: int) -> None:
    """The forward passes eKLD needs and nothing else: the originals once, then every copy, in the same
    chunks, on copies made ahead of time (no transform, no KL)."""
    per_chunk = max(1, batch_size // copies)
    for start in range(0, x.shape[0], per_chunk):
        xs = x[start:start + per_chunk]
        model(xs)
        for part in xs.repeat_interleave(copies, 0).split(batch_size):
            model(part)


@torch.no_grad()
def pil_reference(model: torch.nn.Module, images: np.ndarray, copies: int, degrees: float, per_copy: bool,
                  device: torch.device) -> None:
    """Reference style: rotate each copy with PIL one at a time, convert to a tensor, forward the copies
    one by one (per_copy) or each image's copies as one batch."""
    rng = np.random.default_rng(0)
    for img in images:  # (H, W) uint8
        p = F.softmax(model(torch.from_numpy(img).float().div(255)[None, None].to(device)), dim=1)
        outs = []
        for _ in range(copies):
            rot = Image.fromarray(img).rotate(float(rng.uniform(-degrees, degrees)), resample=Image.BICUBIC)
            t = torch.from_numpy(np.array(rot)).float().div(255)[None, None].to(device)
            if per_copy:
                q = F.log_softmax(model(t), dim=1)
                outs.append((p * (p.log() - q)).sum())
            else:
                outs.append(t)
        if not per_copy:
            q = F.log_softmax(model(torch.cat(outs)), dim=1)
            (p * (p.log() - q)).sum(dim=1).mean()


def bare_training(trainer: ClassifierTrainer, batches: list[torch.Tensor], labels: list[torch.Tensor]) -> None:
    """Forward + loss + backward + optimiser step on ready-made float batches (the compute of an epoch)."""
    model, opt = trainer.model, trainer.optimizer
    model.train()
    for x, y in zip(batches, labels, strict=True):
        with trainer.precision.autocast():
            logits = model(x)
        loss = trainer.loss_fn(logits, y, None)
        opt.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(opt)
        trainer.scaler.update()


def epoch_overhead(data: BuiltDataset, cfg: ClassifierConfig, device: torch.device,
                   rounds: int = 4) -> tuple[float, float, int]:
    """(epoch training time, bare forward + backward time, steps), best of `rounds`, measured alternately.

    Augmentation on from the first epoch, no warm-up; the bare loop uses ready-made float batches of the
    same sizes and a second model of the same architecture."""
    cfg = replace(cfg, git_start_epoch=0, warmup_epochs=0, epochs=rounds + 1)
    data = replace(data, val_x=data.val_x[:0], val_y=data.val_y[:0])  # time the training steps only
    trainer = ClassifierTrainer(cfg, data, seed=0, device=device)
    bare = ClassifierTrainer(cfg, data, seed=0, device=device)
    n, b = len(data.train_y), cfg.batch_size
    gen = torch.Generator().manual_seed(0)
    batches = [torch.rand(min(b, n - s), data.channels, data.image_size, data.image_size,
                          generator=gen).to(device) for s in range(0, n, b)]
    labels = [torch.randint(0, data.num_classes, (len(xb),), generator=gen).to(device) for xb in batches]
    trainer.run_epoch()  # the first epoch pays one-off allocation costs
    bare_training(bare, batches, labels)
    t_epoch, t_bare = [], []
    for _ in range(rounds):
        t_epoch.append(_timed(trainer.run_epoch, device))
        t_bare.append(_timed(lambda: bare_training(bare, batches, labels), device))
    return min(t_epoch), min(t_bare), len(batches)


def main() -> None:
    device = pick_device()
    if device.type == "cpu":
        set_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = get_dataset(DatasetSpec(source="digits", nuisance="rotation", imbalance_ratio=100), Path(tmp))
    print(f"device {device}; digits 16x16 rotation: {len(data.train_y)} train, {len(data.test_y)} test images")

    # ---- eKLD -------------------------------------------------------------------------------
    cfg = ClassifierConfig(augment="oracle")
    trainer = ClassifierTrainer(cfg, data, seed=0, device=device)
    model = trainer.model.eval()
    nuisance = get_nuisance("rotation", degrees=data.spec.rotation_degrees)
    x_u8, y = data.test_x.to(device), data.test_y.to(device)
    x = x_u8.float() / 255
    n = x.shape[0]
    ekld_per_class(model, x_u8[:20], y[:20], nuisance, COPIES, seed=0)  # warm-up
    t_ekld = _timed(lambda: ekld_per_class(model, x_u8, y, nuisance, COPIES, seed=0), device, repeat=2)
    t_bare = _timed(lambda: bare_forwards(model, x, COPIES, default_batch_size(device)), device, repeat=2)
    imgs = data.test_x[:PIL_IMAGES, 0].numpy()
    with torch.no_grad():
        t_pil_copy = _timed(lambda: pil_reference(model, imgs, COPIES, 180.0, True, device), device) * n / PIL_IMAGES
        t_pil_img = _timed(lambda: pil_reference(model, imgs, COPIES, 180.0, False, device), device) * n / PIL_IMAGES
    print(f"eKLD, {n} images x {COPIES} copies: {t_ekld:.2f} s; bare forwards {t_bare:.2f} s "
          f"-> ratio {t_ekld / t_bare:.2f}x (target <= 1.25x)")
    print(f"PIL reference loop (scaled from {PIL_IMAGES} images): forward per copy {t_pil_copy:.1f} s "
          f"-> batched is {t_pil_copy / t_ekld:.1f}x faster; forward per image {t_pil_img:.1f} s "
          f"-> {t_pil_img / t_ekld:.1f}x faster (target >= 3x)")

    # ---- one training epoch ----------------------------------------------------------------------
    for augment in ("none", "oracle"):
        t_ep, t_bare_train, steps = epoch_overhead(data, replace(cfg, augment=augment), device)
        print(f"training epoch (augment={augment}, {steps} steps of {cfg.batch_size}): {t_ep:.3f} s; bare "
              f"forward + backward {t_bare_train:.3f} s -> overhead {100 * (t_ep / t_bare_train - 1):+.1f}% "
              f"(target <= 15%)")

if __name__ == "__main__":
    main()
