"""Figures written next to results and logged as artifacts (matplotlib, Agg backend, no display)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa


def ekld_vs_class_size(per_class: pa.Table, path: str | Path, spearman: float | None = None,
                       title: str = "") -> Path:
    """Scatter of eKLD against training class size (log x), each point labelled with its class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(per_class.column("train_count").to_numpy(), dtype=np.float64)
    ekld = np.asarray(per_class.column("ekld").to_numpy(zero_copy_only=False), dtype=np.float64)
    classes = per_class.column("class").to_pylist()
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    ok = np.isfinite(ekld) & (counts > 0)
    ax.scatter(counts[ok], ekld[ok], s=22, color="tab:blue")
    for c, n, e in zip(classes, counts, ekld, strict=True):
        if math.isfinite(e) and n > 0:
            ax.annotate(str(c), (n, e), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("training images in class")
    ax.set_ylabel("eKLD")
    rho = "n/a" if spearman is None or not math.isfinite(spearman) else f"{spearman:.2f}"
    ax.set_title(f"{title + ': ' if title else ''}eKLD vs class size (Spearman {rho})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
