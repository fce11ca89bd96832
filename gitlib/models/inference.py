"""Forward passes for evaluation: batched arg-max predictions through an eval-mode (batch-norm folded) copy."""

from __future__ import annotations

import torch
from torch import nn

from gitlib.augmenter import as_float
from gitlib.device import Precision
from gitlib.models.resnet import inference_copy

EVAL_BATCH = 1024  # images per forward pass when evaluating


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, device: torch.device,
                   precision: Precision | None = None, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Arg-max labels (N,) on `device` for images (N, C, H, W), uint8 or float in [0, 1]; `model` is untouched."""
    net = inference_copy(model)
    was_training = net.training
    net.eval()
    autocast = (precision or Precision(device, amp=False)).autocast
    out = []
    try:
        for part in images.split(batch_size):
            with autocast():
                out.append(net(as_float(part.to(device))).argmax(dim=1))
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64, device=device)
