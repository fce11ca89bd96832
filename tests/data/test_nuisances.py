from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.functional import rotate as tv_rotate

from gitlib.data.nuisances import get_nuisance, morph, principal_angle, rotate
from gitlib.data.spec import NUISANCES
from gitlib.errors import ConfigError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def strokes(n: int = 16, size: int = 20, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 1, size, size): zero background, random bright strokes in the middle."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    lo, hi = size // 4, 3 * size // 4
    block = torch.randint(0, 256, (n, 1, hi - lo, hi - lo), generator=g, dtype=torch.uint8)
    x[:, :, lo:hi, lo:hi] = block * (torch.rand(block.shape, generator=g) < 0.5)
    return x


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_has_the_spec_nuisances() -> None:
    assert sorted(NUISANCES.names()) == ["background", "dilation", "none", "rotation"]
    with pytest.raises(ConfigError, match=r"dataset\.nuisance.*unknown name 'blur'"):
        get_nuisance("blur")
    # options are checked where the nuisance is made
    with pytest.raises(ConfigError, match="levels"):
        get_nuisance("background", levels=300)
    with pytest.raises(ConfigError, match="bad options"):
        get_nuisance("rotation", angle=3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["rotation", "background", "dilation", "none"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_contract_dtype_device_determinism(name: str, dtype: torch.dtype, device: str) -> None:
    x = strokes().to(device)
    x = x if dtype == torch.uint8 else x.float() / 255
    nuisance = get_nuisance(name)
    out, params = nuisance.apply(x, gen(7))
    # same shape, dtype and device as given; float results stay in [0, 1]
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert float(out.min()) >= 0 and float(out.max()) <= (255 if dtype == torch.uint8 else 1)
    # one value per image for every parameter
    assert all(v.shape == (x.shape[0],) for v in params.values())
    # same seed -> same images and parameters
    again, params2 = nuisance.apply(x, gen(7))
    assert torch.equal(out, again) and all(torch.equal(params[k], params2[k]) for k in params)
    # sample() is apply() without the parameters
    assert torch.equal(nuisance.sample(x, gen(7)), out)
    if name != "none":
        # a different seed gives different draws
        assert not torch.equal(out, nuisance.apply(x, gen(8))[0])
    # measure gives one float per image
    assert nuisance.measure(out).shape == (x.shape[0],)


def test_uint8_and_float_agree() -> None:
    x = strokes()
    for name in ("rotation", "background", "dilation"):
        a = get_nuisance(name).sample(x, gen(1))
        b = get_nuisance(name).sample(x.float() / 255, gen(1))
        # the uint8 result is the float result rounded
        assert (a.float() - b * 255).abs().max() <= 0.5 + 1e-3, name


def test_rotation_matches_torchvision_at_right_angles() -> None:
    x = strokes(4, 11)
    # 0 degrees is the identity (bicubic weights hit pixel centres exactly)
    assert torch.equal(rotate(x, torch.zeros(4)), x)
    # 90 degrees is counter-clockwise as displayed, like torchvision's rotate and torch.rot90
    r = rotate(x, torch.full((4,), 90.0))
    assert torch.equal(r, tv_rotate(x, 90.0)) and torch.equal(r, torch.rot90(x, 1, dims=(2, 3)))


def test_rotation_equals_affine_grid_bicubic() -> None:
    x = torch.rand(6, 2, 12, 16)  # non-square, two channels
    angles = torch.tensor([-170.0, -33.3, 0.5, 45.0, 90.0, 179.0])
    a = torch.deg2rad(angles)
    aspect = 12 / 16
    theta = torch.zeros(6, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a) * aspect
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) / aspect, torch.cos(a)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    ref = torch.nn.functional.grid_sample(x, grid, mode="bicubic", align_corners=False).clamp(0, 1)
    # the broadcast-built grid is affine_grid's, and the result is bicubic grid_sample clamped to [0, 1]
    assert torch.allclose(rotate(x, angles), ref, atol=1e-5)


def test_rotation_angles_and_measure() -> None:
    nuisance = get_nuisance("rotation", degrees=30)
    _, params = nuisance.apply(strokes(500), gen(0))
    angle = params["angle"]
    # uniform in [-30, 30]: inside the range and spread over it
    assert angle.abs().max() <= 30 and angle.min() < -25 and angle.max() > 25
    # the principal-axis measure follows the rotation of an elongated bar
    bar = torch.zeros(5, 1, 28, 28)
    bar[:, :, 13:15, 4:24] = 1.0
    turns = torch.tensor([-60.0, -20.0, 0.0, 15.0, 45.0])
    assert torch.allclose(principal_angle(rotate(bar, turns)), turns, atol=1.0)


def test_background_levels() -> None:
    x = strokes(200)
    out, params = get_nuisance("background").apply(x, gen(3))
    level = params["level"]
    # one integer level per image in [0, 100), spread over the range
    assert level.dtype == torch.int64 and level.min() >= 0 and level.max() < 100 and level.max() > 80
    zero = x == 0
    # exactly the zero pixels take the image's level; every other pixel is untouched
    assert torch.equal(out[zero], level.view(-1, 1, 1, 1).expand_as(x)[zero].to(torch.uint8))
    assert torch.equal(out[~zero], x[~zero])
    # float images get level / 255 where the pixel is exactly 0
    f = x.float() / 255
    fo, fp = get_nuisance("background").apply(f, gen(3))
    assert torch.equal(fp["level"], level)
    assert torch.allclose(fo[zero], (level.view(-1, 1, 1, 1).float() / 255).expand_as(f)[zero])
    # measure recovers the level from the images
    assert torch.equal(get_nuisance("background").measure(out).long(), level)


def naive_morph(img: np.ndarray, dilate: bool, k: int) -> np.ndarray:
    """Reference grey-scale dilation / erosion, OpenCV anchor k // 2, border ignored."""
    h, w = img.shape
    out = np.empty_like(img)
    a = k // 2
    for i in range(h):
        for j in range(w):
            window = img[max(i - a, 0) : min(i - a + k, h), max(j - a, 0) : min(j - a + k, w)]
            out[i, j] = window.max() if dilate else window.min()
    return out


def test_dilation_matches_reference() -> None:
    x = strokes(10, 12)
    x[:, :, 0, :] = 255  # ink on the border checks the neutral padding
    cases = [(True, 2), (True, 3), (True, 4), (False, 1), (False, 2), (True, 3), (False, 2), (True, 4), (True, 2), (False, 1)]
    dilate = torch.tensor([d for d, _ in cases])
    kernel = torch.tensor([k for _, k in cases])
    out = morph(x, dilate, kernel)
    for i, (d, k) in enumerate(cases):
        # each image gets its own operation and kernel, batched by group
        assert np.array_equal(out[i, 0].numpy(), naive_morph(x[i, 0].numpy(), d, k)), (d, k)


def test_dilation_draws_and_measure() -> None:
    x = strokes(400)
    nuisance = get_nuisance("dilation")
    out, params = nuisance.apply(x, gen(5))
    dilate, kernel = params["dilate"], params["kernel"]
    # dilation with probability 0.6
    assert 0.5 < dilate.float().mean() < 0.7
    # dilation kernels 2..4, erosion kernels 1..2, all sizes drawn
    assert set(kernel[dilate].tolist()) == {2, 3, 4} and set(kernel[~dilate].tolist()) == {1, 2}
    ink_before, ink_after = nuisance.measure(x), nuisance.measure(out)
    # dilation never removes ink, erosion never adds it
    assert (ink_after[dilate] >= ink_before[dilate]).all()
    assert (ink_after[~dilate] <= ink_before[~dilate]).all()
    # kernel 1 erosion leaves the image alone
    same = ~dilate & (kernel == 1)
    assert torch.equal(out[same], x[same])
