"""Generalised geodesic distance transform by raster scanning (numba).

Arrays are a 2D slice ``(H, W)`` or a 3D volume ``(I, J, K)``; ``spacing`` is one
number per axis in the same order (``None`` = 1.0 for every axis), in whatever
unit the caller uses (mm for volumes read with :mod:`segrefine.io`).

The distance from a pixel ``x`` to the seed set ``S`` is the length of the
shortest path to ``S`` on the 8-connected (2D) or 26-connected (3D) pixel graph
whose edge between neighbours ``p`` and ``q`` costs

.. math::

    c(p, q) = \\sqrt{(1 - \\lambda)\\, \\lVert p - q \\rVert_s^2
                     + \\lambda\\, (I(p) - I(q))^2}

with :math:`\\lVert\\cdot\\rVert_s` the Euclidean length scaled by the spacing.
``gradient_weight`` (λ in the formula above) = 0 gives a chamfer approximation of the Euclidean distance,
λ = 1 a purely intensity-based distance (zero inside a flat region). This is
the local distance of GeodisTK's ``geodesic2d_raster_scan(I, S, lamb, iter)``
and of FastGeodis.

Algorithm: the raster scan of Criminisi et al. (GeoS) as written in GeodisTK.
One *iteration* is a forward pass (rows top to bottom, left to right, each pixel
relaxed from its already visited neighbours: 4 in 2D, 13 in 3D) followed by a
backward pass in the reverse order. Every iteration can only lower distances,
and the fixed point is the exact shortest-path distance on the graph above;
a few iterations are enough unless geodesic paths wind around obstacles.

Defaults: 2 iterations for a 2D slice (GeodisTK's and UGIR's setting), 4 for a
3D volume (paths have more directions to turn in; FastGeodis's examples use 2
to 4). Measured accuracy against an exact Dijkstra on the same graph is in
``tests/test_geodesic.py``.

Empty seed set: the distance to nothing is defined as ``+inf`` everywhere (an
array filled with ``np.inf`` is returned); callers that need a finite value
(I-DRLSE clips the distance at ``D``) handle it themselves.

References
----------
.. [1] Criminisi A, Sharp T, Blake A. GeoS: Geodesic image segmentation. ECCV 2008.
.. [2] Wang G et al. DeepIGeoS. IEEE TPAMI 41(7), 2019 (GeodisTK).
.. [3] Asad M, Dorent R, Vercauteren T. FastGeodis. JOSS 7(79), 2022.
"""

from __future__ import annotations

import numba
import numpy as np

from segrefine.validate import as_array, as_number, as_spacing, renamed

__all__ = ["geodesic_distance", "geodesic_distance_numpy"]

# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _check_inputs(image, seeds, spacing, gradient_weight, iterations):
    img = as_array(image, "image", ndim=(2, 3), dtype=np.float64)
    seeds = as_array(seeds, "seeds", ndim=img.ndim, shape=img.shape, finite=False)
    sp = as_spacing(spacing, img.ndim)
    gradient_weight = as_number(gradient_weight, "gradient_weight", low=0.0, high=1.0)
    default_iterations = 2 if img.ndim == 2 else 4
    iterations = as_number(iterations, "iterations", low=1, integer=True, allow_none=True)
    return (np.ascontiguousarray(img), seeds != 0, sp, gradient_weight,
            default_iterations if iterations is None else iterations)


# ---------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------


@numba.njit(cache=True)
def _raster_2d(img, dist, sy, sx, gradient_weight, iterations):
    height, width = img.shape
    inf = np.inf
    # work on a copy padded with one ring of +inf so the scans need no bounds checks;
    # edge costs towards the 4 "earlier" neighbours, +inf where the neighbour is padding
    d = np.full((height + 2, width + 2), inf)
    c_left = np.full((height + 2, width + 2), inf)  # (h, w-1) -> (h, w)
    c_up = np.full((height + 2, width + 2), inf)  # (h-1, w) -> (h, w)
    c_ul = np.full((height + 2, width + 2), inf)  # (h-1, w-1) -> (h, w)
    c_ur = np.full((height + 2, width + 2), inf)  # (h-1, w+1) -> (h, w)
    e_h = (1.0 - gradient_weight) * sx * sx
    e_v = (1.0 - gradient_weight) * sy * sy
    e_d = (1.0 - gradient_weight) * (sy * sy + sx * sx)
    for h in range(height):
        for w in range(width):
            d[h + 1, w + 1] = dist[h, w]
            v = img[h, w]
            if w > 0:
                t = v - img[h, w - 1]
                c_left[h + 1, w + 1] = np.sqrt(e_h + gradient_weight * t * t)
            if h > 0:
                t = v - img[h - 1, w]
                c_up[h + 1, w + 1] = np.sqrt(e_v + gradient_weight * t * t)
                if w > 0:
                    t = v - img[h - 1, w - 1]
                    c_ul[h + 1, w + 1] = np.sqrt(e_d + gradient_weight * t * t)
                if w < width - 1:
                    t = v - img[h - 1, w + 1]
                    c_ur[h + 1, w + 1] = np.sqrt(e_d + gradient_weight * t * t)
    for _ in range(iterations):
        for h in range(1, height + 1):
            for w in range(1, width + 1):
                best = d[h, w]
                cand = d[h - 1, w - 1] + c_ul[h, w]
                best = min(best, cand)
                cand = d[h - 1, w] + c_up[h, w]
                best = min(best, cand)
                cand = d[h - 1, w + 1] + c_ur[h, w]
                best = min(best, cand)
                cand = d[h, w - 1] + c_left[h, w]
                best = min(best, cand)
                d[h, w] = best
        for h in range(height, 0, -1):
            for w in range(width, 0, -1):
                best = d[h, w]
                cand = d[h + 1, w + 1] + c_ul[h + 1, w + 1]
                best = min(best, cand)
                cand = d[h + 1, w] + c_up[h + 1, w]
                best = min(best, cand)
                cand = d[h + 1, w - 1] + c_ur[h + 1, w - 1]
                best = min(best, cand)
                cand = d[h, w + 1] + c_left[h, w + 1]
                best = min(best, cand)
                d[h, w] = best
    for h in range(height):
        for w in range(width):
            dist[h, w] = d[h + 1, w + 1]


def _forward_offsets_3d() -> np.ndarray:
    """The 13 neighbours visited before a voxel in (i, j, k) raster order."""
    offs = [
        (a, b, c)
        for a in (-1, 0, 1)
        for b in (-1, 0, 1)
        for c in (-1, 0, 1)
        if a < 0 or (a == 0 and b < 0) or (a == 0 and b == 0 and c < 0)
    ]
    return np.array(offs, dtype=np.int64)


_OFFSETS_3D = _forward_offsets_3d()


@numba.njit(cache=True)
def _raster_3d(img, dist, sp, gradient_weight, iterations, offs):
    ni, nj, nk = img.shape
    m = offs.shape[0]
    e2 = np.empty(m)
    for n in range(m):
        e2[n] = (1.0 - gradient_weight) * (
            (offs[n, 0] * sp[0]) ** 2 + (offs[n, 1] * sp[1]) ** 2 + (offs[n, 2] * sp[2]) ** 2
        )
    for _ in range(iterations):
        for sign in (1, -1):
            for ii in range(ni):
                i = ii if sign == 1 else ni - 1 - ii
                for jj in range(nj):
                    j = jj if sign == 1 else nj - 1 - jj
                    for kk in range(nk):
                        k = kk if sign == 1 else nk - 1 - kk
                        best = dist[i, j, k]
                        v = img[i, j, k]
                        for n in range(m):
                            a = i + sign * offs[n, 0]
                            b = j + sign * offs[n, 1]
                            c = k + sign * offs[n, 2]
                            if a < 0 or a >= ni or b < 0 or b >= nj or c < 0 or c >= nk:
                                continue
                            d = img[a, b, c] - v
                            cand = dist[a, b, c] + np.sqrt(e2[n] + gradient_weight * d * d)
                            best = min(best, cand)
                        dist[i, j, k] = best


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def geodesic_distance(
    image: np.ndarray,
    seeds: np.ndarray,
    *,
    spacing=None,
    gradient_weight: float = 1.0,
    iterations: int | None = None,
    lamb: float | None = None,
) -> np.ndarray:
    """Geodesic distance from every pixel to the seed set (raster scan, numba).

    Parameters
    ----------
    image : (H, W) or (I, J, K) ndarray
        Intensities (any real dtype; used as float64). Not modified.
    seeds : ndarray, same shape as ``image``
        Seed mask; non-zero pixels are seeds (distance 0).
    spacing : sequence of float, optional
        Pixel size, one number per axis in the axis order of ``image``;
        ``None`` = 1.0 for every axis.
    gradient_weight : float, default 1.0
        λ in [0, 1], the weight of the intensity difference against the
        spatial step (0: chamfer Euclidean distance, 1: intensity only).
    iterations : int, optional
        Number of forward + backward raster passes; ``None`` = 2 for a 2D
        slice, 4 for a 3D volume.

    Returns
    -------
    ndarray of float32, same shape as ``image``
        :math:`g(x) = \\min_{\\text{paths } x \\to S} \\sum c(p, q)` with the
        edge cost :math:`c(p, q) = \\sqrt{(1-\\lambda)\\lVert p-q\\rVert_s^2 +
        \\lambda (I(p) - I(q))^2}` over 8- (2D) or 26- (3D) neighbours, as
        approximated by ``iterations`` raster scans. All ``+inf`` if ``seeds``
        is empty.

    Raises
    ------
    InputError
        On a shape mismatch, a non-finite image, bad ``spacing``, ``gradient_weight``
        outside [0, 1] or ``iterations`` < 1.

    Notes
    -----
    The scan is exact once it reaches its fixed point; with few iterations it
    over-estimates distances along paths that must turn back against the scan
    directions. See the module docstring.

    Examples
    --------
    >>> img = np.zeros((5, 5)); s = np.zeros((5, 5), bool); s[0, 0] = True
    >>> float(geodesic_distance(img, s, gradient_weight=0.0)[0, 4])
    4.0
    """
    gradient_weight = renamed(lamb, "lamb", "gradient_weight", gradient_weight)
    img, seed_mask, sp, gradient_weight, iterations = _check_inputs(image, seeds, spacing, gradient_weight,
                                                                    iterations)
    if not seed_mask.any():
        return np.full(img.shape, np.inf, dtype=np.float32)
    dist = np.where(seed_mask, 0.0, np.inf)
    if img.ndim == 2:
        _raster_2d(img, dist, sp[0], sp[1], gradient_weight, iterations)
    else:
        _raster_3d(img, dist, np.asarray(sp), gradient_weight, iterations, _OFFSETS_3D)
    return dist.astype(np.float32)


def _edge_cost(img, sel_p, sel_q, e2, gradient_weight):
    d = img[sel_p] - img[sel_q]
    return np.sqrt(e2 + gradient_weight * d * d)


def _scan_rows_2d(dist, img, sp, gradient_weight, reverse):
    """One forward (or, reversed, backward) pass of the 2D scan, vectorised per row.

    The left-neighbour recursion ``d[w] = min(a[w], d[w-1] + c[w])`` is a
    min-plus prefix scan, solved as ``S + minimum.accumulate(a - S)`` with ``S``
    the running sum of ``c``.
    """
    if reverse:
        dist_v, img_v = dist[::-1, ::-1], img[::-1, ::-1]
    else:
        dist_v, img_v = dist, img
    sy, sx = sp
    e_diag = (1.0 - gradient_weight) * (sy * sy + sx * sx)
    e_vert = (1.0 - gradient_weight) * sy * sy
    e_horz = (1.0 - gradient_weight) * sx * sx
    height, width = img_v.shape
    # cost of the step from (h, w-1) to (h, w), for every row at once; S[h, 0] = 0
    c_left = np.sqrt(e_horz + gradient_weight * np.diff(img_v, axis=1) ** 2)
    run = np.zeros((height, width))
    np.cumsum(c_left, axis=1, out=run[:, 1:])
    c_up = np.sqrt(e_vert + gradient_weight * (img_v[1:] - img_v[:-1]) ** 2)  # (h-1, w) -> (h, w)
    c_ul = np.sqrt(e_diag + gradient_weight * (img_v[1:, 1:] - img_v[:-1, :-1]) ** 2)  # (h-1, w-1)
    c_ur = np.sqrt(e_diag + gradient_weight * (img_v[1:, :-1] - img_v[:-1, 1:]) ** 2)  # (h-1, w+1)
    for h in range(height):
        a = dist_v[h].copy()
        if h > 0:
            prev = dist_v[h - 1]
            np.minimum(a, prev + c_up[h - 1], out=a)
            np.minimum(a[1:], prev[:-1] + c_ul[h - 1], out=a[1:])
            np.minimum(a[:-1], prev[1:] + c_ur[h - 1], out=a[:-1])
        s = run[h]
        dist_v[h] = s + np.minimum.accumulate(a - s)


def _scan_rows_3d(dist, img, sp, gradient_weight, reverse):
    """One pass of the 3D scan: previous slice (9 neighbours) for a whole slice at
    once, then the previous row (3) and the left neighbour per row."""
    if reverse:
        dist_v, img_v = dist[::-1, ::-1, ::-1], img[::-1, ::-1, ::-1]
    else:
        dist_v, img_v = dist, img
    ni, nj, _ = img_v.shape
    s0, s1, s2 = sp
    w1 = 1.0 - gradient_weight
    c_left = np.sqrt(w1 * s2 * s2 + gradient_weight * np.diff(img_v, axis=2) ** 2)
    run = np.zeros(img_v.shape)
    np.cumsum(c_left, axis=2, out=run[:, :, 1:])

    def shifted_min(a, prev, cur_img, prev_img, db, dc, e2):
        # a[b, c] = min(a[b, c], prev[b + db, c + dc] + cost); prev/cur_img are 2D or 1D
        nb = a.shape[0] if a.ndim == 2 else 1
        if a.ndim == 1:
            a, prev, cur_img, prev_img = a[None], prev[None], cur_img[None], prev_img[None]
        nc = a.shape[1]
        bt = slice(max(0, -db), nb - max(0, db))
        bs = slice(max(0, db), nb - max(0, -db))
        ct = slice(max(0, -dc), nc - max(0, dc))
        cs = slice(max(0, dc), nc - max(0, -dc))
        cost = np.sqrt(e2 + gradient_weight * (cur_img[bt, ct] - prev_img[bs, cs]) ** 2)
        np.minimum(a[bt, ct], prev[bs, cs] + cost, out=a[bt, ct])

    for i in range(ni):
        a = dist_v[i].copy()
        if i > 0:
            for db in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    e2 = w1 * (s0 * s0 + (db * s1) ** 2 + (dc * s2) ** 2)
                    shifted_min(a, dist_v[i - 1], img_v[i], img_v[i - 1], db, dc, e2)
        for j in range(nj):
            row = a[j]
            if j > 0:
                for dc in (-1, 0, 1):
                    e2 = w1 * (s1 * s1 + (dc * s2) ** 2)
                    shifted_min(row, a[j - 1], img_v[i, j], img_v[i, j - 1], 0, dc, e2)
            s = run[i, j]
            a[j] = s + np.minimum.accumulate(row - s)
        dist_v[i] = a


def geodesic_distance_numpy(
    image: np.ndarray,
    seeds: np.ndarray,
    *,
    spacing=None,
    gradient_weight: float = 1.0,
    iterations: int | None = None,
    lamb: float | None = None,
) -> np.ndarray:
    """Pure-NumPy reference of :func:`geodesic_distance` (same scan, same result).

    The same forward/backward raster scan, vectorised along the last axis: the
    neighbours in the previous row (and slice) are relaxed with whole-row array
    operations and the dependency on the left neighbour is solved as a
    min-plus prefix scan. Agrees with :func:`geodesic_distance` to float32
    rounding; kept as the speed baseline. Parameters, return value and errors
    as in :func:`geodesic_distance`.
    """
    gradient_weight = renamed(lamb, "lamb", "gradient_weight", gradient_weight)
    img, seed_mask, sp, gradient_weight, iterations = _check_inputs(image, seeds, spacing, gradient_weight,
                                                                    iterations)
    if not seed_mask.any():
        return np.full(img.shape, np.inf, dtype=np.float32)
    dist = np.where(seed_mask, 0.0, np.inf)
    scan = _scan_rows_2d if img.ndim == 2 else _scan_rows_3d
    for _ in range(iterations):
        scan(dist, img, sp, gradient_weight, reverse=False)
        scan(dist, img, sp, gradient_weight, reverse=True)
    return dist.astype(np.float32)
