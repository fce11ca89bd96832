"""Synthetic task families of the MSR experiments, generated on the fly on the device.

A family is a distribution over regression tasks y = f_w(x) with x ~ N(0, 1). Task i of a family is fixed
by (family seed, i): its weights w and its support / query inputs are counter-based hashes of
(seed, stream, i, element), so a task is the same whichever other tasks share its batch, on any device,
without storing anything. Indices [0, 0.8 n) are meta-train, [0.8 n, n) meta-test.

1-D (x of length 70, y of length 68, valid 3-tap filters, cross-correlation as torch's conv1d):
- rank1: one filter w ~ N(0, 1)^3 per task shared by all 68 positions: a convolution, so exactly
  translation-equivariant (shift x by s, y shifts by s on the positions whose window stays inside).
- rank2 / rank5: a locally connected layer whose 68 position filters are connectivity @ basis, with the
  connectivity (68 x r, a softmax over r of N(0, 1) logits) drawn once per family and the basis (r x 3)
  ~ N(0, 1) per task. Neighbouring positions mix the same r basis filters with different weights, so a
  shift is only approximately a symmetry.

2-D (x 1 x 32 x 32, y C x 30 x 30, valid 3x3, no bias): a group convolution lifting the image to the
regular representation of C8 (rot8, C = 3 groups x 8 = 24) or D8 (rot8_flip, 3 groups x 16 = 48).
Per task, 3 base filters b_g ~ N(0, 2/9) (He init for fan-in 9). The group acts on a 3x3 filter by
permuting its pixels: the 45-degree rotation R moves each of the 8 outer pixels one step
counter-clockwise around the centre (the "ring rotation"; R^2 is exactly the 90-degree rotation of the
3x3 array), the reflection F mirrors the columns. Channel (g, s, r) of the output holds R^r F^s b_g.
This bank is closed under the group, so for every image transform T that acts on the pixel grid exactly
(rotations by multiples of 90 degrees and, for D8, the mirror):
    f(T x) = P_T T f(x),
where P_T permutes the channels inside each group as the regular representation says (a 90-degree
rotation shifts r by 2; the mirror maps (s, r) to (1 - s, -r)). Rotations by an odd multiple of 45 degrees
are no exact symmetry of the pixel grid: the bank is equivariant to them only in the sense that
ring-rotating a 3x3 input patch cyclically permutes the 8 outputs at that pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F

from gitlib.msr.config import PROBLEM_SHAPES, PROBLEMS, ProblemShape, split_sizes

__all__ = [
    "PROBLEMS", "GroupConvFamily", "LowRankFamily", "Rank1Family", "Rank2Family", "Rank5Family", "Rot8Family",
    "Rot8FlipFamily",
    "TaskFamily", "build_family", "family_key", "hashed_normal", "hashed_normals",
]

Split = Literal["support", "query"]
Pairs = list[tuple[torch.Tensor, torch.Tensor]]
_M32 = 0xFFFFFFFF
# Each random stream of a task reads its own range of counters (2^26 normals each: far more than needed).
_OFFSETS = {"filter": 0, "support": 1 << 27, "query": 2 << 27, "family": 3 << 27}
_STREAM_SIZE = 1 << 27


# ---- counter-based random numbers --------------------------------------------------------------------


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """(h * c) mod 2^32 for h in [0, 2^32) held in int64. A constant c >= 2^31 is used as c - 2^32 (the same
    residue), so |h * c| < 2^63 never overflows and `& M` reads the low 32 bits of the two's complement."""
    return (h * (c - 2**32 if c >= 2**31 else c)) & _M32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """Murmur3's 32-bit finaliser: a bijection on [0, 2^32) with good avalanche."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _fmix32_int(h: int) -> int:
    return int(_fmix32(torch.tensor(h & _M32, dtype=torch.int64)))


def family_key(seed: int) -> int:
    """The 32-bit key of a family seed (any non-negative int)."""
    return _fmix32_int(_fmix32_int(seed & _M32) ^ _fmix32_int((seed >> 32) + 0x9E3779B9))


def hashed_normals(key: int, index: torch.Tensor, segments: list[tuple[str, int]]) -> list[torch.Tensor]:
    """Standard normals of tasks `index` (T,): one (T, n) tensor per (stream, n) segment, all in one pass.

    Counter-based: the uniform of counter c of task t is fmix((c * golden + a_t) ^ b_t), a SplitMix-style
    Weyl sequence started at a_t, with a_t, b_t two hashes of (key, t); b_t keeps two tasks' sequences from
    being shifted copies of each other. Stream s uses counters _OFFSETS[s] + [0, n), and normal i is the
    inverse normal CDF of uniform i. So row t depends only on (key, index[t]) and each normal only on its
    stream and position: the first m of n draws equal a request for m, whatever else is drawn with them.
    """
    device = index.device
    keys = torch.tensor([key, key ^ 0x5BD1E995], dtype=torch.int64, device=device)
    ab = _fmix32((index.to(torch.int64)[:, None] ^ keys) & _M32)  # (T, 2)
    counters = torch.cat([torch.arange(n, device=device, dtype=torch.int64) + _OFFSETS[stream]
                          for stream, n in segments])[None, :]  # (1, sum n)
    h = _fmix32(((_mul32(counters, 0x9E3779B9) + ab[:, :1]) & _M32) ^ ab[:, 1:])  # (T, sum n)
    # 24 bits -> the odd multiples of 2^-24 in (-1, 1), exact in float32; erfinv maps them to N(0, 1 / 2).
    v = (h >> 8).to(torch.float32) * 2.0**-23 + (2.0**-24 - 1.0)
    z = torch.erfinv(v) * math.sqrt(2.0)  # (T, sum n)
    return list(torch.split(z, [n for _, n in segments], dim=1))


def hashed_normal(key: int, index: torch.Tensor, n: int, stream: str = "filter") -> torch.Tensor:
    """(T, n) standard normals of one stream (see `hashed_normals`)."""
    if n > _STREAM_SIZE:
        raise ValueError(f"at most {_STREAM_SIZE} normals per stream, asked for {n}")
    return hashed_normals(key, index, [(stream, n)])[0]


# ---- families ----------------------------------------------------------------------------------------


class TaskFamily:
    """A family of regression tasks; subclasses define the per-task weights and how they map x to y."""

    name = ""
    filter_size = 0  # normals drawn per task for its weights

    def __init__(self, seed: int = 0, num_tasks: int = 10000, device: torch.device | str = "cpu") -> None:
        self.seed, self.num_tasks, self.device = int(seed), int(num_tasks), torch.device(device)
        self.shape: ProblemShape = PROBLEM_SHAPES[self.name]
        self.n_train, self.n_test = split_sizes(self.num_tasks)
        self.key = family_key(self.seed)

    @property
    def train_indices(self) -> torch.Tensor:  # (n_train,) on CPU: the meta-train tasks
        return torch.arange(self.n_train)

    @property
    def test_indices(self) -> torch.Tensor:  # (n_test,) on CPU: the meta-test tasks
        return torch.arange(self.n_train, self.num_tasks)

    @property
    def x_shape(self) -> tuple[int, ...]:
        s = self.shape
        return (s.in_size,) if s.dims == 1 else (s.in_size, s.image, s.image)

    @property
    def y_shape(self) -> tuple[int, ...]:
        s = self.shape
        side = s.image - s.kernel + 1
        return (s.in_size - s.kernel + 1,) if s.dims == 1 else (s.out_size, side, side)

    def weights_from_normals(self, z: torch.Tensor) -> torch.Tensor:
        """Per-task weights (T, ...) from the tasks' filter-stream normals z (T, filter_size)."""
        raise NotImplementedError

    def weights(self, index: torch.Tensor) -> torch.Tensor:
        """Per-task weights (T, ...) of tasks `index` (T,)."""
        return self.weights_from_normals(hashed_normal(self.key, index.to(self.device), self.filter_size))

    def apply(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y (T, K, *y_shape) of inputs x (T, K, *x_shape) under per-task weights (T, ...)."""
        raise NotImplementedError

    def targets(self, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The true outputs of tasks `index` (T,) on inputs x (T, K, *x_shape)."""
        return self.apply(self.weights(index.to(self.device)), x)

    def _draw(self, index: torch.Tensor, ks: dict[Split, int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Weights and inputs (T, k, *x_shape) per split of tasks `index`, in one hashing pass."""
        size = math.prod(self.x_shape)
        for split, k in ks.items():
            if split not in ("support", "query") or not 1 <= k * size <= _STREAM_SIZE:
                raise ValueError(f"cannot draw {k} {split!r} examples")
        segments = [("filter", self.filter_size)] + [(split, k * size) for split, k in ks.items()]
        z, *xs = hashed_normals(self.key, index, segments)
        return self.weights_from_normals(z), [x.view(len(index), -1, *self.x_shape) for x in xs]

    def sample(self, index: torch.Tensor, k: int, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """k examples (x, y) of each task in `index` (T,): x (T, k, *x_shape), y (T, k, *y_shape).
        The support and query inputs of a task are independent streams."""
        weights, (x,) = self._draw(index.to(self.device), {split: k})
        return x, self.apply(weights, x)

    def episode(self, index: torch.Tensor, k_support: int, k_query: int) -> tuple[torch.Tensor, ...]:
        """(x_support, y_support, x_query, y_query) of tasks `index`: the two `sample`s in one pass."""
        weights, (xs, xq) = self._draw(index.to(self.device), {"support": k_support, "query": k_query})
        return xs, self.apply(weights, xs), xq, self.apply(weights, xq)

    def symmetry_pairs(self, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Pairs:
        """For each symmetry T of the family: (f(T x), P_T T f(x)) restricted to where both are defined.
        The two are equal when f is equivariant; x (..., *x_shape)."""
        raise NotImplementedError


class _OneDFamily(TaskFamily):
    def apply(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # weights (T, 68, 3); x (T, K, 70) -> (T, K, 68): one multiply-add per tap, elementwise, so a task's
        # outputs do not depend on the batch it is in.
        n = self.y_shape[0]
        y = x[..., :n] * weights[:, None, :, 0]
        for j in range(1, self.shape.kernel):
            y = y + x[..., j:j + n] * weights[:, None, :, j]
        return y

    def symmetry_pairs(self, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Pairs:
        # Shift by one: (S x)[i] = x[i - 1]. Output p >= 1 reads inputs p-1..p+1 of x only, so it must
        # equal f(x)[p - 1]; output 0 reads the wrapped-around element and is left out.
        return [(f(torch.roll(x, 1, dims=-1))[..., 1:], f(x)[..., :-1])]


class Rank1Family(_OneDFamily):
    """y = valid 3-tap convolution of x with one N(0, 1) filter per task."""

    name, filter_size = "rank1", 3

    def weights_from_normals(self, z: torch.Tensor) -> torch.Tensor:  # (T, 68, 3): one filter everywhere
        return z[:, None, :].expand(-1, self.y_shape[0], -1)


class LowRankFamily(_OneDFamily):
    """y = locally connected layer with position filters connectivity (68, r) @ basis (T, r, 3)."""

    rank = 2

    def __init__(self, seed: int = 0, num_tasks: int = 10000, device: torch.device | str = "cpu") -> None:
        super().__init__(seed, num_tasks, device)
        self.filter_size = self.rank * self.shape.kernel
        logits = hashed_normal(self.key, torch.zeros(1, dtype=torch.int64, device=self.device),
                               self.y_shape[0] * self.rank, stream="family").view(self.y_shape[0], self.rank)
        self.connectivity = torch.softmax(logits, dim=1)  # (68, r), drawn once per family

    def weights_from_normals(self, z: torch.Tensor) -> torch.Tensor:  # (T, 68, 3)
        return self.connectivity @ z.view(-1, self.rank, self.shape.kernel)  # connectivity @ basis (T, r, 3)


class Rank2Family(LowRankFamily):
    name, rank = "rank2", 2


class Rank5Family(LowRankFamily):
    name, rank = "rank5", 5


# ---- 2-D group convolutions --------------------------------------------------------------------------


def _ring_rotation() -> torch.Tensor:
    """p (9,) with (R w)[q] = w[p[q]] on a flattened 3x3 filter: each outer pixel takes the value of its
    clockwise neighbour, i.e. the pattern turns 45 degrees counter-clockwise; the centre stays."""
    ring = [0, 1, 2, 5, 8, 7, 6, 3]  # the 8 outer pixels, clockwise from the top-left corner
    p = list(range(9))
    for i in range(8):
        p[ring[i]] = ring[(i + 1) % 8]
    return torch.tensor(p)


def _mirror() -> torch.Tensor:
    """f (9,) with (F w)[q] = w[f[q]]: the columns of the 3x3 filter reversed."""
    return torch.arange(9).view(3, 3).flip(1).flatten()


class GroupConvFamily(TaskFamily):
    """y = lift of x to the regular representation of C8 (flips=False) or D8 (flips=True), 3 groups."""

    flips = False
    groups = 3
    filter_size = 27  # 3 base 3x3 filters

    def __init__(self, seed: int = 0, num_tasks: int = 10000, device: torch.device | str = "cpu") -> None:
        super().__init__(seed, num_tasks, device)
        p, m = _ring_rotation(), _mirror()
        labels = []
        for s in range(2 if self.flips else 1):
            lab = m if s else torch.arange(9)
            for _ in range(8):
                labels.append(lab)
                lab = lab[p]  # one more 45-degree turn
        # (G, 9): element e = s * 8 + r reads base pixel filter_index[e, q] at pixel q: R^r F^s b.
        self.filter_index = torch.stack(labels)
        self._gather = self.filter_index.to(self.device)
        self.order = len(labels)
        assert self.order * self.groups == self.shape.out_size

    def weights_from_normals(self, z: torch.Tensor) -> torch.Tensor:  # (T, C, 1, 3, 3)
        base = z.view(-1, self.groups, 9) * math.sqrt(2.0 / 9.0)  # He init for fan-in 9
        bank = base[:, :, self._gather]  # (T, 3, G, 9)
        return bank.reshape(len(z), self.shape.out_size, 1, 3, 3)

    def apply(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # One grouped conv for the whole batch: tasks become conv groups. x (T, K, 1, 32, 32).
        t, k = x.shape[:2]
        y = F.conv2d(x.transpose(0, 1).reshape(k, t, *x.shape[-2:]), weights.reshape(-1, 1, 3, 3), groups=t)
        return y.view(k, t, *self.y_shape).transpose(0, 1)  # (T, K, C, 30, 30)

    def _transforms(self) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]]:
        """(image transform T, filter pixel index of T) for the exact symmetries used by the tests and the
        equivariance error: rotations by 90, 180, 270 degrees, and the mirror for D8."""
        grid = torch.arange(9).view(3, 3)
        out: list[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]]
        out = [(partial(torch.rot90, k=k, dims=(-2, -1)), torch.rot90(grid, k).flatten()) for k in (1, 2, 3)]
        if self.flips:
            out.append((partial(torch.flip, dims=(-1,)), grid.flip(1).flatten()))
        return out

    def channel_permutation(self, inverse_index: torch.Tensor) -> torch.Tensor:
        """src (C,) with f(T x)[c] = T f(x)[src[c]]: channel c's filter, transformed by T^-1 (pixel index
        `inverse_index`), is the filter of channel src[c] (T x conv w = T (x conv T^-1 w))."""
        lab = self.filter_index
        moved = lab[:, inverse_index]  # (G, 9): T^-1 applied to every element's filter
        match = (moved[:, None, :] == lab[None, :, :]).all(-1)  # (G, G)
        within = match.float().argmax(1)
        assert bool(match.any(1).all()), "the filter bank is not closed under this transform"
        offsets = torch.arange(self.groups)[:, None] * self.order
        return (offsets + within[None, :]).flatten()

    def symmetry_pairs(self, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Pairs:
        pairs, fx = [], f(x)
        for transform, idx in self._transforms():
            inverse = torch.argsort(idx)  # the pixel index of T^-1
            src = self.channel_permutation(inverse).to(fx.device)
            pairs.append((f(transform(x)), transform(fx).index_select(-3, src)))
        return pairs


class Rot8Family(GroupConvFamily):
    name, flips = "rot8", False


class Rot8FlipFamily(GroupConvFamily):
    name, flips = "rot8_flip", True


def build_family(problem: str, seed: int = 0, num_tasks: int = 10000,
                 device: torch.device | str = "cpu") -> TaskFamily:
    """The task family `problem` (a PROBLEMS name) with family seed `seed`."""
    family: TaskFamily = PROBLEMS.get(problem)(seed, num_tasks, device)
    return family
