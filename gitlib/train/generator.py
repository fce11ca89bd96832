"""MUNIT training steps (docs/science.md, "Generator recipe"): returns loss dicts, never logs anywhere
itself; the whole generator run (chunks, checkpoints, quality, sample grid) is gitlib.runs.generator.

Both domains are the same training set, drawn class-balanced (a class uniformly, then an image of that
class), so the shared generator sees the small classes as often as the large ones while the nuisance
variety it learns still comes mostly from the large classes' many images. The two independent batches
x_a and x_b of MUNIT are stacked into one batch of 2 * batch_size: with one shared generator and
discriminator, that is MUNIT's loss on both domains (halved, which Adam does not see) in half the calls.
A generator with a style warp (`generator.style_warp`) reads content back before the warp and may add the
warp's diversity term (`generator.div_w`); docs/science.md, "Rotation", says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from gitlib.configs import to_dict
from gitlib.data.dataset import BuiltDataset
from gitlib.data.sampling import BalancedSampler
from gitlib.device import Precision, seeded_rng
from gitlib.models.munit import MsDiscriminator, Munit, build_munit
from gitlib.train.config import GeneratorConfig

LOSS_KEYS = ("gen_total", "gen_adv", "recon_x", "recon_s", "recon_c", "div", "dis")


def lsgan_loss(scores: list[torch.Tensor], target: float) -> torch.Tensor:
    """Least-squares GAN loss, summed over discriminator scales."""
    return torch.stack([torch.mean((s.float() - target) ** 2) for s in scores]).sum()


def diversity_loss(fake: torch.Tensor, fake2: torch.Tensor, z: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Mode-seeking term (after Mao et al. 2019, "MSGAN"): minus the L1 distance of two translations of
    one image (B, C, H, W) per unit of L1 distance of their styles (B, style_dim), averaged over the batch.

    Minimised, it makes different styles give different images. MUNIT's style reconstruction does that
    only for what the style encoder can read back off one image; on a data set whose images already come
    in every orientation, an orientation carries no trace of the style that made it, so nothing in
    MUNIT's losses asks a style warp to turn anything.
    """
    image_dist = (fake.float() - fake2.float()).abs().flatten(1).mean(1)  # (B,)
    style_dist = (z.float() - z2.float()).abs().mean(1)  # (B,)
    return -(image_dist / style_dist.clamp_min(1e-3)).mean()


class MunitTrainer:
    """Trains a Munit + MsDiscriminator on `data`'s training split; exact resume via state_dict."""

    def __init__(self, cfg: GeneratorConfig, data: BuiltDataset, seed: int,
                 device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.seed = int(seed)
        self.device = torch.device(device)
        self.precision = Precision(self.device, cfg.amp)
        # Weight init uses the global RNG: fork it so that the seed alone fixes the weights and the
        # caller's RNG stream is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model, dis = build_munit(data.channels, data.image_size, cfg.arch)
        self.model: Munit = model.to(self.device).train()
        self.dis: MsDiscriminator = dis.to(self.device).train()
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        self.opt_gen = torch.optim.Adam(self.model.parameters(), **adam)  # type: ignore[arg-type]
        self.opt_dis = torch.optim.Adam(self.dis.parameters(), **adam)  # type: ignore[arg-type]
        self.scaler_gen = self.precision.scaler()
        self.scaler_dis = self.precision.scaler()
        # Data stays on the device as uint8; batches are gathered by index tensors.
        self.x = data.train_x.to(self.device)  # (N, C, H, W) uint8
        self.y = data.train_y.to(self.device)  # (N,)
        self.sampler = BalancedSampler(self.y, data.num_classes)
        self.rng = seeded_rng(self.seed, self.device)  # batches and random styles
        self.iteration = 0

    def _batch(self) -> torch.Tensor:
        """x_a and x_b, two independent class-balanced batches, stacked: (2B, C, H, W) float in [0, 1]."""
        idx = torch.cat([self.sampler(self.cfg.batch_size, self.rng), self.sampler(self.cfg.batch_size, self.rng)])
        return self.x[idx].float() / 255

    def _generator_losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MUNIT's losses on the batch x (2B, C, H, W) (and the warp's diversity term when div_w > 0): the
        translations (2B, C, H, W) and the named losses, `gen_total` their weighted sum.

        Without a warp the operations run in the order they always did: the default generator's weights
        stay bit-identical to those of the code before the warp existed."""
        cfg, m = self.cfg, self.model
        n, size = x.shape[0], (x.shape[-2], x.shape[-1])
        z = m.random_style(n, self.rng)  # (2B, style_dim) ~ N(0, I)
        content, style = m.encode(x)
        # One decoder call for both the reconstruction (own style) and the translation (random style),
        # then the style's warp, if any.
        rendered = m.decode(torch.cat([content, content]), torch.cat([style, z]), size, warp=False)
        out = m.warp_images(rendered, torch.cat([style, z]))
        recon, fake = out[:n], out[n:]  # (2B, C, H, W) each
        if m.warp is None:
            content_re, style_re = m.encode(fake)
        else:
            # Content is read back before the warp: a convolutional encoder is not invariant to turns,
            # and asking it to be (through this loss) pins the warp at the identity.
            content_re, style_re = m.encode(rendered[n:])[0], m.encode(fake)[1]
        losses = {"recon_x": F.l1_loss(recon.float(), x), "recon_s": F.l1_loss(style_re.float(), z),
                  "recon_c": F.l1_loss(content_re.float(), content.float())}
        losses["gen_adv"] = lsgan_loss(self.dis(fake), 1.0)
        losses["gen_total"] = (cfg.gan_w * losses["gen_adv"] + cfg.recon_x_w * losses["recon_x"]
                               + cfg.recon_s_w * losses["recon_s"] + cfg.recon_c_w * losses["recon_c"])
        losses["div"] = x.new_zeros(())
        if cfg.div_w > 0:
            # Two warps (random styles z, z2) of one rendered image, detached: the term trains the warp
            # head alone, so that the AdaIN path keeps what MUNIT's losses make of it.
            z2 = m.random_style(n, self.rng)  # drawn only here: the default run's random stream is unchanged
            still = rendered[n:].detach()
            losses["div"] = diversity_loss(m.warp_images(still, z), m.warp_images(still, z2), z, z2)
            losses["gen_total"] = losses["gen_total"] + cfg.div_w * losses["div"]
        return fake, losses

    def step(self) -> dict[str, float]:
        """One generator update then one discriminator update; returns the losses."""
        cfg = self.cfg
        x = self._batch()  # (2B, C, H, W)
        n = x.shape[0]
        with self.precision.autocast():
            fake, losses = self._generator_losses(x)
        total = losses["gen_total"]
        self.opt_gen.zero_grad(set_to_none=True)
        self.scaler_gen.scale(total).backward()
        self.scaler_gen.step(self.opt_gen)
        self.scaler_gen.update()

        with self.precision.autocast():
            scores = self.dis(torch.cat([x, fake.detach()]))  # real first, then fake
            loss_d = lsgan_loss([s[:n] for s in scores], 1.0) + lsgan_loss([s[n:] for s in scores], 0.0)
        self.opt_dis.zero_grad(set_to_none=True)
        self.scaler_dis.scale(cfg.gan_w * loss_d).backward()
        self.scaler_dis.step(self.opt_dis)
        self.scaler_dis.update()

        self.iteration += 1
        losses["dis"] = loss_d
        vals = torch.stack([losses[k].float() for k in LOSS_KEYS]).detach().cpu()
        return dict(zip(LOSS_KEYS, vals.tolist(), strict=True))

    def train(self, iterations: int, on_log: Callable[[dict[str, float]], None] | None = None,
              log_every: int = 50) -> list[dict[str, float]]:
        """Run `iterations` more steps; every `log_every` steps (and at the end) record the mean losses
        of the window with the iteration count, hand the record to `on_log`, and return all records."""
        records: list[dict[str, float]] = []
        window: list[dict[str, float]] = []
        for i in range(iterations):
            window.append(self.step())
            if len(window) == log_every or i == iterations - 1:
                rec = {k: sum(w[k] for w in window) / len(window) for k in LOSS_KEYS}
                rec["iteration"] = float(self.iteration)
                records.append(rec)
                if on_log is not None:
                    on_log(rec)
                window = []
        return records

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: weights, optimisers, scalers, iteration, RNG state."""
        return {
            "model": self.model.state_dict(),
            "dis": self.dis.state_dict(),
            "opt_gen": self.opt_gen.state_dict(),
            "opt_dis": self.opt_dis.state_dict(),
            "scaler_gen": self.scaler_gen.state_dict(),
            "scaler_dis": self.scaler_dis.state_dict(),
            "iteration": self.iteration,
            "rng": self.rng.get_state(),
            "seed": self.seed,
            "config": to_dict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.dis.load_state_dict(state["dis"])
        self.opt_gen.load_state_dict(state["opt_gen"])
        self.opt_dis.load_state_dict(state["opt_dis"])
        if state.get("scaler_gen"):
            self.scaler_gen.load_state_dict(state["scaler_gen"])
        if state.get("scaler_dis"):
            self.scaler_dis.load_state_dict(state["scaler_dis"])
        self.iteration = int(state["iteration"])
        self.rng.set_state(state["rng"].cpu())
