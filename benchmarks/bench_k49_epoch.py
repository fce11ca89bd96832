"""A K49-LT-sized epoch and eKLD at the paper's settings, on whatever device is present.

Data: the paper's K49-LT class sizes (Zipf alpha 2.0 from 4800, clip 5: 7,822 training images of 28x28,
49 classes), random pixels (timing does not depend on content). ResNet-20 at batch 128.

- One training epoch for augment none / oracle (rotation, bicubic) / git (the paper's K49 MUNIT preset,
  untrained: its cost is the same), with AMP on and off where CUDA is present. Prints seconds, images
  per second (real + generated) and the overhead over the same steps' bare forward + backward passes.
- eKLD as the paper measures it: 40 test images per class x 100 rotated copies (196,000 forwards), and
  its bare forward passes, and the reference loop (torchvision PIL rotation per copy, one forward per
  class) on the same model.

On CUDA every figure is a full epoch / pass (best of 3 after a warm-up). On a CPU (one thread) a full
epoch takes minutes, so the first 1/8 of the images is timed and scaled up, and eKLD runs on 5 classes;
those lines say "estimated".
"""

from __future__ import annotations

from dataclasses import replace

import torch

from benchmarks.bench_classifier import _timed, bare_forwards, epoch_overhead, reference_loop
from gitlib.augmenter import Augmenter
from gitlib.data.dataset import BuiltDataset
from gitlib.data.nuisances import get_nuisance
from gitlib.data.profiles import class_counts
from gitlib.data.spec import DatasetSpec
from gitlib.device import pick_device, set_threads
from gitlib.metrics.invariance import default_batch_size, ekld_per_class
from gitlib.models.munit import build_munit
from gitlib.models.resnet import inference_copy
from gitlib.train.classifier import ClassifierTrainer
from gitlib.train.config import ClassifierConfig

SIZE, CLASSES = 28, 49


def k49_like(train_fraction: float) -> BuiltDataset:
    """Random 28x28 images with the K49-LT class sizes (all of them, or the first `train_fraction`)."""
    counts = class_counts("zipf", CLASSES, 4800, 960, zipf_alpha=2.0, min_per_class=5)
    g = torch.Generator().manual_seed(0)
    y = torch.repeat_interleave(torch.arange(CLASSES), torch.as_tensor(counts))
    y = y[torch.randperm(len(y), generator=g)][: max(256, int(len(y) * train_fraction))]
    x = torch.randint(0, 256, (len(y), 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    test_y = torch.arange(CLASSES).repeat_interleave(40)
    test_x = torch.randint(0, 256, (len(test_y), 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    spec = DatasetSpec(nuisance="rotation")  # the augmenters read only the nuisance from the spec
    return BuiltDataset(spec, CLASSES, x, y, x[:0], y[:0], test_x, test_y, test_x[:0], test_y[:0],
                        train_base_x=x)


def k49_generator(data: BuiltDataset, device: torch.device) -> Augmenter:
    """The paper's K49 MUNIT preset, untrained (the cost of sampling is the same)."""
    from sweeps.config import load_config

    arch = load_config("base/k49-lt")[0].generator.arch  # the paper's K49 MUNIT, as the presets use it
    return build_munit(data.channels, data.image_size, arch)[0].to(device).eval()


def main() -> None:
    device = pick_device()
    cuda = device.type == "cuda"
    if not cuda:
        set_threads(1)
    fraction = 1.0 if cuda else 1 / 8
    data = k49_like(fraction)
    full = int(class_counts("zipf", CLASSES, 4800, 960, zipf_alpha=2.0, min_per_class=5).sum())
    scale = full / len(data.train_y)
    name = torch.cuda.get_device_name(device) if cuda else "CPU, 1 thread"
    print(f"device {name}; K49-LT sizes: {full} training images, 28x28, ResNet-20, batch 128"
          + ("" if cuda else f"; timing {len(data.train_y)} images and scaling x{scale:.1f} (estimated)"))
    base = ClassifierConfig(arch="resnet20", batch_size=128, warmup_epochs=0, git_start_epoch=0, gen_frac=0.5)
    for augment in ("none", "oracle", "git"):
        augmenter = k49_generator(data, device) if augment == "git" else None
        for amp in ((True, False) if cuda else (False,)):
            cfg = replace(base, augment=augment, amp=amp)
            t, t_bare, _ = epoch_overhead(data, cfg, device, rounds=3 if cuda else 1, augmenter=augmenter)
            print(f"epoch augment={augment:6s} amp={'on ' if amp and cuda else 'off'}: {t * scale:7.2f} s, "
                  f"{full / (t * scale):8.0f} images/s{'' if cuda else ' (estimated)'}; bare forward + backward "
                  f"{t_bare * scale:.2f} s -> overhead {100 * (t / t_bare - 1):+.0f}%")

    # eKLD at the paper's size (40 images x 100 copies per class) vs the reference loop, same trained-size model
    trainer = ClassifierTrainer(base, data, seed=0, device=device)
    model = trainer.model.eval()
    classes = CLASSES if cuda else 5
    keep = data.test_y < classes
    x_u8, y = data.test_x[keep], data.test_y[keep]
    nuisance = get_nuisance("rotation", degrees=180.0)
    ekld_per_class(model, x_u8[:40].to(device), y[:40].to(device), nuisance, 100, seed=0)  # warm-up

    repeat = 3 if cuda else 1
    t_ekld = _timed(lambda: ekld_per_class(model, x_u8.to(device), y.to(device), nuisance, 100, seed=0), device,
                    repeat)
    net, x = inference_copy(model), x_u8.to(device).float() / 255
    t_bare = _timed(lambda: bare_forwards(net, x, 100, default_batch_size(device)), device, repeat)
    with torch.no_grad():
        t_ref = _timed(lambda: reference_loop(model, x_u8[:, 0].numpy(), y.numpy(), 100, 180.0, device), device)
    est = "" if cuda else f" (estimated from {classes} classes)"
    k = CLASSES / classes
    print(f"eKLD, 49 classes x 40 images x 100 copies: {t_ekld * k:.2f} s{est}; its bare forwards "
          f"{t_bare * k:.2f} s -> ratio {t_ekld / t_bare:.2f}x; reference loop {t_ref * k:.1f} s -> "
          f"{t_ref / t_ekld:.1f}x faster")


if __name__ == "__main__":
    main()
