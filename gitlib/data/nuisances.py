"""Class-agnostic nuisance transforms as batched torch ops (one implementation for data building,
oracle augmentation and eKLD).

Every nuisance takes images (N, C, H, W), uint8 or float in [0, 1], on any device, and gives back the
same dtype and device (uint8 results are rounded and clamped). Random draws come from the random stream
`rng` passed in (drawn on its device, then moved), so the same seed gives the same output. `measure`
returns the quantity each nuisance changes, for generator diversity metrics. The names are the
`dataset.nuisance` registry (gitlib.data.spec.NUISANCES).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from gitlib.augmenter import as_float
from gitlib.data.spec import NUISANCES
from gitlib.errors import ConfigError

Params = dict[str, torch.Tensor]


def _uniform(n: int, low: float, high: float, rng: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = rng.device if rng is not None else torch.device("cpu")
    u = torch.rand(n, generator=rng, device=gen_device, dtype=torch.float64)
    return (low + (high - low) * u).to(device)


def _randint(n: int, low: int, high: int, rng: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Integers uniform in [low, high)."""
    gen_device = rng.device if rng is not None else torch.device("cpu")
    return torch.randint(low, high, (n,), generator=rng, device=gen_device).to(device)


class Nuisance:
    """Base class: subclasses implement `apply` and `measure`; `sample` is the augmenter interface."""

    name: ClassVar[str] = ""

    def apply(self, images: torch.Tensor, rng: torch.Generator | None = None) -> tuple[torch.Tensor, Params]:
        """Transformed images (same dtype / device) and the drawn parameters, each a (N,) tensor."""
        raise NotImplementedError

    def sample(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """Fresh nuisance draws on a batch: what oracle augmentation and eKLD call."""
        return self.apply(images, rng)[0]

    def measure(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) float32: the quantity this nuisance varies, measured on the images themselves."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def get_nuisance(name: str, **opts: Any) -> Nuisance:
    """The registered nuisance `name` built with `opts` (e.g. get_nuisance("rotation", degrees=30))."""
    try:
        nuisance: Nuisance = NUISANCES.build(name, **opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(NUISANCES.key, f"bad options for {name!r}: {exc}") from None
    return nuisance


def nuisance_for_spec(spec: Any) -> Nuisance:
    """The nuisance of a DatasetSpec, with its options (rotation range) taken from the spec."""
    if spec.nuisance == "rotation":
        return get_nuisance("rotation", degrees=spec.rotation_degrees)
    return get_nuisance(spec.nuisance)


class NoNuisance(Nuisance):
    name = "none"

    def apply(self, images: torch.Tensor, rng: torch.Generator | None = None) -> tuple[torch.Tensor, Params]:
        return images.clone(), {}

    def measure(self, images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], device=images.device)


class Rotation(Nuisance):
    """Rotation by an angle uniform in [-degrees, degrees] (positive = counter-clockwise as displayed),
    bicubic, zeros outside the image, clamped back to [0, 1] (bicubic overshoots)."""

    name = "rotation"

    def __init__(self, degrees: float = 180.0) -> None:
        if not 0.0 <= degrees <= 180.0:
            raise ValueError(f"degrees must be in [0, 180], got {degrees}")
        self.degrees = float(degrees)

    def options(self) -> dict[str, Any]:
        return {"degrees": self.degrees}

    def apply(self, images: torch.Tensor, rng: torch.Generator | None = None) -> tuple[torch.Tensor, Params]:
        angle = _uniform(images.shape[0], -self.degrees, self.degrees, rng, images.device)
        return rotate(images, angle), {"angle": angle.float()}

    def measure(self, images: torch.Tensor) -> torch.Tensor:
        return principal_angle(images)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image (N, C, H, W) by its own angle in degrees (N,), counter-clockwise as displayed."""
    # uint8 is resampled on its 0..255 scale (no divide and multiply by 255), float as given.
    x = images.float()  # (N, C, H, W)
    n, _, h, w = x.shape
    a = degrees.to(device=x.device, dtype=torch.float64) * (math.pi / 180.0)
    cos = torch.cos(a).to(x.dtype).view(n, 1, 1)
    sin = torch.sin(a).to(x.dtype).view(n, 1, 1)
    # The sampling grid maps output -> input coordinates in [-1, 1] (pixel centres, align_corners
    # False); with y pointing down, the inverse of a displayed counter-clockwise turn is
    # [[cos, -sin], [sin, cos]], the h / w factors keeping non-square images undistorted. Built by
    # broadcasting: affine_grid's batched matmul is several times slower on CPU.
    ys = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).view(1, h, 1)
    xs = ((torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1).view(1, 1, w)
    grid = torch.stack([cos * xs - (sin * (h / w)) * ys, (sin * (w / h)) * xs + cos * ys], dim=-1)  # (N, H, W, 2)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.clamp_(0.0, 1.0).to(images.dtype)


def principal_angle(images: torch.Tensor) -> torch.Tensor:
    """Orientation of each image's principal axis from intensity second moments, degrees in (-90, 90],
    counter-clockwise from the x axis as displayed (so it moves with `rotate`)."""
    x = as_float(images).mean(dim=1)  # (N, H, W)
    _, h, w = x.shape
    ys = -(torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2)  # y up
    xs = torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2
    mass = x.sum(dim=(1, 2)).clamp_min(1e-8)
    mx = (x * xs).sum(dim=(1, 2)) / mass
    my = (x * ys[:, None]).sum(dim=(1, 2)) / mass
    dx = xs[None, None, :] - mx[:, None, None]
    dy = ys[None, :, None] - my[:, None, None]
    mu20 = (x * dx * dx).sum(dim=(1, 2))
    mu02 = (x * dy * dy).sum(dim=(1, 2))
    mu11 = (x * dx * dy).sum(dim=(1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02)).float()


class Background(Nuisance):
    """Pixels exactly 0 (in every channel) set to one random integer level in [0, levels) per image,
    i.e. level / 255 in float images (K49-BG-LT: levels = 100)."""

    name = "background"

    def __init__(self, levels: int = 100, ink_threshold: float = 0.5) -> None:
        if not 1 <= levels <= 256:
            raise ValueError(f"levels must be in [1, 256] (uint8 images), got {levels}")
        self.levels = int(levels)
        self.ink_threshold = float(ink_threshold)

    def options(self) -> dict[str, Any]:
        return {"levels": self.levels}

    def apply(self, images: torch.Tensor, rng: torch.Generator | None = None) -> tuple[torch.Tensor, Params]:
        level = _randint(images.shape[0], 0, self.levels, rng, images.device)  # (N,) int64
        zero = (images == 0).all(dim=1, keepdim=True)  # (N, 1, H, W)
        if images.dtype == torch.uint8:
            fill = level.to(torch.uint8)
        else:
            fill = (level.to(torch.float64) / 255.0).to(images.dtype)
        out = torch.where(zero, fill.view(-1, 1, 1, 1), images)
        return out, {"level": level}

    def measure(self, images: torch.Tensor) -> torch.Tensor:
        """Most common 0..255 level among pixels darker than the ink threshold (the background)."""
        x = as_float(images).mean(dim=1).flatten(1)  # (N, H*W)
        q = (x * 255.0).round().long().clamp(0, 255)
        dark = (x < self.ink_threshold).float()
        hist = torch.zeros(x.shape[0], 256, device=x.device).scatter_add_(1, q, dark)  # (N, 256)
        return hist.argmax(dim=1).float()


class Dilation(Nuisance):
    """Stroke thickness: with probability p_dilate a dilation by a square kernel of size uniform in
    dilate_sizes (inclusive), else an erosion with size uniform in erode_sizes (size 1 = unchanged).

    Grey-scale morphology: dilation = max over the k x k window, erosion = min. Even kernels use
    OpenCV's anchor (k // 2 before, k - 1 - k // 2 after), so results match cv2.dilate / cv2.erode
    with np.ones((k, k)) away from the borders; outside the image is neutral (ignored)."""

    name = "dilation"

    def __init__(
        self,
        p_dilate: float = 0.6,
        dilate_sizes: tuple[int, int] = (2, 4),
        erode_sizes: tuple[int, int] = (1, 2),
        ink_threshold: float = 0.5,
    ) -> None:
        if not 0.0 <= p_dilate <= 1.0 or min(*dilate_sizes, *erode_sizes) < 1:
            raise ValueError("p_dilate must be in [0, 1] and kernel sizes >= 1")
        self.p_dilate = float(p_dilate)
        self.dilate_sizes = (int(dilate_sizes[0]), int(dilate_sizes[1]))
        self.erode_sizes = (int(erode_sizes[0]), int(erode_sizes[1]))
        self.ink_threshold = float(ink_threshold)

    def options(self) -> dict[str, Any]:
        return {"p_dilate": self.p_dilate, "dilate_sizes": self.dilate_sizes, "erode_sizes": self.erode_sizes}

    def apply(self, images: torch.Tensor, rng: torch.Generator | None = None) -> tuple[torch.Tensor, Params]:
        n, device = images.shape[0], images.device
        dilate = _uniform(n, 0.0, 1.0, rng, device) < self.p_dilate
        dk = _randint(n, self.dilate_sizes[0], self.dilate_sizes[1] + 1, rng, device)
        ek = _randint(n, self.erode_sizes[0], self.erode_sizes[1] + 1, rng, device)
        kernel = torch.where(dilate, dk, ek)
        return morph(images, dilate, kernel), {"dilate": dilate, "kernel": kernel}

    def measure(self, images: torch.Tensor) -> torch.Tensor:
        """Ink pixel count: pixels brighter than the ink threshold (channel mean)."""
        return (as_float(images).mean(dim=1) > self.ink_threshold).flatten(1).sum(dim=1).float()


def _extreme_filter(x: torch.Tensor, k: int, dilate: bool) -> torch.Tensor:
    """k x k max (dilate) or min (erode) over each window, same size out, in x's own dtype. Separable:
    a row pass then a column pass of k - 1 elementwise max / min each, much faster on CPU than
    max_pool2d with stride 1. Outside the image is padded with the neutral value (ignored)."""
    if x.dtype.is_floating_point:
        neutral = float("-inf") if dilate else float("inf")
    else:
        info = torch.iinfo(x.dtype)
        neutral = info.min if dilate else info.max
    op = torch.maximum if dilate else torch.minimum
    h, w = x.shape[-2:]
    before, after = k // 2, k - 1 - k // 2  # OpenCV's anchor for even kernels
    padded = F.pad(x, (before, after, before, after), value=neutral)
    rows = padded[..., 0:w].clone()
    for i in range(1, k):
        op(rows, padded[..., i : i + w], out=rows)
    out = rows[..., 0:h, :].clone()
    for i in range(1, k):
        op(out, rows[..., i : i + h, :], out=out)
    return out


def morph(images: torch.Tensor, dilate: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per image: dilation (dilate True) or erosion by a square kernel of that size. Batched by grouping
    the images that share (operation, size): at most a handful of filter calls. Works in the input's
    dtype: max / min of uint8 values is exact, so no conversion is needed."""
    out = images.clone()
    keys = dilate.long() * 1000 + kernel.long()
    for key in torch.unique(keys).tolist():
        is_dilate, k = key >= 1000, key % 1000
        if k <= 1:
            continue  # a 1 x 1 window changes nothing
        idx = (keys == key).nonzero(as_tuple=True)[0]
        out[idx] = _extreme_filter(images.index_select(0, idx), k, is_dilate)
    return out
