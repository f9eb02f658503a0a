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
