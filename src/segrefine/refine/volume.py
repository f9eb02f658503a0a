"""Refinement of a whole volume from a scribble volume: each scribbled slice is refined."""

from __future__ import annotations

import numpy as np

from segrefine.errors import InputError
from segrefine.refine.slice import DEFAULT_PRESET, REFINE_METHODS, preset_params, refine_slice
from segrefine.validate import image_map


def refine_volume(image: np.ndarray, prob: np.ndarray, scribbles: np.ndarray, *, init=None,
                  method: str = "idrlse", axis: int = 2, spacing=None,
                  preset: str = DEFAULT_PRESET) -> tuple[np.ndarray, list[int]]:
    """Refine every slice along ``axis`` that holds scribbles; copy the others from ``init``.

    Parameters
    ----------
    image, prob, scribbles : (I, J, K) ndarray
        Intensities, foreground probability in [0, 1], scribbles (0 none, 1 fg, 2 bg).
    init : (I, J, K) ndarray, optional
        Initial segmentation (default ``prob > 0.5``).
    method : str
        One of :data:`segrefine.refine.slice.REFINE_METHODS`.
    axis : int
        Slice axis.
    spacing : sequence of 3 float, optional
        Voxel size per axis (``None`` = 1.0).
    preset : str
        Parameter preset of :data:`segrefine.refine.slice.PRESETS` (default: the
        val-chosen :data:`~segrefine.refine.slice.DEFAULT_PRESET`).

    Returns
    -------
    (uint8 labels (I, J, K), list of refined slice indices)
    """
    from segrefine.preprocess import normalise

    if method not in REFINE_METHODS:
        raise InputError(f"method must be one of {', '.join(REFINE_METHODS)}, got {method!r}")
    preset_params(preset, method)  # an unknown preset fails before any work
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis}")
    prob = image_map(prob, "prob", np.shape(image), unit_interval=True)
    scribbles = np.asarray(scribbles)
    if scribbles.shape != np.shape(image):
        raise InputError(f"scribbles shape {scribbles.shape} differs from the image's {np.shape(image)}")
    values = np.unique(scribbles)
    if not set(values.tolist()) <= {0, 1, 2}:
        raise InputError(f"scribble values must be 0, 1 or 2, got {values.tolist()}")
    out = (prob > 0.5) if init is None else (np.asarray(init) > 0)
    out = out.astype(np.uint8)
    sp = None if spacing is None else tuple(float(s) for i, s in enumerate(spacing) if i != axis)
    norm = normalise(image)
    mv = lambda a: np.moveaxis(a, axis, 0)
    refined = []
    for k in range(image.shape[axis]):
        scr = mv(scribbles)[k]
        if not scr.any():
            continue
        mask = refine_slice(method, mv(norm)[k], mv(prob)[k], mv(out)[k] > 0, scr.astype(np.uint8),
                            spacing=sp, preset=preset)
        mv(out)[k] = mask.astype(np.uint8)
        refined.append(k)
    return out, refined
