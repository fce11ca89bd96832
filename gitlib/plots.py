"""Figures of results (matplotlib `Figure` objects, rendered with Agg; pyplot's global state and backend are
never touched): eKLD against class size, and a generator's sample grid.

The sample grid asks: does a generator keep the class and vary the nuisance, for large and small classes?
Rows are source training images from the largest and the smallest classes, labelled with the class and its
training count; the first column is the source, the others are the same source with random styles.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:  # torch loads where a sample grid is drawn: the report's figures do not need it
    import pyarrow as pa
    import torch

    from gitlib.augmenter import Augmenter

# Every eKLD figure (a trial's, a group's, the report's) has this one log y-axis, so any two of them
# compare at a glance: a trial draws its figure before the sweep knows the other trials' values, so the
# axis cannot come from the data. eKLD of a trained classifier lies in here; values outside are drawn at
# the edge.
EKLD_RANGE = (1e-4, 3.0)


def _ekld_axis(ax: Any) -> None:
    """The shared axes of every eKLD-vs-class-size figure: log x (training images), log y (EKLD_RANGE)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(*EKLD_RANGE)
    ax.set_xlabel("training images in class")
    ax.set_ylabel("eKLD (log scale)")
    ax.grid(True, which="both", alpha=0.3)


def ekld_vs_class_size(per_class: pa.Table, path: str | Path, spearman: float | None = None,
                       title: str = "", colour: str = "C0") -> Path:
    """Scatter of eKLD against training class size (log x), each point labelled with its class; `colour`
    is the trial's group's (sweeps.groups.colour), the same in every figure of a sweep."""
    counts = np.asarray(per_class.column("train_count").to_numpy(), dtype=np.float64)
    ekld = np.asarray(per_class.column("ekld").to_numpy(zero_copy_only=False), dtype=np.float64)
    classes = per_class.column("class").to_pylist()
    fig = Figure(figsize=(5.5, 4.0), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    ok = np.isfinite(ekld) & (counts > 0)
    shown = np.clip(ekld, EKLD_RANGE[0], EKLD_RANGE[1])  # a fixed log axis: figures of any two runs compare
    ax.scatter(counts[ok], shown[ok], s=22, color=colour)
    for c, n, e, y in zip(classes, counts, ekld, shown, strict=True):
        if math.isfinite(e) and n > 0:
            ax.annotate(str(c), (n, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    _ekld_axis(ax)
    rho = "n/a" if spearman is None or not math.isfinite(spearman) else f"{spearman:.2f}"
    ax.set_title(f"{title}\neKLD vs class size (Spearman {rho})" if title else f"eKLD vs class size (Spearman {rho})",
                 fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def ekld_bands(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: str | Path,
               title: str = "", colours: dict[str, str] | None = None, note: str = "") -> Path:
    """Mean curves of eKLD against class size with shaded 95% bands: label -> (train counts, mean, low,
    high), one value per class (or size rank), on the axes every eKLD figure shares. NaN bands (a single
    repeat) are left out. `colours`: label -> colour (a group's, the same in every figure); `note`: lines
    printed under the axes (the contrast's numbers)."""
    lines = note.count("\n") + 1 if note else 0
    fig = Figure(figsize=(6.0, 4.2 + 0.18 * lines), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for label, (counts, mean, low, high) in curves.items():
        order = np.argsort(counts)
        x, m, lo, hi = (np.asarray(a, dtype=np.float64)[order] for a in (counts, mean, low, high))
        colour = (colours or {}).get(label)
        line = ax.plot(x, np.clip(m, *EKLD_RANGE), marker="o", ms=3, label=label, color=colour)[0]
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():  # eKLD is >= 0: a t-interval reaching below the axis is drawn from its bottom
            ax.fill_between(x[ok], np.clip(lo[ok], *EKLD_RANGE), np.clip(hi[ok], *EKLD_RANGE),
                            color=line.get_color(), alpha=0.2, linewidth=0)
    _ekld_axis(ax)
    ax.set_title(title, fontsize=9)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    if note:
        bottom = (0.3 + 0.18 * lines) / (4.2 + 0.18 * lines)  # inches of text as a share of the height
        fig.subplots_adjust(bottom=bottom + 0.1)
        fig.text(0.02, 0.02, note, fontsize=7.5, family="monospace", va="bottom")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def sharing_pattern_figure(pattern: np.ndarray, path: str | Path, title: str = "") -> Path:
    """A learned sharing pattern (a 2-D array, e.g. an MSR layer's U arranged so that a convolution's
    banded structure would show) as an image with a symmetric colour scale."""
    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    limit = float(np.nanmax(np.abs(pattern))) if np.isfinite(pattern).any() else 1.0
    image = ax.imshow(pattern, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def grid_sources(labels: torch.Tensor, class_counts: np.ndarray, n_large: int = 3, n_small: int = 3,
                 seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Indices of one random training image from each of the `n_large` largest and `n_small` smallest
    classes (largest first), and row labels 'class c (n=count)'."""
    counts = np.asarray(class_counts)
    present = np.flatnonzero(counts > 0)
    order = present[np.argsort(-counts[present], kind="stable")]  # largest first
    n_large = min(n_large, len(order))
    n_small = min(n_small, len(order) - n_large)
    classes = list(order[:n_large]) + (list(order[-n_small:]) if n_small else [])
    import torch

    rng = np.random.default_rng(seed)
    labels_np = labels.cpu().numpy()
    idx = [int(rng.choice(np.flatnonzero(labels_np == c))) for c in classes]
    return torch.tensor(idx, dtype=torch.int64), [f"class {c} (n={counts[c]})" for c in classes]


def sample_grid(augmenter: Augmenter, sources: torch.Tensor, rng: torch.Generator,
                styles: int = 8) -> torch.Tensor:
    """(rows, 1 + styles, C, H, W) float in [0, 1]: each source, then `styles` random-style versions."""
    import torch

    x = sources.float() / 255 if sources.dtype == torch.uint8 else sources.float()  # (R, C, H, W)
    dev = rng.device
    with torch.no_grad():
        fake = augmenter.sample(x.repeat_interleave(styles, dim=0).to(dev), rng).float().cpu()
    fake = fake.view(len(x), styles, *x.shape[1:])  # (R, S, C, H, W)
    return torch.cat([x[:, None].cpu(), fake], dim=1)


def save_sample_grid(path: str | Path, augmenter: Augmenter, sources: torch.Tensor, row_labels: list[str],
                     rng: torch.Generator, styles: int = 8, title: str | None = None) -> Path:
    """Draw `sample_grid` with matplotlib and write it as a PNG; returns the path."""
    grid = sample_grid(augmenter, sources, rng, styles)  # (R, 1 + S, C, H, W)
    rows, cols = grid.shape[:2]
    fig = Figure(figsize=(0.9 * cols + 1.4, 0.9 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            img = grid[r, c].permute(1, 2, 0).numpy()  # (H, W, C)
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(np.clip(img[..., :3], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("source" if c == 0 else f"style {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
