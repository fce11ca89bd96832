"""Every registered architecture: shapes, finite outputs, a gradient for every parameter, normalisation."""

from __future__ import annotations

import pytest
import torch

from gitlib.errors import ConfigError
from gitlib.models.resnet import ARCHITECTURES, NormedLinear, build_classifier, inference_copy


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("in_channels,normed_head", [(1, False), (3, True)])
def test_shapes_finite_and_every_parameter_gets_a_gradient(arch: str, in_channels: int, normed_head: bool) -> None:
    torch.manual_seed(0)
    model = build_classifier(arch, in_channels, 7, normed_head=normed_head, mean=[0.3] * in_channels,
                             std=[0.2] * in_channels)
    x = torch.rand(4, in_channels, 16, 16)
    out = model(x)
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"
    if normed_head:
        assert out.abs().max() <= 1.0 + 1e-5  # cosine logits


def test_resnet_small_is_cpu_sized_and_depths_follow_he_et_al() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 20_000 <= count(build_classifier("resnet_small", 1, 10)) <= 30_000
    assert 0.26e6 <= count(build_classifier("resnet20", 3, 10)) <= 0.28e6  # ~0.27M in the paper
    assert 0.45e6 <= count(build_classifier("resnet32", 3, 10)) <= 0.48e6  # ~0.46M


def test_mean_std_buffers_normalise_inputs_and_travel_in_state_dict() -> None:
    torch.manual_seed(0)
    a = build_classifier("resnet_small", 1, 3, mean=[0.5], std=[0.25]).eval()
    torch.manual_seed(0)
    b = build_classifier("resnet_small", 1, 3, mean=[0.0], std=[1.0]).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(a(x), b((x - 0.5) / 0.25), atol=1e-5)  # normalisation happens inside
    assert {"mean", "std"} <= set(a.state_dict())
    with pytest.raises(ValueError):
        build_classifier("resnet_small", 3, 3, mean=[0.5], std=[0.2])  # one value per channel
    with pytest.raises(ConfigError, match=r"classifier\.arch"):  # unknown names: always a ConfigError
        build_classifier("resnet1000", 1, 3)


def test_normed_linear_is_scale_invariant() -> None:
    head = NormedLinear(8, 4)
    f = torch.randn(3, 8)
    assert torch.allclose(head(f), head(5.0 * f), atol=1e-6)


@pytest.mark.parametrize("arch,normed_head", [("resnet_small", False), ("resnet20", True)])
def test_inference_copy_folds_batch_norm_without_changing_outputs(arch: str, normed_head: bool) -> None:
    torch.manual_seed(0)
    model = build_classifier(arch, 1, 10, normed_head=normed_head, mean=[0.3], std=[0.2])
    with torch.no_grad():  # a few training-mode passes give the batch norms non-trivial running statistics
        for _ in range(3):
            model(torch.rand(64, 1, 16, 16) * 2)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = inference_copy(model)
    x = torch.rand(32, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched


def test_inference_copy_leaves_other_models_alone() -> None:
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert inference_copy(other) is other
