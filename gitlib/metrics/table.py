"""The per-class table (class, train_count, accuracy, ekld, consistency): Parquet, MLflow and the CLI."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

COLUMNS = ("class", "train_count", "accuracy", "ekld", "consistency")


def per_class_table(train_counts: np.ndarray, accuracy: np.ndarray, ekld: np.ndarray,
                    consistency: np.ndarray) -> pa.Table:
    """One row per class; NaN where a value is undefined (no test images, no nuisance)."""
    k = len(train_counts)
    for name, arr in (("accuracy", accuracy), ("ekld", ekld), ("consistency", consistency)):
        if len(arr) != k:
            raise ValueError(f"{name} has {len(arr)} values for {k} classes")
    return pa.table({
        "class": pa.array(np.arange(k, dtype=np.int64)),
        "train_count": pa.array(np.asarray(train_counts, dtype=np.int64)),
        "accuracy": pa.array(np.asarray(accuracy, dtype=np.float64)),
        "ekld": pa.array(np.asarray(ekld, dtype=np.float64)),
        "consistency": pa.array(np.asarray(consistency, dtype=np.float64)),
    })


def format_table(table: pa.Table) -> str:
    """Fixed-width text, classes sorted by training count (largest first), for the terminal."""
    rows = sorted(table.to_pylist(), key=lambda r: (-r["train_count"], r["class"]))
    lines = [f"{'class':>5} {'train':>6} {'acc':>6} {'eKLD':>8} {'consist':>7}"]
    for r in rows:
        lines.append(f"{r['class']:>5} {r['train_count']:>6} {r['accuracy']:>6.3f} {r['ekld']:>8.4f} "
                     f"{r['consistency']:>7.3f}")
    return "\n".join(lines)
