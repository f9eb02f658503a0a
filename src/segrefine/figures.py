"""PNG figures a person can look at (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segrefine.io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, *, dpi: int = 100) -> Path:
    """Lay out ``fig``, write it as PNG atomically, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    _plt().close(fig)
    return path


def best_slice(label: np.ndarray, axis: int = 2) -> int:
    """Index of the slice with the most foreground (the middle one if empty)."""
    counts = np.moveaxis(label > 0, axis, 0).reshape(label.shape[axis], -1).sum(1)
    return int(counts.argmax()) if counts.any() else label.shape[axis] // 2


def prediction_figure(path: Path, rows: list[dict], *, axis: int = 2, title: str = "") -> Path:
    """One row per case: image, prediction (and reference) contours, uncertainty.

    ``rows``: dicts with ``name``, ``image``, ``label``, ``uncertainty`` and
    optional ``reference``, ``slice``.
    """
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        k = row.get("slice", best_slice(row.get("reference", row["label"]), axis))
        img = np.take(row["image"], k, axis=axis).T
        lab = np.take(row["label"], k, axis=axis).T
        unc = np.take(row["uncertainty"], k, axis=axis).T
        axes[r, 0].imshow(img, cmap="gray", origin="lower")
        axes[r, 0].set_title(f"{row['name']} slice {k}")
        axes[r, 1].imshow(img, cmap="gray", origin="lower")
        axes[r, 1].contour(lab > 0, levels=[0.5], colors="r", linewidths=1)
        if "reference" in row:
            ref = np.take(row["reference"], k, axis=axis).T
            axes[r, 1].contour(ref > 0, levels=[0.5], colors="g", linewidths=1)
            axes[r, 1].set_title("prediction (red), reference (green)")
        else:
            axes[r, 1].set_title("prediction")
        im = axes[r, 2].imshow(unc, cmap="hot", origin="lower")
        axes[r, 2].set_title("uncertainty")
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046)
        for a in axes[r]:
            a.axis("off")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
