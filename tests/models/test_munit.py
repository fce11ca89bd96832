"""MUNIT shapes for the CPU and paper architectures and odd sizes, the augmenter contract, gradients,
checkpoints; the style warp: absent by default, the identity at initialisation, a real turn when set."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from gitlib.device import seeded_rng
from gitlib.errors import ConfigError, DataError
from gitlib.models.arch import MunitArch
from gitlib.models.munit import AffineWarp, build_munit, load_generator, save_generator
from sweeps.config import load_config

CPU = torch.device("cpu")


def arch(preset: str, **overrides: int | str) -> MunitArch:
    """The MUNIT architecture of the CPU defaults or of the paper's K49 recipe (the base preset)."""
    base = load_config("base/k49-lt")[0].generator.arch if preset == "k49" else MunitArch()
    return replace(base, **overrides)


@pytest.mark.parametrize(
    ("preset", "channels", "size", "overrides"),
    [
        ("k49", 1, 28, {}),  # the paper's K49 model
        ("cpu", 1, 16, {}),  # the CPU preset on digits
        ("cpu", 3, 32, {}),  # colour images
        ("cpu", 1, 28, {"n_downsample": 3}),  # 28 is not a multiple of 8: padded, then cropped
        ("cpu", 3, 30, {"n_downsample": 2, "dis_layers": 3}),  # odd size with colour
        ("cpu", 1, 16, {"style_warp": "affine"}),  # the style also warps
        ("cpu", 1, 28, {"n_downsample": 3, "style_warp": "affine"}),  # warped after the crop
    ],
)
def test_shapes_round_trip(preset: str, channels: int, size: int, overrides: dict) -> None:
    cfg = arch(preset, **overrides)
    torch.manual_seed(0)
    model, dis = build_munit(channels, size, cfg)
    x = torch.rand(2, channels, size, size)  # (B, C, H, W)
    with torch.no_grad():
        content, style = model.encode(x)
        y = model(x, torch.randn(2, cfg.style_dim))
        scores = dis(x)
    side = -(-size // 2**cfg.n_downsample)  # ceil: padded before downsampling
    assert content.shape == (2, cfg.dim * 2**cfg.n_downsample, side, side)
    assert style.shape == (2, cfg.style_dim)
    assert y.shape == x.shape  # every size round-trips
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # output mapped to [0, 1]
    assert len(scores) == cfg.dis_scales
    assert all(s.shape[:2] == (2, 1) and s.shape[-1] >= 1 for s in scores)
    assert all(torch.isfinite(s).all() for s in [y, *scores])


def test_paper_recipe_is_one_base_preset() -> None:
    k49 = load_config("base/k49-lt")[0].generator
    # the K49 MUNIT recipe: dim 64, 4 residual blocks, MLP 256, batch 1, lr 1e-4, 10,000 iterations
    assert (k49.dim, k49.n_res, k49.mlp_dim, k49.batch_size, k49.lr, k49.iterations) == (64, 4, 256, 1, 1e-4, 10_000)
    for name in ("k49-bg-lt", "k49-dil-lt", "k49-rot-lt"):
        assert load_config(name)[0].generator == k49  # every K49 preset takes it from the one base


def test_too_deep_discriminator_is_a_config_error() -> None:
    # 16px, 4 stride-2 layers at a second scale of 8px: nothing would be left
    with pytest.raises(ConfigError, match="dis_layers"):
        build_munit(1, 16, arch("cpu", dis_layers=4, dis_scales=2))


@pytest.mark.parametrize("warp", ["none", "affine"])
def test_every_parameter_gets_a_gradient(warp: str) -> None:
    torch.manual_seed(0)
    model, dis = build_munit(1, 16, arch("cpu", style_warp=warp))
    x = torch.rand(4, 1, 16, 16)
    content, style = model.encode(x)
    y = model.decode(content, style + torch.randn_like(style))
    loss = y.mean() + sum(s.mean() for s in dis(y))
    loss.backward()
    missing = [n for n, p in [*model.named_parameters(), *dis.named_parameters()] if p.grad is None]
    assert not missing


def test_sample_is_the_augmenter_contract() -> None:
    torch.manual_seed(0)
    model, _ = build_munit(1, 16, arch("cpu"))
    model.train()
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    a = model.sample(x, seeded_rng(3, CPU))
    b = model.sample(x, seeded_rng(3, CPU))
    c = model.sample(x, seeded_rng(4, CPU))
    assert a.shape == x.shape and a.dtype == x.dtype  # same shape and dtype as the input
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)  # the generator's seed fixes the styles
    assert not torch.equal(a, c)  # and a different seed gives different styles
    assert model.training  # sample runs in eval mode and restores the caller's mode
    u8 = model.sample((x * 255).round().to(torch.uint8), seeded_rng(3, CPU))
    assert u8.dtype == torch.uint8 and u8.shape == x.shape


def test_save_and_load_round_trip(tmp_path) -> None:
    cfg = arch("cpu", dim=8, mlp_dim=16)
    torch.manual_seed(0)
    model, _ = build_munit(3, 16, cfg)
    path = tmp_path / "g" / "generator.pt"
    save_generator(path, model, cfg, in_channels=3)
    loaded = load_generator(path, CPU)
    assert loaded.cfg == cfg and loaded.in_channels == 3
    x = torch.rand(3, 3, 16, 16)
    # same weights: same output for the same styles
    assert torch.equal(model.sample(x, seeded_rng(1, CPU)), loaded.sample(x, seeded_rng(1, CPU)))
    with pytest.raises(DataError):
        load_generator(tmp_path / "missing.pt")


def test_generator_config_defaults_are_the_cpu_architecture() -> None:
    from gitlib.train.config import GeneratorConfig

    # the YAML-facing defaults size the CPU model
    assert GeneratorConfig().arch == MunitArch()
    with pytest.raises(ConfigError, match=r"generator\.dim"):
        from gitlib.configs import from_dict

        from_dict(GeneratorConfig, {"dim": 0}, "generator")


def test_default_model_is_the_plain_munit() -> None:
    # The warp is built last and only when asked for: under one seed the default model and the warp
    # model share every other weight, so the default's parameters and random draws are what they were.
    torch.manual_seed(5)
    plain, _ = build_munit(1, 16, arch("cpu"))
    torch.manual_seed(5)
    warped, _ = build_munit(1, 16, arch("cpu", style_warp="affine"))
    plain_sd, warped_sd = plain.state_dict(), warped.state_dict()
    assert plain.warp is None and not any(k.startswith("warp.") for k in plain_sd)
    assert set(plain_sd) == {k for k in warped_sd if not k.startswith("warp.")}
    assert all(torch.equal(v, warped_sd[k]) for k, v in plain_sd.items())
    # At initialisation the warp is the identity: both models render the same images for the same styles.
    x, style = torch.rand(4, 1, 16, 16), torch.randn(4, 8)
    with torch.no_grad():
        assert torch.allclose(plain(x, style), warped(x, style), atol=1e-5)
        assert not torch.equal(plain(x, style), plain(x, torch.randn(4, 8)))  # the comparison can fail


def test_warp_starts_at_the_identity() -> None:
    torch.manual_seed(0)
    warp = AffineWarp(style_dim=8, hidden=16)
    style = 3 * torch.randn(64, 8)  # far from the origin too
    with torch.no_grad():
        theta = warp.matrix(style, (16, 16))
        images = torch.rand(64, 1, 16, 16)
        out = warp(images, style)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.equal(theta, identity.expand(64, 2, 3))  # zero last layer: exactly no turn, scale, shear, shift
    assert torch.allclose(out, images, atol=1e-5)  # sampling at the pixel centres gives the image back


def set_warp(warp: AffineWarp, u: list[float]) -> None:
    """Make the warp's six raw outputs the constant u, whatever the style."""
    with torch.no_grad():
        warp.mlp[-1].weight.zero_()
        warp.mlp[-1].bias.copy_(torch.tensor(u))


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_warp_turns_the_image(turns: int) -> None:
    # A quarter turn maps pixel centres onto pixel centres, so bilinear sampling is exact there.
    warp = AffineWarp(style_dim=8, hidden=16)
    angle = turns * math.pi / 2
    set_warp(warp, [math.cos(angle) - 1, math.sin(angle), 0, 0, 0, 0])  # direction (cos, sin) = the angle
    x = torch.rand(3, 2, 12, 12)
    with torch.no_grad():
        out = warp(x, torch.randn(3, 8))
    turned = [torch.rot90(x, k, dims=(-2, -1)) for k in (1, 2, 3)]
    matches = [k + 1 for k, t in enumerate(turned) if torch.allclose(out, t, atol=1e-5)]
    assert len(matches) == 1  # exactly one quarter-turn count fits: the image turned, it was not blurred
    assert (matches[0] == turns) or (matches[0] == 4 - turns)  # by the angle asked for (one sense or the other)


def test_warp_bounds_scale_shear_and_shift() -> None:
    warp = AffineWarp(style_dim=8, hidden=16)
    set_warp(warp, [0, 0, 1e3, -1e3, 1e3, -1e3])  # saturated: tanh at +-1
    theta = warp.matrix(torch.randn(2, 8), (16, 16))[0].detach()
    scale = math.exp(AffineWarp.MAX_LOG_SCALE)
    assert float(theta[0, 0]) == pytest.approx(scale)
    assert float(theta[0, 1]) == pytest.approx(-scale * AffineWarp.MAX_SHEAR)  # shear, no turn
    assert float(theta[0, 2]) == pytest.approx(AffineWarp.MAX_SHIFT)
    assert float(theta[1, 2]) == pytest.approx(-AffineWarp.MAX_SHIFT)


def test_warp_model_round_trips_and_old_checkpoints_load(tmp_path) -> None:
    cfg = arch("cpu", dim=8, mlp_dim=16, style_warp="affine")
    torch.manual_seed(0)
    model, _ = build_munit(1, 16, cfg)
    torch.nn.init.normal_(model.warp.mlp[-1].weight)  # a trained, non-identity warp
    save_generator(tmp_path / "w.pt", model, cfg, in_channels=1)
    loaded = load_generator(tmp_path / "w.pt", CPU)
    x = torch.rand(3, 1, 16, 16)
    assert loaded.cfg.style_warp == "affine"
    assert torch.equal(model.sample(x, seeded_rng(1, CPU)), loaded.sample(x, seeded_rng(1, CPU)))
    # A generator saved before the key existed has no style_warp in its config: it loads as the plain MUNIT.
    plain, _ = build_munit(1, 16, arch("cpu"))
    save_generator(tmp_path / "old.pt", plain, arch("cpu"), in_channels=1)
    blob = torch.load(tmp_path / "old.pt", weights_only=True)
    del blob["config"]["style_warp"]
    torch.save(blob, tmp_path / "old.pt")
    assert load_generator(tmp_path / "old.pt").warp is None
