"""MSR layers and baselines: a conv is an MSR-FC layer with the conv sharing pattern, shapes per problem,
symmetry params named, every parameter differentiable, dense pictures consistent with the forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gitlib.errors import ConfigError
from gitlib.msr.layers import (
    Conv1d,
    Conv2d,
    LocallyConnected1d,
    MsrConv2d,
    MsrLinear,
    build_model,
    conv_sharing_matrix,
)
from gitlib.msr.tasks import GroupConvFamily, build_family


def test_msr_fc_with_the_conv_sharing_pattern_is_a_conv1d() -> None:
    g = torch.Generator().manual_seed(0)
    layer, conv = MsrLinear(70, 68, 3, generator=g), Conv1d(70, 3, generator=g)
    with torch.no_grad():
        layer.U.copy_(conv_sharing_matrix(70, 68, 3))
        layer.v.copy_(conv.weight)
    x = torch.randn(5, 70, generator=g)
    reference = F.conv1d(x[:, None, :], conv.weight.view(1, 1, 3))[:, 0]  # torch's own conv1d
    assert torch.allclose(layer(x), conv(x), atol=1e-6)  # U = conv pattern: MSR-FC equals the Conv1d layer
    assert torch.allclose(conv(x), reference, atol=1e-6)  # the Conv1d baseline is torch's valid conv1d


def test_msr_fc_sharing_pattern_shows_the_conv_bands() -> None:
    layer = MsrLinear(70, 68, 3)
    with torch.no_grad():
        layer.U.copy_(conv_sharing_matrix(70, 68, 3))
    picture = layer.sharing_pattern()
    assert picture.shape == (68, 3 * 70)  # k blocks of (out, in) side by side
    for j in range(3):
        band = torch.eye(68, 70).roll(j, dims=1)  # ones at (o, o + j)
        assert torch.equal(picture[:, 70 * j: 70 * (j + 1)], band)  # block j is the j-th off-diagonal


@pytest.mark.parametrize("problem,name,x_shape,y_shape,symmetry", [
    ("rank1", "fc", (70,), (68,), ()),
    ("rank2", "lc", (70,), (68,), ()),
    ("rank5", "conv", (70,), (68,), ()),
    ("rank5", "msr_fc", (70,), (68,), ("U",)),
    ("rot8", "conv", (1, 32, 32), (24, 30, 30), ()),
    ("rot8_flip", "msr_conv", (1, 32, 32), (48, 30, 30), ("U",)),
])
def test_shapes_symmetry_names_and_gradients(problem: str, name: str, x_shape: tuple[int, ...],
                                             y_shape: tuple[int, ...], symmetry: tuple[str, ...]) -> None:
    model = build_model(name, problem, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, *x_shape)
    y = model(x)
    assert y.shape == (2, 3, *y_shape)  # any leading dims; 1-D 70 -> 68, 2-D 1x32x32 -> Cx30x30
    assert model.symmetry == symmetry  # only U is outer-loop-only
    y.square().sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n  # every parameter is trained


def test_default_latent_sizes_are_the_papers() -> None:
    sizes = {p: build_model("msr_fc", p).k for p in ("rank1", "rank2", "rank5")}
    assert sizes == {"rank1": 3, "rank2": 6, "rank5": 30}  # the paper's k per 1-D problem
    assert build_model("msr_fc", "rank1", latent_size=7).U.shape == (70 * 68, 7)  # U (in*out, k)


def test_msr_init_uses_standard_deviations_001_and_1_over_out() -> None:
    layer = MsrLinear(70, 68, 400, generator=torch.Generator().manual_seed(0))
    assert abs(layer.U.std().item() - 0.01) < 0.001  # U ~ N(0, 0.01^2): 0.01 is the std
    assert abs(layer.v.std().item() - 1 / 68) < 0.002  # v ~ N(0, (1/out)^2): 1/out is the std


@pytest.mark.parametrize("cls", [LocallyConnected1d, Conv1d])
def test_dense_pictures_of_the_1d_baselines_match_their_forward(cls: type) -> None:
    layer = cls(70, 3, generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 70)
    assert torch.allclose(layer(x), x @ layer.sharing_pattern().T, atol=1e-6)  # picture = the layer's matrix


def test_msr_conv_with_identity_u_is_a_plain_conv2d() -> None:
    conv, msr = Conv2d(1, 24), MsrConv2d(1, 24, k=216)
    with torch.no_grad():
        msr.U.copy_(torch.eye(216))
        msr.v.copy_(conv.weight.flatten())
    x = torch.randn(3, 1, 32, 32)
    assert torch.allclose(msr(x), conv(x), atol=1e-5)  # full U = identity: MSR-Conv is the unconstrained conv


@pytest.mark.parametrize("problem", ["rot8", "rot8_flip"])
def test_full_u_represents_the_group_conv_family_exactly(problem: str) -> None:
    family = build_family(problem, seed=3)
    assert isinstance(family, GroupConvFamily)
    index = family.filter_index  # (G, 9): pixel of the base filter read at each pixel, per group element
    order, groups = index.shape[0], family.groups
    u = torch.zeros(groups, order, 9, groups, 9)
    for g in range(groups):
        u[g, :, :, g, :] = F.one_hot(index, 9).float() * math.sqrt(2 / 9)
    model = MsrConv2d(1, family.shape.out_size, k=27)
    with torch.no_grad():
        model.U.copy_(u.reshape(groups * order * 9, groups * 9))  # latent k = 27 base-filter pixels
    task = torch.tensor([8005])
    base = family.weights(task).view(groups, order, 9)[:, 0] / math.sqrt(2 / 9)  # element 0 = the base filter
    with torch.no_grad():
        model.v.copy_(base.flatten())
    x, y = family.sample(task, 2, "query")
    assert torch.allclose(model(x[0]), y[0], atol=1e-4)  # U v with the bank's U reproduces the task exactly


def test_models_that_do_not_fit_the_problem_are_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        build_model("msr_conv", "rank1")
    assert err.value.key == "msr.model"  # a 2-D layer on a 1-D problem names msr.model
    with pytest.raises(ConfigError) as err:
        build_model("lc", "rot8")
    assert err.value.key == "msr.model"  # locally connected has no 2-D version
    with pytest.raises(ConfigError) as err:
        build_model("msr_fc", "rank3")
    assert err.value.key == "msr.problem"  # unknown problem names msr.problem
