"""Device, threads, precision and seeded random streams: small objects shared by every gitlib layer.

No `if cuda` branches scattered through the loops: `Precision` carries autocast and the grad scaler, and
every random draw comes from a `torch.Generator` made by `seeded_rng`, whose state checkpoints keep.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA when present, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device) -> str:
    """What a run actually used, for its record: 'cuda:0 NVIDIA H100 80GB HBM3' or 'cpu, 2 threads'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    n = torch.get_num_threads()
    return f"{device.type}, {n} thread{'s' if n != 1 else ''}"


def set_threads(cpus: float) -> int:
    """One torch thread per CPU granted to this process (small ops on few cores slow down with more)."""
    n = max(1, int(cpus))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    return n


@dataclass
class Precision:
    """bf16/fp16 autocast + grad scaler on CUDA when `amp`; a no-op context on CPU."""

    device: torch.device
    amp: bool = True

    @property
    def enabled(self) -> bool:
        return self.amp and self.device.type == "cuda"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.enabled:
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield

    def scaler(self) -> torch.amp.GradScaler:
        # A disabled scaler passes gradients through unchanged, so the loops need no branch.
        return torch.amp.GradScaler("cuda", enabled=self.enabled)


def seeded_rng(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded random stream (torch.Generator) on `device`; its state goes into checkpoints."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g
