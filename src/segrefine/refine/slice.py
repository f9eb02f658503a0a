"""One entry point for refining a 2D slice: the methods, their parameter presets, painting.

``refine_slice(method, image, prob, init, scribbles, spacing=..., preset=...)`` is
what the session, the volume refiner, the simulated user and the benchmarks call.

Methods (:data:`REFINE_METHODS`):

- ``"idrlse"``: I-DRLSE (:func:`segrefine.refine.levelset.idrlse`);
- ``"graphcut"``: Graph Cut on the CNN probability
  (:func:`segrefine.refine.graphcut.graphcut_refine`);
- ``"rnet"``: the R-Net baseline (:func:`segrefine.refine.rnet.rnet_refine`);
- ``"paint"``: painting, the baseline every refinement must beat: the initial
  mask with the scribbled pixels set to their label (foreground strokes added,
  background strokes removed), nothing else changed.

Presets (:data:`PRESETS`) are named parameter sets per method; a method a preset
does not mention runs with its function defaults. :data:`DEFAULT_PRESET` is the
one the CLI, the web app, :class:`segrefine.session.Session` and
:func:`segrefine.refine.volume.refine_volume` use unless told otherwise; it was
chosen on the hippocampus ``val`` split (docs/tuning.md).
"""

from __future__ import annotations

import numpy as np

from segrefine.errors import InputError

__all__ = ["DEFAULT_PRESET", "PRESETS", "REFINE_METHODS", "paint", "preset_params", "refine_slice"]

REFINE_METHODS = ("idrlse", "graphcut", "rnet", "paint")

# Parameter sets of the refinement methods.
# "paper": the function defaults (UGIR's I-DRLSE values α 0.1, β 0.5, λ 0.3,
#   μ 0.005, D 4 pixels, made for 192x192 fetal brain slices; Graph Cut λ 5).
# "hippocampus": the earlier grid search on the hippocampus `val` split
#   (D 1.5 px, β 1.0, dt 0.5, ε 2.0; Graph Cut λ 10), lengths in pixels.
# "default": chosen on the hippocampus `val` split (docs/tuning.md) with three
#   stroke styles: the paper's user term, D 1 px (growing to a tenth of the
#   structure's radius on larger structures, 4 px on a fetal brain of radius
#   40 px, the paper's value there) divided by the strokes' width (a wide brush
#   has painted the region already), β 2, α 0.1, dt 0.5, ε 2; Graph Cut λ 10.
PRESETS: dict[str, dict[str, dict]] = {
    "default": {"idrlse": {"user_term": "paper", "D": 1.0, "D_rel": 0.1, "reach_by_width": True, "beta": 2.0,
                           "alpha": 0.1, "dt": 0.5, "epsilon": 2.0},
                "graphcut": {"smoothness": 10.0}},
    "paper": {},
    "hippocampus": {"idrlse": {"D": 1.5, "beta": 1.0, "dt": 0.5, "epsilon": 2.0}, "graphcut": {"smoothness": 10.0}},
}
DEFAULT_PRESET = "default"


def preset_params(preset: str, method: str) -> dict:
    """The keyword arguments ``preset`` gives ``method`` (a copy; ``{}`` = function defaults)."""
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return dict(PRESETS[preset].get(method, {}))


def paint(init: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """Painting: ``init`` with foreground scribbles set True and background ones False."""
    from segrefine.validate import as_mask, as_scribbles

    scr = as_scribbles(scribbles, np.shape(scribbles))
    mask = as_mask(init, "init", shape=scr.shape, ref="scribbles")
    mask[scr == 1] = True
    mask[scr == 2] = False
    return mask


def _violations(mask: np.ndarray, scribbles: np.ndarray) -> int:
    scr = np.asarray(scribbles)
    return int(np.count_nonzero((scr == 1) & ~mask) + np.count_nonzero((scr == 2) & mask))


def refine_slice(method: str, image: np.ndarray, prob: np.ndarray, init: np.ndarray,
                 scribbles: np.ndarray, *, spacing=None, preset: str = DEFAULT_PRESET,
                 info: dict | None = None) -> np.ndarray:
    """Refine one slice with ``method`` and the parameters of ``preset``; bool mask ``(H, W)``.

    ``image``, ``prob`` (in [0, 1]), ``init`` (binary) and ``scribbles`` (0 none, 1
    foreground, 2 background) are ``(H, W)`` arrays; ``spacing`` the two pixel sizes
    in that order (``None`` = 1.0). The inputs are not modified. Every method sets
    the scribbled pixels to their label at the end; when ``info`` (a dict) is given,
    ``info["scribbles_violated"]`` receives how many scribbled pixels the method's own
    output had on the wrong side *before* that overwrite (``None`` for ``paint``,
    which is the overwrite).
    """
    if method not in REFINE_METHODS:
        raise InputError(f"refine method must be one of {', '.join(REFINE_METHODS)}, got {method!r}")
    params = preset_params(preset, method)
    violated = None
    if method == "idrlse":
        from segrefine.refine.levelset import idrlse

        mask, details = idrlse(prob, scribbles, init=init, image=image, spacing=spacing, **params)
        violated = details["scribbles_violated"]
    elif method in ("graphcut", "rnet"):
        if method == "graphcut":
            from segrefine.refine.graphcut import graphcut_refine

            mask = graphcut_refine(prob, scribbles, image=image, spacing=spacing, keep_scribbles=False, **params)
        else:
            from segrefine.refine.rnet import rnet_refine

            mask = rnet_refine(image, prob, scribbles, spacing=spacing, keep_scribbles=False, **params)
        violated = _violations(mask, scribbles)
        mask = np.array(mask, dtype=bool)
        mask[np.asarray(scribbles) == 1] = True
        mask[np.asarray(scribbles) == 2] = False
    else:
        mask = paint(init, scribbles)
    if info is not None:
        info["scribbles_violated"] = violated
    return np.asarray(mask, dtype=bool)
