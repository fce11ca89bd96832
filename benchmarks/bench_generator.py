"""MUNIT training speed on CPU (1 thread): the CPU preset at batch 16, and the paper's K49 preset at batch 1;
where CUDA is present, first 1,000 timed iterations of the K49 preset on the GPU, AMP on and off.

Baseline: the reference MUNIT update (separate a / b passes, a discriminator step that re-runs the
generator for its own fakes, then the generator step), on the same models and batches. Our step stacks
x_a and x_b, decodes reconstruction and translation in one call and reuses the fakes for the
discriminator. The ratio is printed in the same run, so machine load affects both sides alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F

from gitlib.data.dataset import BuiltDataset
from gitlib.data.spec import DatasetSpec
from gitlib.device import set_threads
from gitlib.train.config import GeneratorConfig
from gitlib.train.generator import MunitTrainer, lsgan_loss


def _random_dataset(size: int, n: int = 512, classes: int = 10) -> BuiltDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return BuiltDataset(DatasetSpec(), classes, x, y, x[:8], y[:8], x[:8], y[:8], x[:8], y[:8])


def _reference_step(t: MunitTrainer) -> None:
    """MUNIT's original order and passes (dis_update, then gen_update, per domain), shared weights."""
    cfg, m, b = t.cfg, t.model, t.cfg.batch_size
    x = t._batch()
    x_a, x_b = x[:b], x[b:]
    size = (x.shape[-2], x.shape[-1])
    # discriminator update: its own forward pass for the fakes
    with torch.no_grad():
        s_a, s_b = m.random_style(b, t.rng), m.random_style(b, t.rng)
        c_a, _ = m.encode(x_a)
        c_b, _ = m.encode(x_b)
        x_ba, x_ab = m.decode(c_b, s_a, size), m.decode(c_a, s_b, size)
    loss_d = (lsgan_loss(t.dis(x_ba), 0.0) + lsgan_loss(t.dis(x_a), 1.0)
              + lsgan_loss(t.dis(x_ab), 0.0) + lsgan_loss(t.dis(x_b), 1.0))
    t.opt_dis.zero_grad(set_to_none=True)
    loss_d.backward()
    t.opt_dis.step()
    # generator update: each domain separately, one decoder call per output
    s_a, s_b = m.random_style(b, t.rng), m.random_style(b, t.rng)
    c_a, sp_a = m.encode(x_a)
    c_b, sp_b = m.encode(x_b)
    x_a_rec, x_b_rec = m.decode(c_a, sp_a, size), m.decode(c_b, sp_b, size)
    x_ba, x_ab = m.decode(c_b, s_a, size), m.decode(c_a, s_b, size)
    c_b_rec, s_a_rec = m.encode(x_ba)
    c_a_rec, s_b_rec = m.encode(x_ab)
    loss = (cfg.recon_x_w * (F.l1_loss(x_a_rec, x_a) + F.l1_loss(x_b_rec, x_b))
            + cfg.recon_s_w * (F.l1_loss(s_a_rec, s_a) + F.l1_loss(s_b_rec, s_b))
            + cfg.recon_c_w * (F.l1_loss(c_a_rec, c_a) + F.l1_loss(c_b_rec, c_b))
            + cfg.gan_w * (lsgan_loss(t.dis(x_ba), 1.0) + lsgan_loss(t.dis(x_ab), 1.0)))
    t.opt_gen.zero_grad(set_to_none=True)
    loss.backward()
    t.opt_gen.step()


def _timed(step: Callable[[], object], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _compare(a: Callable[[], object], b: Callable[[], object], warmup: int, steps: int,
             rounds: int = 3) -> tuple[float, float]:
    """Seconds per step of a and b: alternating rounds, best round of each (load spikes hit both)."""
    for _ in range(warmup):
        a()
        b()
    times = [(_timed(a, steps), _timed(b, steps)) for _ in range(rounds)]
    return min(t[0] for t in times), min(t[1] for t in times)


def cuda_k49(device: torch.device, iterations: int = 1000) -> None:
    """The paper's K49 preset at batch 1 on CUDA: `iterations` timed updates, AMP on and off."""
    data = _random_dataset(28)
    for amp in (True, False):
        t = MunitTrainer(replace(k49_recipe(), amp=amp), data, seed=0, device=device)
        for _ in range(20):  # warm-up: cuDNN picks its algorithms
            t.step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            t.step()
        torch.cuda.synchronize()
        sec = time.perf_counter() - start
        print(f"k49  28x28 batch  1 on {torch.cuda.get_device_name(device)}, amp {'on ' if amp else 'off'}: "
              f"{iterations} iterations in {sec:.1f} s ({iterations / sec:.1f} it/s); "
              f"the preset's 10,000: ~{10_000 * sec / iterations / 60:.1f} min")


def k49_recipe() -> GeneratorConfig:
    """The paper's K49 MUNIT recipe, as the bundled K49 presets use it."""
    from sweeps.config import load_config

    return load_config("base/k49-lt")[0].generator


def main() -> None:
    if torch.cuda.is_available():
        cuda_k49(torch.device("cuda"))
    set_threads(1)
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.2f} (timings are noisy under load)")
    cases = [("cpu", 16, {"batch_size": 16}, 5, 15), ("k49", 28, {"batch_size": 1}, 2, 4)]
    for preset, size, overrides, warmup, steps in cases:
        cfg = replace(k49_recipe() if preset == "k49" else GeneratorConfig(), **overrides, amp=False)
        data = _random_dataset(size)
        ours = MunitTrainer(cfg, data, seed=0, device="cpu")
        ref = MunitTrainer(cfg, data, seed=0, device="cpu")
        t_ours, t_ref = _compare(ours.step, partial(_reference_step, ref), warmup, steps)
        print(f"{preset:4s} {size}x{size} batch {cfg.batch_size:2d}: {1 / t_ours:6.2f} it/s "
              f"({1000 * t_ours:7.1f} ms/it); reference-style step {1000 * t_ref:7.1f} ms/it; "
              f"speed-up x{t_ref / t_ours:.2f}")
        if preset == "cpu":
            print(f"     {cfg.iterations} iterations of the CPU preset: ~{cfg.iterations * t_ours:.0f} s")
        if preset == "k49":
            print(f"     10,000 iterations of the K49 preset on this CPU: ~{10_000 * t_ours / 60:.0f} min")


if __name__ == "__main__":
    main()
