"""Architecture configs and the classifier architecture registry (torch-free, so configs validate
without loading the models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gitlib.configs import join, require
from gitlib.registry import Registry

ARCHITECTURES: Registry = Registry("classifier.arch", {
    "resnet_small": "gitlib.models.resnet:resnet_small",
    "resnet20": "gitlib.models.resnet:resnet20",
    "resnet32": "gitlib.models.resnet:resnet32",
})


@dataclass(frozen=True)
class MunitArch:
    """Shape of a MUNIT generator and its discriminator (the `generator.*` keys that size the networks)."""

    dim: int = 16  # base channels of the encoders / decoder
    n_res: int = 2  # residual blocks in content encoder and decoder
    n_downsample: int = 1  # stride-2 convs in the content encoder
    style_downsample: int = 2  # stride-2 convs in the style encoder (before its global pooling)
    style_dim: int = 8
    mlp_dim: int = 64  # hidden width of the AdaIN parameter MLP
    dis_dim: int = 16
    dis_layers: int = 2  # stride-2 convs per discriminator scale
    dis_scales: int = 2
    # What else the style controls: "none" = AdaIN statistics only (the paper's MUNIT); "affine" = also
    # one affine warp per image (rotation, scale, shear, shift) that the decoder applies to its output.
    style_warp: Literal["none", "affine"] = "none"

    def validate(self, prefix: str = "generator") -> None:
        k = lambda name: join(prefix, name)  # noqa: E731
        for name in ("dim", "style_dim", "mlp_dim", "dis_dim", "dis_layers", "dis_scales"):
            require(getattr(self, name) >= 1, k(name), f"must be >= 1, got {getattr(self, name)}")
        require(self.n_res >= 0, k("n_res"), "must be >= 0")
        require(0 <= self.n_downsample <= 4, k("n_downsample"), "must be in [0, 4]")
        require(0 <= self.style_downsample <= 6, k("style_downsample"), "must be in [0, 6]")
