"""MUNIT shapes for both presets and odd sizes, the augmenter contract, gradients, checkpoints."""

from __future__ import annotations

import pytest
import torch

from gitlib.errors import ConfigError, DataError
from gitlib.models.munit import MUNIT_PRESETS, build_munit, load_generator, preset_config, save_generator
from gitlib.train.config import GeneratorConfig
from gitlib.train.runtime import make_generator

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("preset", "channels", "size", "overrides"),
    [
        ("k49", 1, 28, {}),  # the paper's K49 model
        ("cpu", 1, 16, {}),  # the CPU preset on digits
        ("cpu", 3, 32, {}),  # colour images
        ("cpu", 1, 28, {"n_downsample": 3}),  # 28 is not a multiple of 8: padded, then cropped
        ("cpu", 3, 30, {"n_downsample": 2, "dis_layers": 3}),  # odd size with colour
    ],
)
def test_shapes_round_trip(preset: str, channels: int, size: int, overrides: dict) -> None:
    cfg = preset_config(preset, **overrides)
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


def test_presets_are_valid_configs() -> None:
    for name, fields in MUNIT_PRESETS.items():
        cfg = preset_config(name)
        assert all(getattr(cfg, k) == v for k, v in fields.items()), name
    # the config defaults are the CPU preset's sizes with the paper's loss weights
    assert preset_config("cpu") == GeneratorConfig(recon_s_w=5.0)
    with pytest.raises(ConfigError):
        preset_config("nope")


def test_too_deep_discriminator_is_a_config_error() -> None:
    # 16px, 4 stride-2 layers at a second scale of 8px: nothing would be left
    with pytest.raises(ConfigError, match="dis_layers"):
        build_munit(1, 16, preset_config("cpu", dis_layers=4, dis_scales=2))


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model, dis = build_munit(1, 16, preset_config("cpu"))
    x = torch.rand(4, 1, 16, 16)
    content, style = model.encode(x)
    y = model.decode(content, style + torch.randn_like(style))
    loss = y.mean() + sum(s.mean() for s in dis(y))
    loss.backward()
    missing = [n for n, p in [*model.named_parameters(), *dis.named_parameters()] if p.grad is None]
    assert not missing


def test_sample_is_the_augmenter_contract() -> None:
    torch.manual_seed(0)
    model, _ = build_munit(1, 16, preset_config("cpu"))
    model.train()
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    a = model.sample(x, make_generator(3, CPU))
    b = model.sample(x, make_generator(3, CPU))
    c = model.sample(x, make_generator(4, CPU))
    assert a.shape == x.shape and a.dtype == x.dtype  # same shape and dtype as the input
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)  # the generator's seed fixes the styles
    assert not torch.equal(a, c)  # and a different seed gives different styles
    assert model.training  # sample runs in eval mode and restores the caller's mode
    u8 = model.sample((x * 255).round().to(torch.uint8), make_generator(3, CPU))
    assert u8.dtype == torch.uint8 and u8.shape == x.shape


def test_save_and_load_round_trip(tmp_path) -> None:
    cfg = preset_config("cpu", dim=8, mlp_dim=16)
    torch.manual_seed(0)
    model, _ = build_munit(3, 16, cfg)
    path = tmp_path / "g" / "generator.pt"
    save_generator(path, model, cfg, in_channels=3)
    loaded = load_generator(path, CPU)
    assert loaded.cfg == cfg and loaded.in_channels == 3
    x = torch.rand(3, 3, 16, 16)
    # same weights: same output for the same styles
    assert torch.equal(model.sample(x, make_generator(1, CPU)), loaded.sample(x, make_generator(1, CPU)))
    with pytest.raises(DataError):
        load_generator(tmp_path / "missing.pt")


def test_generator_config_defaults_are_the_cpu_preset() -> None:
    from gitlib.models.munit import preset_config
    from gitlib.train.config import GeneratorConfig

    # the YAML-facing defaults and the named CPU preset must not drift apart
    assert GeneratorConfig() == preset_config("cpu")
