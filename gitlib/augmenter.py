"""What every gitlib layer shares about images: the Augmenter protocol and the uint8 -> float convention.

Images are torch tensors (N, C, H, W): stored as uint8, fed to models, nuisances and generators as float
in [0, 1]. An Augmenter (a nuisance, the MUNIT generator, any transform) maps such a batch to a
transformed batch of the same shape, drawing all randomness from the `rng` it is given.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Augmenter(Protocol):
    """Batch of float images in [0, 1] (N, C, H, W) -> transformed batch, same shape and device.

    All randomness comes from `rng`, so a checkpointed stream resumes exactly."""

    def sample(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor: ...


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) (or (N, H, W)) -> float32 in [0, 1] with a channel axis; float stays float32."""
    if images.dim() == 3:
        images = images[:, None]
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
