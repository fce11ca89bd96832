"""One-layer models of the MSR experiments: symmetry-reparameterized layers and their baselines.

An MSR layer writes its weight as vec(W) = U v. The *symmetry matrix* U (the sharing pattern: which
weights are tied to which, and with what coefficients) is learned in the outer loop only; the *filter*
v is adapted per task in the inner loop. With U equal to a convolution's sharing pattern, an MSR
fully connected layer is exactly a convolution (see `conv_sharing_matrix`); any finite group convolution
can be written the same way.

Every model is a plain `nn.Module` whose forward uses only its parameters, so the meta-learner calls it
functionally (`torch.func.functional_call` over a params dict, under `vmap` and `grad`). Each model names
its symmetry parameters in `symmetry` (outer loop only); every other parameter is adapted in the inner loop.

MsrConv2d uses a *full* U over the conv weight, vec(W) = U v with U (c_out * c_in * kh * kw, k), rather
than the reference's Kronecker-factored warp vec(W') = (A kron B kron C) vec(W). Why:
- The factored warp maps W to A W C^T here (c_in = 1, so B is 1x1); its image for any A, C is a tensor
  product subspace span(A) x span(C). The filter bank of a C8 / D8 group convolution (channel r of a group
  holds the base filter rotated by r steps) is not such a subspace, so the factored warp cannot tie the
  weights the way the 2-D task families do, only rescale and mix them. A full U can, exactly.
- Size is no issue for these problems: U is (216, k) for 24 output channels and (432, k) for 48, far
  smaller than the 1-D MSR-FC's (4760, k).
- It is the same reparameterization as MsrLinear, so one set of tests and one explanation covers both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gitlib.errors import ConfigError
from gitlib.msr.config import DEFAULT_LATENT, MODEL_DIMS, MODELS, PROBLEM_SHAPES, PROBLEMS, ProblemShape

__all__ = [
    "MODELS", "Conv1d", "Conv2d", "Linear", "LocallyConnected1d", "MsrConv2d", "MsrLinear", "MsrModule",
    "build_model", "conv_sharing_matrix",
]

Generator = torch.Generator | None


class MsrModule(nn.Module):
    """Base of the MSR models: names the symmetry parameters and exposes the sharing pattern."""

    symmetry: tuple[str, ...] = ()  # parameter names learned in the outer loop only

    def reset_parameters(self, generator: Generator = None) -> None:
        raise NotImplementedError

    def sharing_pattern(self) -> torch.Tensor:
        """A 2-D picture of how the layer ties its weights (see each subclass)."""
        raise NotImplementedError


def _uniform(t: torch.Tensor, bound: float, generator: Generator) -> None:
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=generator)


def _normal(t: torch.Tensor, std: float, generator: Generator) -> None:
    with torch.no_grad():
        t.normal_(0.0, std, generator=generator)


def _windows(length: int, taps: int) -> torch.Tensor:
    """(length - taps + 1, taps) input positions read by each output of a valid 1-D filter."""
    return torch.arange(length - taps + 1)[:, None] + torch.arange(taps)[None, :]


def conv_sharing_matrix(in_features: int, out_features: int, taps: int) -> torch.Tensor:
    """U (out*in, taps) of a valid 1-D cross-correlation: W[o, o + j] = v[j], so (U v).view(out, in) x
    is the convolution of x with the filter v."""
    u = torch.zeros(out_features, in_features, taps)
    o = torch.arange(out_features)
    for j in range(taps):
        u[o, o + j, j] = 1.0
    return u.reshape(out_features * in_features, taps)


# ---- 1-D baselines ---------------------------------------------------------------------------------


class Linear(MsrModule):
    """Fully connected, no bias: y = W x, W (out, in), nothing tied."""

    def __init__(self, in_features: int, out_features: int, generator: Generator = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Generator = None) -> None:
        _uniform(self.weight, 1 / math.sqrt(self.in_features), generator)  # torch's Linear default bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return x @ self.weight.T

    def sharing_pattern(self) -> torch.Tensor:
        return self.weight.detach()  # (out, in)


class LocallyConnected1d(MsrModule):
    """Each output position has its own `taps`-wide filter over its window of inputs (no sharing)."""

    index: torch.Tensor  # (68, 3) input positions of each output (a buffer)

    def __init__(self, in_features: int, taps: int = 3, generator: Generator = None) -> None:
        super().__init__()
        self.in_features, self.taps = in_features, taps
        self.out_features = in_features - taps + 1
        self.weight = nn.Parameter(torch.empty(self.out_features, taps))  # (68, 3)
        self.register_buffer("index", _windows(in_features, taps), persistent=False)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Generator = None) -> None:
        _uniform(self.weight, 1 / math.sqrt(self.taps), generator)  # fan-in = taps, as a conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., 70) -> (..., 68)
        return torch.einsum("...pj,pj->...p", x[..., self.index], self.weight)

    def sharing_pattern(self) -> torch.Tensor:
        """The equivalent dense (out, in) matrix: a band whose entries vary along the diagonal."""
        dense = self.weight.new_zeros(self.out_features, self.in_features)
        rows = torch.arange(self.out_features, device=dense.device)[:, None].expand_as(self.index)
        dense[rows, self.index] = self.weight.detach()
        return dense


class Conv1d(MsrModule):
    """Valid 1-D cross-correlation with one `taps`-wide filter shared by all positions, no bias."""

    index: torch.Tensor  # (68, 3) input positions of each output (a buffer)

    def __init__(self, in_features: int, taps: int = 3, generator: Generator = None) -> None:
        super().__init__()
        self.in_features, self.taps = in_features, taps
        self.out_features = in_features - taps + 1
        self.weight = nn.Parameter(torch.empty(taps))  # (3,)
        self.register_buffer("index", _windows(in_features, taps), persistent=False)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Generator = None) -> None:
        _uniform(self.weight, 1 / math.sqrt(self.taps), generator)  # torch's Conv1d default bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., 70) -> (..., 68)
        return x[..., self.index] @ self.weight

    def sharing_pattern(self) -> torch.Tensor:
        """The equivalent dense (out, in) matrix: a Toeplitz band."""
        u = conv_sharing_matrix(self.in_features, self.out_features, self.taps).to(self.weight)
        return (u @ self.weight.detach()).view(self.out_features, self.in_features)


# ---- 2-D baseline ----------------------------------------------------------------------------------


def _conv2d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Valid conv over the last three dims of x (..., c_in, H, W), any leading dims."""
    lead = x.shape[:-3]
    y = F.conv2d(x.reshape(-1, *x.shape[-3:]), weight)
    return y.reshape(*lead, *y.shape[-3:])


class Conv2d(MsrModule):
    """Valid 2-D conv, no bias, no padding: (c_in, 32, 32) -> (c_out, 30, 30) with 3x3 filters."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3,
                 generator: Generator = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Generator = None) -> None:
        _uniform(self.weight, 1 / math.sqrt(self.in_channels * self.kernel**2), generator)  # Conv2d default

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., c_in, H, W) -> (..., c_out, H-2, W-2)
        return _conv2d(x, self.weight)

    def sharing_pattern(self) -> torch.Tensor:
        return self.weight.detach().reshape(self.out_channels, -1)  # (c_out, c_in * kh * kw)


# ---- MSR layers ------------------------------------------------------------------------------------


class MsrLinear(MsrModule):
    """W = (U v).view(out, in), U (in*out, k) learned in the outer loop, v (k,) adapted per task; no bias.

    Init as the reference code: U ~ N(0, 0.01^2) and v ~ N(0, (1/out)^2), i.e. 0.01 and 1/out are standard
    deviations (the reference calls `normal_(mean, std)` with them).
    """

    symmetry = ("U",)

    def __init__(self, in_features: int, out_features: int, k: int, generator: Generator = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.k = in_features, out_features, k
        # (4760, k) stored column by column: `v @ U.T` then reads U.T contiguously, and U's gradient and Adam
        # state follow its strides (a quarter less time per outer step than row-major on CPU).
        self.U = nn.Parameter(torch.empty(k, in_features * out_features).T)
        self.v = nn.Parameter(torch.empty(k))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Generator = None) -> None:
        _normal(self.U, 0.01, generator)
        _normal(self.v, 1 / self.out_features, generator)

    def weight(self) -> torch.Tensor:  # (out, in)
        # v @ U.T rather than U @ v: under vmap the task axis then comes first and the view needs no copy
        return (self.v @ self.U.T).view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return x @ self.weight().T

    def sharing_pattern(self) -> torch.Tensor:
        """(out, k * in): column j of U reshaped to (out, in), the k blocks side by side. For a
        convolution's U (see `conv_sharing_matrix`) block j is the j-th off-diagonal band."""
        u = self.U.detach().T.reshape(self.k, self.out_features, self.in_features)
        return u.permute(1, 0, 2).reshape(self.out_features, self.k * self.in_features)


class MsrConv2d(MsrModule):
    """Valid 2-D conv whose weight is (U v).view(c_out, c_in, kh, kw): a full symmetry matrix U
    (c_out*c_in*kh*kw, k) over the conv weight (why not the Kronecker warp: module docstring); no bias.
    Init as MsrLinear: U ~ N(0, 0.01^2), v ~ N(0, (1/c_out)^2) (standard deviations)."""

    symmetry = ("U",)

    def __init__(self, in_channels: int, out_channels: int, k: int, kernel: int = 3,
                 generator: Generator = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.k, self.kernel = in_channels, out_channels, k, kernel
        # (216, k) for C8, stored column by column as in MsrLinear
        self.U = nn.Parameter(torch.empty(k, out_channels * in_channels * kernel**2).T)
        self.v = nn.Parameter(torch.empty(k))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Generator = None) -> None:
        _normal(self.U, 0.01, generator)
        _normal(self.v, 1 / self.out_channels, generator)

    def weight(self) -> torch.Tensor:  # (c_out, c_in, kh, kw)
        return (self.v @ self.U.T).view(self.out_channels, self.in_channels, self.kernel, self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., c_in, H, W) -> (..., c_out, H-2, W-2)
        return _conv2d(x, self.weight())

    def sharing_pattern(self) -> torch.Tensor:
        """(c_out, k * c_in*kh*kw): column j of U reshaped to one filter per output channel, side by side."""
        u = self.U.detach().T.reshape(self.k, self.out_channels, -1)
        return u.permute(1, 0, 2).reshape(self.out_channels, -1)


# ---- registry builders -----------------------------------------------------------------------------


def build_fc(shape: ProblemShape, latent_size: int, generator: Generator = None) -> MsrModule:
    return Linear(shape.in_size, shape.out_size, generator)


def build_lc(shape: ProblemShape, latent_size: int, generator: Generator = None) -> MsrModule:
    return LocallyConnected1d(shape.in_size, shape.kernel, generator)


def build_conv(shape: ProblemShape, latent_size: int, generator: Generator = None) -> MsrModule:
    if shape.dims == 1:
        return Conv1d(shape.in_size, shape.kernel, generator)
    return Conv2d(shape.in_size, shape.out_size, shape.kernel, generator)


def build_msr_fc(shape: ProblemShape, latent_size: int, generator: Generator = None) -> MsrModule:
    return MsrLinear(shape.in_size, shape.out_size, latent_size, generator)


def build_msr_conv(shape: ProblemShape, latent_size: int, generator: Generator = None) -> MsrModule:
    return MsrConv2d(shape.in_size, shape.out_size, latent_size, shape.kernel, generator)


def build_model(name: str, problem: str, latent_size: int | None = None,
                generator: Generator = None) -> MsrModule:
    """The model `name` sized for `problem` (1-D: 70 -> 68; 2-D: 1x32x32 -> Cx30x30), initialised from
    `generator`; `latent_size` None = the problem's default k (used by the MSR layers only)."""
    problem = PROBLEMS.canonical(problem, key="msr.problem") or problem
    name = MODELS.canonical(name, key="msr.model") or name
    shape = PROBLEM_SHAPES[problem]
    if shape.dims not in MODEL_DIMS[name]:
        raise ConfigError("msr.model", f"{name!r} does not apply to the {shape.dims}-D problem {problem!r}")
    k = latent_size if latent_size is not None else DEFAULT_LATENT[problem]
    model: MsrModule = MODELS.get(name)(shape, k, generator)
    return model
