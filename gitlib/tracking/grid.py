"""Sample grid of a generator: does it keep the class and vary the nuisance, for large and small classes?

Rows are source training images from the largest and the smallest classes, labelled with the class and
its training count; the first column is the source, the others are the same source with random styles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gitlib.train.augment import Augmenter


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
    rng = np.random.default_rng(seed)
    labels_np = labels.cpu().numpy()
    idx = [int(rng.choice(np.flatnonzero(labels_np == c))) for c in classes]
    return torch.tensor(idx, dtype=torch.int64), [f"class {c} (n={counts[c]})" for c in classes]


@torch.no_grad()
def sample_grid(augmenter: Augmenter, sources: torch.Tensor, generator: torch.Generator,
                styles: int = 8) -> torch.Tensor:
    """(rows, 1 + styles, C, H, W) float in [0, 1]: each source, then `styles` random-style versions."""
    x = sources.float() / 255 if sources.dtype == torch.uint8 else sources.float()  # (R, C, H, W)
    dev = generator.device
    fake = augmenter.sample(x.repeat_interleave(styles, dim=0).to(dev), generator).float().cpu()
    fake = fake.view(len(x), styles, *x.shape[1:])  # (R, S, C, H, W)
    return torch.cat([x[:, None].cpu(), fake], dim=1)


def save_sample_grid(path: str | Path, augmenter: Augmenter, sources: torch.Tensor, row_labels: list[str],
                     generator: torch.Generator, styles: int = 8, title: str | None = None) -> Path:
    """Draw `sample_grid` with matplotlib and write it as a PNG; returns the path."""
    # A bare Figure renders with Agg and leaves pyplot's global state (and backend) alone.
    from matplotlib.figure import Figure

    grid = sample_grid(augmenter, sources, generator, styles)  # (R, 1 + S, C, H, W)
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
