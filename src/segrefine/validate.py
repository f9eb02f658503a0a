"""Input checks shared by the refinement code: they raise InputError, never assert."""

from __future__ import annotations

import numpy as np

from segrefine.errors import InputError


def binary_mask(mask, name: str) -> np.ndarray:
    """``mask`` as a boolean copy; it must hold only 0/1 (or bools)."""
    m = np.asarray(mask)
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m):
            raise InputError(f"`{name}` must be a binary mask, got dtype {m.dtype}")
        values = np.unique(m)
        extra = values[~np.isin(values, (0, 1))]
        if extra.size:
            shown = ", ".join(f"{v:g}" for v in extra[:5].tolist())
            raise InputError(f"`{name}` must be a binary mask holding 0 and 1, got {shown}")
    return m.astype(bool)


def image_map(arr, name: str, shape: tuple, *, unit_interval: bool = False) -> np.ndarray:
    """A per-voxel map (probability, uncertainty) as float32: it must have the image's ``shape``
    and finite values, and with ``unit_interval`` lie in [0, 1]. ``name`` is how the error
    names it (an argument or a file)."""
    a = np.asarray(arr, np.float32)
    if a.shape != tuple(shape):
        raise InputError(f"{name} shape {a.shape} differs from the image's {tuple(shape)}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} holds NaN or inf values")
    if unit_interval and a.size and (a.min() < 0 or a.max() > 1):
        raise InputError(f"{name} values must lie in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
    return a
