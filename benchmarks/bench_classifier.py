"""Classifier speed: batched eKLD vs its bare forward passes and vs a per-image PIL loop (the reference
code's way), and one training epoch vs its bare forward + backward passes.

Prints ratios measured in this one run. Targets: eKLD <= 1.25x its bare forwards; >= 3x faster than the
reference loop (each copy through torchvision's PIL transforms, one forward per class of the model as
trained); epoch overhead (data + augmentation) <= 15%. eKLD runs its forwards through `inference_copy`
(batch norm folded), so its bare forwards are timed on that copy too. On CPU (one torch thread) times are this
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
import torchvision.transforms as T
from PIL import Image
from torch.distributions import Categorical, kl_divergence

from gitlib.augmenter import Augmenter
from gitlib.data.builds import get_dataset
from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import get_nuisance
from gitlib.data.spec import DatasetSpec
from gitlib.device import pick_device, set_threads
from gitlib.metrics.invariance import default_batch_size, ekld_per_class
from gitlib.models.resnet import inference_copy
from gitlib.train.classifier import ClassifierTrainer
from gitlib.train.config import ClassifierConfig

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
def reference_loop(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, copies: int, degrees: float,
                   device: torch.device) -> None:
    """eKLD the way the reference code measures it: every copy goes through torchvision's PIL pipeline
    (ToPILImage -> RandomRotation, bicubic -> ToTensor) one at a time and is stacked; then, class by class,
    one forward pass of the originals and one of all their copies, and the KL of Categorical distributions."""
    rotate = T.Compose([T.ToPILImage(), T.RandomRotation(degrees, interpolation=T.InterpolationMode.BICUBIC),
                        T.ToTensor()])
    plain = T.Compose([T.ToPILImage(), T.ToTensor()])
    for c in np.unique(labels):
        cls = images[labels == c]  # (n, H, W) uint8
        originals = torch.stack([plain(img) for img in cls]).to(device)  # (n, 1, H, W)
        copies_t = torch.stack([torch.stack([rotate(img) for _ in range(copies)]) for img in cls])  # (n, K, 1, H, W)
        p = model(originals)[:, None, :].expand(-1, copies, -1)
        q = model(copies_t.flatten(0, 1).to(device)).reshape(len(cls), copies, -1)
        kl_divergence(Categorical(logits=p), Categorical(logits=q)).mean().item()


@torch.no_grad()
def per_copy_loop(model: torch.nn.Module, images: np.ndarray, copies: int, degrees: float,
                  device: torch.device) -> None:
    """A naive loop for scale: rotate each copy with PIL and forward it alone (batch of one)."""
    rng = np.random.default_rng(0)
    for img in images:  # (H, W) uint8
        p = F.softmax(model(torch.from_numpy(img).float().div(255)[None, None].to(device)), dim=1)
        for _ in range(copies):
            rot = Image.fromarray(img).rotate(float(rng.uniform(-degrees, degrees)), resample=Image.Resampling.BICUBIC)
            q = F.log_softmax(model(torch.from_numpy(np.array(rot)).float().div(255)[None, None].to(device)), dim=1)
            (p * (p.log() - q)).sum().item()


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


def epoch_overhead(data: BuiltDataset, cfg: ClassifierConfig, device: torch.device, rounds: int = 4,
                   augmenter: Augmenter | None = None) -> tuple[float, float, int]:
    """(epoch training time, bare forward + backward time, steps), best of `rounds`, measured alternately.

    Augmentation on from the first epoch, no warm-up; the bare loop uses ready-made float batches of the
    same sizes and a second model of the same architecture."""
    cfg = replace(cfg, git_start_epoch=0, warmup_epochs=0, epochs=rounds + 1)
    data = replace(data, val_x=data.val_x[:0], val_y=data.val_y[:0])  # time the training steps only
    trainer = ClassifierTrainer(cfg, data, seed=0, device=device, generator=augmenter)
    bare = ClassifierTrainer(replace(cfg, augment="none"), data, seed=0, device=device)
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
    net = inference_copy(model)  # eKLD forwards through this copy (batch norm folded into the convs)
    t_bare = _timed(lambda: bare_forwards(net, x, COPIES, default_batch_size(device)), device, repeat=2)
    t_unfolded = _timed(lambda: bare_forwards(model, x, COPIES, default_batch_size(device)), device, repeat=2)
    imgs, labels = data.test_x[:, 0].numpy(), data.test_y.numpy()
    t_ref = _timed(lambda: reference_loop(model, imgs, labels, COPIES, 180.0, device), device)
    t_copy = _timed(lambda: per_copy_loop(model, imgs[:PIL_IMAGES], COPIES, 180.0, device), device) * n / PIL_IMAGES
    print(f"eKLD, {n} images x {COPIES} copies: {t_ekld:.2f} s; its bare forwards {t_bare:.2f} s "
          f"-> ratio {t_ekld / t_bare:.2f}x (target <= 1.25x)")
    print(f"the same forwards with batch norm unfolded: {t_unfolded:.2f} s ({t_unfolded / t_bare:.2f}x the folded)")
    print(f"reference loop (torchvision PIL transform per copy, one forward per class): {t_ref:.2f} s "
          f"-> batched eKLD is {t_ref / t_ekld:.1f}x faster (target >= 3x); ceiling with free transforms "
          f"{t_ref / t_bare:.1f}x (the reference over eKLD's bare forwards)")
    print(f"naive loop (PIL rotate and forward per copy, scaled from {PIL_IMAGES} images): {t_copy:.1f} s "
          f"-> {t_copy / t_ekld:.1f}x faster")

    # ---- one training epoch ----------------------------------------------------------------------
    for augment in ("none", "oracle"):
        t_ep, t_bare_train, steps = epoch_overhead(data, replace(cfg, augment=augment), device)
        print(f"training epoch (augment={augment}, {steps} steps of {cfg.batch_size}): {t_ep:.3f} s; bare "
              f"forward + backward {t_bare_train:.3f} s -> overhead {100 * (t_ep / t_bare_train - 1):+.1f}% "
              f"(target <= 15%)")

if __name__ == "__main__":
    main()
