"""Graph-cut refinement of a 2D slice with scribbles as hard seeds (PyMaxflow).

Arrays are ``(H, W)`` slices; ``spacing`` is the two pixel sizes in that axis
order (``None`` = 1.0), used relative to the smaller one. Scribbles are
``uint8``: 0 = none, 1 = foreground, 2 = background.

Both functions minimise the binary energy of Boykov & Jolly (2001)

.. math::

    E(L) = \\sum_p U_p(L_p)
         + λ \\sum_{(p, q) \\in N} [L_p \\ne L_q]\\,
           \\frac{\\exp(-(I_p - I_q)^2 / 2σ^2)}{\\lVert p - q \\rVert_s}

exactly with one max-flow / min-cut, over the 8-neighbourhood (or the
4-neighbourhood, ``connectivity=4``), with ``σ`` the standard deviation of the
intensity differences between neighbours when not given (and weight 1 for
every pair if the slice is flat). Scribbled pixels are tied to their terminal
by an infinite capacity (:data:`HARD`), so they keep their label.

- :func:`graphcut_refine`: the unaries come from the CNN probability,
  ``U_p(fg) = -log P_p`` and ``U_p(bg) = -log(1 - P_p)``, with ``P`` clipped to
  [1e-6, 1 - 1e-6]; the contrast term is computed on ``image`` (``P`` if None).
  This is the "Graph Cut" refinement baseline of the UGIR paper.
- :func:`graphcut_from_scratch`: no CNN; ``U_p(l) = -log h_l(I_p)`` with
  ``h_l`` the normalised intensity histogram (``bins`` bins over the slice's
  intensity range, add-one smoothed) of the pixels scribbled ``l``. A label
  without any scribble gets a flat histogram; without any scribble at all the
  result is empty (nothing marks an object).

References
----------
.. [1] Boykov Y, Jolly M-P. Interactive graph cuts for optimal boundary &
   region segmentation of objects in N-D images. ICCV 2001.
.. [2] Boykov Y, Kolmogorov V. An experimental comparison of min-cut/max-flow
   algorithms for energy minimization in vision. IEEE TPAMI 26(9), 2004.
"""

from __future__ import annotations

import numpy as np

from segrefine.errors import InputError
from segrefine.refine.levelset import BACKGROUND, FOREGROUND, relative_spacing
from segrefine.validate import as_number, as_probability, as_scribbles, as_slice, renamed

__all__ = ["graphcut_from_scratch", "graphcut_refine"]

HARD = 1e9  # capacity tying a scribbled pixel to its terminal ("infinite")
P_CLIP = 1e-6


def _check_connectivity(connectivity) -> int:
    if isinstance(connectivity, bool) or connectivity not in (4, 8):
        raise InputError(f"`connectivity` must be 4 or 8, got {connectivity!r}")
    return int(connectivity)


def pairwise_weights(image: np.ndarray, *, spacing=None, sigma=None, connectivity: int = 8):
    """Contrast-sensitive boundary weights for each neighbour direction.

    Parameters
    ----------
    image : (H, W) ndarray
        Intensities.
    spacing : pair of float, optional
        Pixel size per axis; distances are relative to the smaller one.
    sigma : float, optional
        σ of the contrast term; ``None`` = the standard deviation of all
        neighbour differences.
    connectivity : {4, 8}
        Neighbourhood.

    Returns
    -------
    list of ((di, dj), (H, W) ndarray)
        For each forward offset, ``w[i, j] = exp(-(I[i, j] - I[i+di, j+dj])^2 / 2σ^2)
        / dist`` (0 where the neighbour falls outside the slice).
    """
    img = as_slice(image, "image")
    connectivity = _check_connectivity(connectivity)
    hy, hx = relative_spacing(spacing)
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    diffs = []
    for di, dj in offsets:
        d = np.zeros_like(img)
        valid = np.zeros(img.shape, bool)
        rows = slice(0, img.shape[0] - di)
        cols = slice(max(0, -dj), img.shape[1] - max(0, dj))
        rows_n = slice(di, img.shape[0])
        cols_n = slice(max(0, dj), img.shape[1] - max(0, -dj))
        d[rows, cols] = img[rows, cols] - img[rows_n, cols_n]
        valid[rows, cols] = True
        diffs.append((d, valid))
    if sigma is None:
        all_d = np.concatenate([d[v] for d, v in diffs])
        sigma = float(all_d.std()) if all_d.size else 0.0
    else:
        sigma = as_number(sigma, "sigma", low=0.0, low_open=True)
    out = []
    for (di, dj), (d, valid) in zip(offsets, diffs):
        dist = float(np.hypot(di * hy, dj * hx))
        if sigma > 0:
            w = np.exp(-(d**2) / (2.0 * sigma**2)) / dist
        else:
            w = np.full(img.shape, 1.0 / dist)
        w[~valid] = 0.0
        out.append(((di, dj), w))
    return out


def _cut(cost_fg: np.ndarray, cost_bg: np.ndarray, scribbles: np.ndarray, pairs, smoothness: float,
         keep_scribbles: bool = True):
    """Min cut with source = foreground; returns the foreground mask (the scribbled pixels
    set to their label unless ``keep_scribbles`` is False)."""
    import maxflow

    cap_source = cost_bg.copy()  # paid when the pixel ends on the sink (background) side
    cap_sink = cost_fg.copy()  # paid when it ends on the source (foreground) side
    fg, bg = scribbles == FOREGROUND, scribbles == BACKGROUND
    cap_source[fg], cap_sink[fg] = HARD, 0.0
    cap_source[bg], cap_sink[bg] = 0.0, HARD
    # only the difference of the two unaries matters: keep capacities small and >= 0
    low = np.minimum(cap_source, cap_sink)
    cap_source -= low
    cap_sink -= low

    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(cost_fg.shape)
    if smoothness > 0:
        for (di, dj), w in pairs:
            structure = np.zeros((3, 3))
            structure[1 + di, 1 + dj] = 1.0
            graph.add_grid_edges(nodes, weights=smoothness * w, structure=structure, symmetric=True)
    graph.add_grid_tedges(nodes, cap_source, cap_sink)
    graph.maxflow()
    mask = ~graph.get_grid_segments(nodes)  # True = sink side = background
    if keep_scribbles:
        mask[fg], mask[bg] = True, False
    return mask


def graphcut_refine(
    prob: np.ndarray,
    scribbles: np.ndarray,
    *,
    image: np.ndarray | None = None,
    spacing=None,
    smoothness: float = 5.0,
    sigma: float | None = None,
    connectivity: int = 8,
    keep_scribbles: bool = True,
    lam: float | None = None,
) -> np.ndarray:
    """Refine the CNN segmentation of a slice with a graph cut and the scribbles.

    Parameters
    ----------
    prob : (H, W) ndarray
        Foreground probability ``P`` in [0, 1].
    scribbles : (H, W) ndarray of uint8
        0 = none, 1 = foreground, 2 = background; hard constraints.
    image : (H, W) ndarray, optional
        Intensities for the contrast term; ``None`` = ``prob``.
    spacing : pair of float, optional
        Pixel size per axis (``None`` = 1.0).
    smoothness : float, default 5.0
        Weight λ of the boundary term against the unaries ``-log P``,
        ``-log(1 - P)``.
    sigma : float, optional
        σ of the contrast term; ``None`` = std of the neighbour differences.
    connectivity : {8, 4}
        Neighbourhood of the pairwise term.
    keep_scribbles : bool, default True
        Set the scribbled pixels to their label at the end. False returns the
        cut itself (to check that the hard seeds held; they are tied to their
        terminal with capacity 1e9).

    Returns
    -------
    (H, W) ndarray of bool
        The minimum cut's foreground: True on every foreground scribble, False
        on every background scribble.

    Raises
    ------
    InputError
        On shape mismatches, ``prob`` outside [0, 1], non-finite values, labels
        other than 0/1/2 or bad options.

    Notes
    -----
    See the module docstring for the energy. ``P`` is clipped to
    [1e-6, 1 - 1e-6] so that both unaries stay finite.
    """
    P = as_probability(prob, "prob")
    scr = as_scribbles(scribbles, P.shape, ref="prob")
    img = P if image is None else as_slice(image, "image", shape=P.shape, ref="prob")
    smoothness = as_number(renamed(lam, "lam", "smoothness", smoothness), "smoothness", low=0.0)
    pairs = pairwise_weights(img, spacing=spacing, sigma=sigma, connectivity=connectivity)
    Pc = np.clip(P, P_CLIP, 1.0 - P_CLIP)
    return _cut(-np.log(Pc), -np.log1p(-Pc), scr, pairs, smoothness, keep_scribbles=bool(keep_scribbles))


def intensity_unaries(image: np.ndarray, scribbles: np.ndarray, *, bins: int = 32):
    """``(-log h_F(I), -log h_B(I))``: histogram likelihoods learnt from the scribbles.

    Intensities are binned over the slice's range into ``bins`` bins; each
    histogram is add-one smoothed and normalised. A label with no scribble gets
    a flat histogram (cost ``log bins`` everywhere).
    """
    img = as_slice(image, "image")
    scr = as_scribbles(scribbles, img.shape)
    bins = as_number(bins, "bins", low=2, integer=True)
    lo, hi = float(img.min()), float(img.max())
    scale = (bins / (hi - lo)) if hi > lo else 0.0
    index = np.clip(((img - lo) * scale).astype(np.int64), 0, bins - 1)
    costs = []
    for label in (FOREGROUND, BACKGROUND):
        counts = np.bincount(index[scr == label], minlength=bins).astype(np.float64)
        hist = (counts + 1.0) / (counts.sum() + bins)
        costs.append(-np.log(hist)[index])
    return costs[0], costs[1]


def graphcut_from_scratch(
    image: np.ndarray,
    scribbles: np.ndarray,
    *,
    spacing=None,
    smoothness: float = 5.0,
    bins: int = 32,
    sigma: float | None = None,
    connectivity: int = 8,
    lam: float | None = None,
) -> np.ndarray:
    """Segment a slice from the scribbles alone (no CNN) with a graph cut.

    Parameters
    ----------
    image : (H, W) ndarray
        Intensities.
    scribbles : (H, W) ndarray of uint8
        0 = none, 1 = foreground, 2 = background; hard constraints and the
        samples of the intensity models.
    spacing : pair of float, optional
        Pixel size per axis (``None`` = 1.0).
    smoothness : float, default 5.0
        Weight λ of the boundary term.
    bins : int, default 32
        Number of histogram bins over the slice's intensity range.
    sigma : float, optional
        σ of the contrast term; ``None`` = std of the neighbour differences.
    connectivity : {8, 4}
        Neighbourhood of the pairwise term.

    Returns
    -------
    (H, W) ndarray of bool
        Foreground mask; all False when there is no scribble at all.

    Raises
    ------
    InputError
        On shape mismatches, non-finite values, labels other than 0/1/2 or bad
        options.
    """
    img = as_slice(image, "image")
    scr = as_scribbles(scribbles, img.shape)
    smoothness = as_number(renamed(lam, "lam", "smoothness", smoothness), "smoothness", low=0.0)
    cost_fg, cost_bg = intensity_unaries(img, scr, bins=bins)
    pairs = pairwise_weights(img, spacing=spacing, sigma=sigma, connectivity=connectivity)
    if not scr.any():
        return np.zeros(img.shape, bool)
    return _cut(cost_fg, cost_bg, scr, pairs, smoothness)
