"""MUNIT (Huang et al. 2018) for Generative Invariance Transfer: one generator, one discriminator.

Both MUNIT domains are the same (long-tailed) training set here, so a single shared generator
(content encoder, style encoder, AdaIN decoder) and a single multi-scale LSGAN discriminator suffice.
Images enter and leave in [0, 1]; the models work in [-1, 1] internally. Sizes that are not a multiple
of 2**n_downsample (28x28 with three downsamplings, say) are padded before encoding and cropped after
decoding, so every image size round-trips.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gitlib.configs import from_dict, to_dict
from gitlib.errors import ConfigError, DataError
from gitlib.models.arch import MunitArch


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    # Reflection padding as in MUNIT: zero padding would draw a dark frame the discriminator can see.
    return nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 1,
                     padding_mode="reflect")


class AdaIN(nn.Module):
    """Instance norm whose per-channel scale and shift are set from outside (by the style MLP)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.scale: torch.Tensor | None = None  # (B, C), set by Decoder before each forward
        self.shift: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if self.scale is None or self.shift is None:
            raise RuntimeError("AdaIN parameters not set: call Decoder.forward, not the block alone")
        x = F.instance_norm(x, eps=self.eps)
        # 1 + scale: a fresh MLP (outputs near 0) starts the decoder close to plain instance norm.
        return x * (1 + self.scale[:, :, None, None]) + self.shift[:, :, None, None]


class ResBlock(nn.Module):
    """Two 3x3 convs with a norm after each (ReLU after the first) and an identity skip."""

    def __init__(self, channels: int, adain: bool) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return AdaIN(channels) if adain else nn.InstanceNorm2d(channels)

        self.body = nn.Sequential(
            _conv(channels, channels, 3), norm(), nn.ReLU(inplace=True),
            _conv(channels, channels, 3), norm(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ContentEncoder(nn.Module):
    """7x7 conv, n_downsample stride-2 4x4 convs (channels doubling), n_res residual blocks; instance norm."""

    def __init__(self, in_channels: int, dim: int, n_downsample: int, n_res: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, dim, 7), nn.InstanceNorm2d(dim), nn.ReLU(inplace=True)]
        for _ in range(n_downsample):
            layers += [_conv(dim, 2 * dim, 4, 2), nn.InstanceNorm2d(2 * dim), nn.ReLU(inplace=True)]
            dim *= 2
        layers += [ResBlock(dim, adain=False) for _ in range(n_res)]
        self.net = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, dim*2**n, H/2**n, W/2**n)
        return self.net(x)


class StyleEncoder(nn.Module):
    """Convs without normalisation (norm would erase the global statistics that style is), global pool, 1x1 conv."""

    def __init__(self, in_channels: int, dim: int, n_downsample: int, style_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, dim, 7), nn.ReLU(inplace=True)]
        for i in range(n_downsample):
            out = dim * 2 if i < 2 else dim  # MUNIT doubles twice, then keeps the width
            layers += [_conv(dim, out, 4, 2), nn.ReLU(inplace=True)]
            dim = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, style_dim)
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    """AdaIN residual blocks (parameters from an MLP of the style), then upsample + 5x5 conv + layer norm."""

    def __init__(self, out_channels: int, dim: int, n_upsample: int, n_res: int, style_dim: int,
                 mlp_dim: int) -> None:
        super().__init__()
        self.res = nn.Sequential(*[ResBlock(dim, adain=True) for _ in range(n_res)])
        self.adains = [m for m in self.res.modules() if isinstance(m, AdaIN)]
        n_params = 2 * sum(m.channels for m in self.adains)
        self.mlp = nn.Sequential(
            nn.Linear(style_dim, mlp_dim), nn.ReLU(inplace=True),
            nn.Linear(mlp_dim, mlp_dim), nn.ReLU(inplace=True),
            nn.Linear(mlp_dim, max(n_params, 1)),
        )
        up: list[nn.Module] = []
        for _ in range(n_upsample):
            # GroupNorm with one group = MUNIT's layer norm over (C, H, W) with a per-channel affine.
            up += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(dim, dim // 2, 5),
                   nn.GroupNorm(1, dim // 2), nn.ReLU(inplace=True)]
            dim //= 2
        up += [_conv(dim, out_channels, 7), nn.Tanh()]
        self.up = nn.Sequential(*up)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        params = self.mlp(style)  # (B, 2 * sum(C))
        start = 0
        for m in self.adains:
            m.scale = params[:, start:start + m.channels]
            m.shift = params[:, start + m.channels:start + 2 * m.channels]
            start += 2 * m.channels
        try:
            return self.up(self.res(content))  # (B, C_out, H, W) in [-1, 1]
        finally:
            for m in self.adains:  # do not keep the graph alive through module attributes
                m.scale = m.shift = None


class AffineWarp(nn.Module):
    """Style -> one affine warp per image, applied to the decoded image (`style_warp: affine`).

    AdaIN statistics change intensity and texture but cannot move strokes; this head lets the style turn,
    scale, shear and shift the image. An MLP makes six numbers u from the style: the rotation is the
    direction of (1 + u0, u1), so any angle on the full circle is reachable and a style code spread
    around the origin gives angles spread around the circle; log-scale, shear and shift are bounded by
    tanh so that no style can shrink or push the content out of the frame. The last layer starts at
    zero: at initialisation the warp is the identity and training starts from the plain MUNIT.
    """

    MAX_LOG_SCALE = 0.25  # scale within [e^-0.25, e^0.25] = [0.78, 1.28]
    MAX_SHEAR = 0.3
    MAX_SHIFT = 0.15  # in units of half the image side

    MODE = "bicubic"  # resampling, as the rotation nuisance turns the data (bilinear blurs more)

    def __init__(self, style_dim: int, hidden: int) -> None:
        super().__init__()
        last = nn.Linear(hidden, 6)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.Linear(style_dim, hidden), nn.ReLU(inplace=True), last)

    def matrix(self, style: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, style_dim) -> (B, 2, 3) output -> input maps in affine_grid's [-1, 1] coordinates."""
        with torch.autocast(style.device.type, enabled=False):  # float32 under AMP: angles need the precision
            u = self.mlp(style.float())  # (B, 6)
        h, w = size
        a, b = 1 + u[:, 0], u[:, 1]
        r = torch.sqrt((a * a + b * b).clamp_min(1e-6))  # the direction is undefined at (0, 0): no inf there
        cos, sin = a / r, b / r
        scale = torch.exp(self.MAX_LOG_SCALE * torch.tanh(u[:, 2]))
        shear = self.MAX_SHEAR * torch.tanh(u[:, 3])
        shift = self.MAX_SHIFT * torch.tanh(u[:, 4:6])  # (B, 2)
        # Rotation after shear, all times scale, in pixel units (so a turn stays a turn on non-square
        # images), then to normalised coordinates: x_norm = x_px * (2 / w), y_norm = y_px * (2 / h).
        m00, m01 = scale * cos, scale * (cos * shear - sin)
        m10, m11 = scale * sin, scale * (sin * shear + cos)
        row0 = torch.stack([m00, m01 * (h / w), shift[:, 0]], dim=1)
        row1 = torch.stack([m10 * (w / h), m11, shift[:, 1]], dim=1)
        return torch.stack([row0, row1], dim=1)  # (B, 2, 3)

    def forward(self, images: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Warp images (B, C, H, W) in [0, 1] by their styles (B, style_dim); outside the frame is 0, as the
        rotation nuisance fills it."""
        theta = self.matrix(style, (images.shape[-2], images.shape[-1]))
        with torch.autocast(images.device.type, enabled=False):
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
            out = F.grid_sample(images.float(), grid, mode=self.MODE, padding_mode="zeros", align_corners=False)
        return out.clamp(0.0, 1.0)  # bicubic overshoots; the nuisance clamps the data the same way


class Munit(nn.Module):
    """The MUNIT generator (content encoder, style encoder, decoder) on images in [0, 1].

    Implements the augmenter interface: `sample(images, rng)` re-renders each image with a
    random style drawn from N(0, I), keeping its content (and so, if trained well, its class).
    """

    def __init__(self, in_channels: int, cfg: MunitArch) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cfg = cfg
        self.style_dim = cfg.style_dim
        self.multiple = 2 ** cfg.n_downsample
        self.content_encoder = ContentEncoder(in_channels, cfg.dim, cfg.n_downsample, cfg.n_res)
        self.style_encoder = StyleEncoder(in_channels, cfg.dim, cfg.style_downsample, cfg.style_dim)
        self.decoder = Decoder(in_channels, self.content_encoder.out_channels, cfg.n_downsample, cfg.n_res,
                               cfg.style_dim, cfg.mlp_dim)
        # Built last and only when asked for: the default model keeps its parameters and its random init draws.
        self.warp = AffineWarp(cfg.style_dim, cfg.mlp_dim) if cfg.style_warp == "affine" else None

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad (B, C, H, W) on the bottom / right to a multiple of 2**n_downsample."""
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [0, 1] -> content (B, D, h, w), style (B, style_dim)."""
        x = images * 2 - 1
        return self.content_encoder(self._pad(x)), self.style_encoder(x)

    def decode(self, content: torch.Tensor, style: torch.Tensor, size: tuple[int, int] | None = None,
               warp: bool = True) -> torch.Tensor:
        """Content + style -> images (B, C, H, W) in [0, 1], cropped to `size` (H, W) when given, then
        warped by the style if the model has a warp and `warp` is true (see `warp_images`)."""
        y = (self.decoder(content, style) + 1) / 2
        y = y if size is None else y[..., : size[0], : size[1]]
        return self.warp_images(y, style) if warp else y

    def warp_images(self, images: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The style's geometric step on decoded (and cropped: it turns about the image's centre) images
        (B, C, H, W); the identity for a model without a warp."""
        return images if self.warp is None else self.warp(images, style).to(images.dtype)

    def random_style(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """(n, style_dim) styles from N(0, I), drawn from `rng` (on its device)."""
        return torch.randn(n, self.style_dim, generator=rng, device=rng.device)

    def forward(self, images: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Re-render `images` (B, C, H, W) in [0, 1] with `style` (B, style_dim)."""
        content, _ = self.encode(images)
        return self.decode(content, style, (images.shape[-2], images.shape[-1]))

    @torch.no_grad()
    def sample(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Augmenter interface: random styles ~ N(0, I); same shape, dtype and range as `images`."""
        was_training = self.training
        self.eval()
        try:
            x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
            style = self.random_style(x.shape[0], rng).to(x.device)
            y = self(x, style).float().clamp(0, 1)  # (B, C, H, W)
        finally:
            self.train(was_training)
        if images.dtype == torch.uint8:
            return (y * 255).round().to(torch.uint8)
        return y.to(images.dtype)


class MsDiscriminator(nn.Module):
    """LSGAN discriminator at `scales` image scales (each 3x3 average-pooled from the last).

    Each scale: `layers` stride-2 4x4 convs (leaky ReLU, no norm, channels doubling) and a 1x1 conv to one
    real/fake score per patch.
    """

    def __init__(self, in_channels: int, dim: int, layers: int, scales: int) -> None:
        super().__init__()

        def one_scale() -> nn.Sequential:
            mods: list[nn.Module] = []
            cin, cout = in_channels, dim
            for _ in range(layers):
                mods += [_conv(cin, cout, 4, 2), nn.LeakyReLU(0.2, inplace=True)]
                cin, cout = cout, cout * 2
            mods.append(nn.Conv2d(cin, 1, 1))
            return nn.Sequential(*mods)

        self.nets = nn.ModuleList(one_scale() for _ in range(scales))
        self.layers = layers

    def check_size(self, size: int) -> None:
        """Raise ConfigError when the smallest scale would shrink below one pixel."""
        s = size
        for i in range(len(self.nets)):
            t = s
            for _ in range(self.layers):
                t = t // 2
            if t < 1:
                raise ConfigError("generator.dis_layers", f"{self.layers} layers x {len(self.nets)} scales "
                                  f"shrink a {size}px image to nothing at scale {i + 1}; use fewer")
            s = (s + 1) // 2

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W) in [0, 1] -> one score map (B, 1, h_k, w_k) per scale."""
        x = images * 2 - 1
        outs = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x))
        return outs


def build_munit(in_channels: int, image_size: int, cfg: MunitArch) -> tuple[Munit, MsDiscriminator]:
    """Generator and discriminator for (in_channels, image_size) images; bad sizes raise ConfigError."""
    if image_size < 2 ** max(cfg.style_downsample, 1):
        raise ConfigError("generator.style_downsample", f"too many downsamplings for a {image_size}px image")
    dis = MsDiscriminator(in_channels, cfg.dis_dim, cfg.dis_layers, cfg.dis_scales)
    dis.check_size(image_size)
    return Munit(in_channels, cfg), dis


def save_generator(path: str | Path, model: Munit, cfg: MunitArch, in_channels: int) -> None:
    """Write the generator's weights with its architecture as a plain dict (loadable with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": "gitsweep-munit-1", "config": to_dict(cfg), "in_channels": int(in_channels),
                "state_dict": state}, path)


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> Munit:
    """Read a generator written by `save_generator`, in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "no such generator checkpoint")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "gitsweep-munit-1":
        raise DataError(str(path), "not a gitsweep MUNIT checkpoint")
    fields = {f.name for f in dataclasses.fields(MunitArch)}  # older files stored the whole generator config
    cfg = from_dict(MunitArch, {k: v for k, v in blob["config"].items() if k in fields}, "generator")
    model = Munit(int(blob["in_channels"]), cfg)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
