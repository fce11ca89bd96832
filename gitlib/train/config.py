"""Typed configs of the two training loops; saved inside checkpoints and logged as MLflow params.

Torch-free: the choices (architecture, loss, training rule) are registries whose implementations load
on first use, so a config validates without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal

from gitlib.configs import join, require
from gitlib.models.arch import ARCHITECTURES, MunitArch
from gitlib.registry import Registry
from gitlib.train.rules import RULES

# Factories (class_counts, ClassifierConfig) -> loss(logits, targets, class_weight); reference spellings too.
LOSSES: Registry = Registry("classifier.loss", {
    "ce": "gitlib.train.losses:cross_entropy",
    "ldam": "gitlib.train.losses:ldam",
    "focal": "gitlib.train.losses:focal",
})


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier recipe (docs/science.md, "Classifier recipe"); defaults are CPU-sized for digits 16x16."""

    arch: Annotated[str, ARCHITECTURES] = "resnet_small"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    warmup_epochs: int = 5  # linear warm-up
    milestones: tuple[int, ...] = (20, 25)  # epochs after which lr is multiplied by lr_factors[i]
    lr_factors: tuple[float, ...] = (0.01, 0.0001)  # cumulative factors of the base lr (paper: x0.01, x0.0001)
    loss: Annotated[str, LOSSES] = "ce"
    train_rule: Annotated[str, RULES] = "none"
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    focal_gamma: float = 1.0
    reweight_beta: float = 0.9999  # effective-number class weights
    augment: Literal["none", "oracle", "git"] = "none"
    gen_frac: float = 0.5  # share of each batch that is generated (oracle / git)
    git_start_epoch: int | None = None  # None = the epoch after the first lr drop
    git_threshold: int | None = None  # class-size threshold: generate only for classes below it
    crop_flip: bool = False  # standard random crop (pad 4) + horizontal flip (natural images)
    ekld_samples: int = 30  # transformed copies per test image for eKLD
    ekld_per_class: int | None = 50  # test images per class for eKLD; None = all
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    checkpoint_every: int = 1  # epochs between checkpoints in a sweep trial
    checkpoint_every_s: float = 0.0  # and at least this many seconds since the last one (0: no time bound)

    def validate(self, prefix: str = "classifier") -> None:
        k = lambda name: join(prefix, name)  # noqa: E731
        require(self.epochs >= 1, k("epochs"), f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 2, k("batch_size"), f"must be >= 2, got {self.batch_size}")
        require(0 < self.lr <= 10, k("lr"), f"must be in (0, 10], got {self.lr}")
        require(0 <= self.momentum < 1, k("momentum"), "must be in [0, 1)")
        require(self.weight_decay >= 0, k("weight_decay"), "must be >= 0")
        require(0 <= self.warmup_epochs <= self.epochs, k("warmup_epochs"), "must be in [0, epochs]")
        require(len(self.milestones) == len(self.lr_factors), k("lr_factors"), "needs one factor per milestone")
        require(list(self.milestones) == sorted(self.milestones), k("milestones"), "must be increasing")
        require(all(0 < f <= 1 for f in self.lr_factors), k("lr_factors"), "factors must be in (0, 1]")
        require(0.0 <= self.gen_frac < 1.0, k("gen_frac"), f"must be in [0, 1), got {self.gen_frac}")
        require(self.git_start_epoch is None or self.git_start_epoch >= 0, k("git_start_epoch"), "must be >= 0")
        require(self.git_threshold is None or self.git_threshold >= 1, k("git_threshold"), "must be >= 1")
        require(0 < self.reweight_beta < 1, k("reweight_beta"), "must be in (0, 1)")
        require(self.ekld_samples >= 1, k("ekld_samples"), "must be >= 1")
        require(self.ekld_per_class is None or self.ekld_per_class >= 1, k("ekld_per_class"), "must be >= 1")
        require(self.checkpoint_every >= 1, k("checkpoint_every"), "must be >= 1")
        require(self.checkpoint_every_s >= 0, k("checkpoint_every_s"), "must be >= 0")

    @property
    def first_drop_epoch(self) -> int:
        """Epoch index (0-based) at which the first lr drop is in force; DRW / DRS switch on here."""
        return self.milestones[0] if self.milestones else self.epochs

    @property
    def resolved_git_start(self) -> int:
        """0-based epoch from which oracle / GIT augmentation is on (default: after the first drop)."""
        return self.git_start_epoch if self.git_start_epoch is not None else self.first_drop_epoch

    @property
    def effective_augment(self) -> str:
        """The augmentation actually trained with: GIT or the oracle with no generated share is plain training."""
        return "none" if self.gen_frac == 0 else self.augment

    def resolved(self) -> ClassifierConfig:
        """This config as it trains: `augment` is `none` when no generated share is used, whatever the
        spelling that produced it (what a run's params record)."""
        return dataclasses.replace(self, augment=self.effective_augment)  # type: ignore[arg-type]

    @property
    def resolved_augment_start(self) -> int:
        """0-based epoch from which the run's augmenter is on: git_start_epoch if set, else 0 for the
        oracle (applied throughout, the upper bound) and the delayed GIT start for git."""
        if self.git_start_epoch is None and self.augment == "oracle":
            return 0
        return self.resolved_git_start


@dataclass(frozen=True)
class GeneratorConfig:
    """MUNIT architecture and training (docs/science.md, "Generator recipe").

    Defaults are the CPU recipe (16x16, dim 16, 2 residual blocks, MLP 64, discriminator dim 16, batch 16,
    lr 5e-4, 800 iterations, style reconstruction weight 5: at the paper's weight 1 this small model lets
    the content code carry the nuisance and ignores most of the random style). The paper's recipes are
    the bundled GPU presets' bases (sweeps/presets/base/).
    """

    dim: int = 16  # base channels of the encoders / decoder
    n_res: int = 2  # residual blocks in content encoder and decoder
    n_downsample: int = 1  # stride-2 convs in the content encoder
    style_downsample: int = 2  # stride-2 convs in the style encoder (before its global pooling)
    style_dim: int = 8
    mlp_dim: int = 64  # hidden width of the AdaIN parameter MLP
    dis_dim: int = 16
    dis_layers: int = 2  # stride-2 convs per discriminator scale
    dis_scales: int = 2
    style_warp: Literal["none", "affine"] = "none"  # "affine": the style also warps the decoded image
    iterations: int = 800
    batch_size: int = 16
    lr: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-4
    gan_w: float = 1.0
    recon_x_w: float = 10.0
    recon_s_w: float = 5.0  # paper: 1; the small CPU model needs 5 to use its style code
    recon_c_w: float = 1.0
    div_w: float = 0.0  # weight of the warp's diversity term (needs style_warp); 0 = MUNIT's losses only
    checkpoint_every: int = 100  # iterations between checkpoints
    eval_samples: int = 500  # generated images for label preservation / diversity
    judge_iterations: int = 600  # training steps of the classifier that judges label preservation
    amp: bool = True

    # Fields that only decide how a run is checkpointed or evaluated, not the weights it ends with.
    EVAL_ONLY = ("checkpoint_every", "eval_samples", "judge_iterations")
    # Fields added after generators were first stored: at their defaults they leave the weights as they
    # were, so a stored generator's address leaves them out there and older generators keep theirs.
    ADDED_LATER = ("style_warp", "div_w")

    @property
    def arch(self) -> MunitArch:
        return MunitArch(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MunitArch)})

    def validate(self, prefix: str = "generator") -> None:
        k = lambda name: join(prefix, name)  # noqa: E731
        self.arch.validate(prefix)
        require(self.iterations >= 1, k("iterations"), f"must be >= 1, got {self.iterations}")
        require(self.batch_size >= 1, k("batch_size"), "must be >= 1")
        require(0 < self.lr <= 1, k("lr"), f"must be in (0, 1], got {self.lr}")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, k("beta1"), "betas must be in [0, 1)")
        require(self.div_w >= 0, k("div_w"), f"must be >= 0, got {self.div_w}")
        require(self.div_w == 0 or self.style_warp != "none", k("div_w"),
                "trains the style warp: set generator.style_warp too")
        require(self.checkpoint_every >= 1, k("checkpoint_every"), "must be >= 1")
        require(self.eval_samples >= 10, k("eval_samples"), "must be >= 10")
        require(self.judge_iterations >= 1, k("judge_iterations"), "must be >= 1")
