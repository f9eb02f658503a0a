"""Intensity normalisation and slice handling shared by training and prediction.

Slices are taken along ``axis`` of an ``(I, J, K)`` volume and returned as
``(n, H, W)`` with the other two axes in their original order.
"""

from __future__ import annotations

import numpy as np


def normalise(image: np.ndarray) -> np.ndarray:
    """Z-score over the whole volume (float32); a constant volume becomes zeros."""
    image = np.asarray(image, dtype=np.float32)
    mean = float(image.mean())
    std = float(image.std())
    return ((image - mean) / (std if std > 1e-8 else 1.0)).astype(np.float32)


def to_slices(volume: np.ndarray, axis: int = 2) -> np.ndarray:
    """``(I, J, K)`` -> ``(n, H, W)`` slices along ``axis``."""
    if axis not in (0, 1, 2, -1, -2, -3):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    return np.moveaxis(volume, axis, 0)


def from_slices(slices: np.ndarray, axis: int = 2) -> np.ndarray:
    """Inverse of :func:`to_slices`: ``(n, H, W)`` -> ``(I, J, K)``."""
    return np.moveaxis(slices, 0, axis)


def pad_to_multiple(slices: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Zero-pad ``(n, H, W)`` so H and W are multiples of ``multiple`` (centred).

    Returns the padded array and the crop that undoes it.
    """
    _, h, w = slices.shape
    ph = (-h) % multiple
    pw = (-w) % multiple
    top, left = ph // 2, pw // 2
    padded = np.pad(slices, ((0, 0), (top, ph - top), (left, pw - left)))
    return padded, (slice(top, top + h), slice(left, left + w))
