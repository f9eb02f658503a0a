"""The simulated user: scribbles and clicks that correct one 2D slice.

Given the current segmentation ``seg`` and the ground truth ``gt`` of a slice
``(H, W)``, :func:`simulate_scribbles` answers the way an annotator would:

1. **Errors.** Under-segmentation ``gt & ~seg`` asks for foreground strokes
   (label 1), over-segmentation ``seg & ~gt`` for background strokes (label 2).
   Each is split into 8-connected components.
2. **Which to mark.** A component is marked when it has at least ``min_size``
   pixels (default 20: smaller slips are not worth a stroke on a
   192x192 slice) and when its depth — the largest Euclidean distance from one
   of its pixels to its outside — is at least ``min_depth`` (default 1.5 pixels:
   one-pixel-wide slivers along the contour cannot be marked without touching
   the right region). Components are taken largest first, at most
   ``max_strokes`` of them (default: all).
3. **Where.** The stroke lies deep inside the component, on its ridge: let
   ``d`` be the component's distance transform and the *core* the pixels with
   ``d >= depth_fraction * max(d)`` (default 0.5). The stroke starts at a core
   skeleton pixel of near-maximal depth (``d >= 0.9 * max`` on the skeleton;
   chosen at random among them) and follows the skeleton both ways, one pixel at
   a time, to the deepest unvisited 8-neighbour (ties at random), for at most
   ``max_length`` pixels in all (default 20). When the straight segment through
   the start along the core's long axis (its principal axis), clipped to the
   core, is longer — a round blob, whose skeleton is a point — that segment is
   the stroke instead. Every stroke pixel is therefore at least
   ``depth_fraction * max(d)`` from the component's border.
4. **Clicks.** ``mode="click"``: one click per marked component at its deepest
   pixel (ties at random), a single pixel or, with ``click_radius`` r > 0, the
   disc of radius r around it clipped to the component.

The random choices use ``numpy.random.default_rng(seed)``: the same inputs and
seed give the same scribbles. Lengths are in pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from segrefine.validate import as_choice, as_mask, as_number

__all__ = ["error_components", "simulate_scribbles"]

FOREGROUND, BACKGROUND = 1, 2
_EIGHT = np.ones((3, 3), bool)
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def error_components(seg: np.ndarray, gt: np.ndarray, *, min_size: int = 20,
                     min_depth: float = 1.5) -> list[tuple[int, np.ndarray]]:
    """The error regions worth a stroke, largest first.

    Returns
    -------
    list of (label, (H, W) bool ndarray)
        ``label`` is 1 (under-segmented: a foreground stroke is needed) or 2
        (over-segmented: a background stroke); see the module docstring for
        ``min_size`` and ``min_depth``.
    """
    seg = as_mask(seg, "seg", ndim=2)
    gt = as_mask(gt, "gt", ndim=2, shape=seg.shape, ref="seg")
    min_size = as_number(min_size, "min_size", low=1, integer=True)
    min_depth = as_number(min_depth, "min_depth", low=0.0)
    return _components(seg, gt, min_size, min_depth)


def _components(seg, gt, min_size, min_depth):
    found = []
    for label, error in ((FOREGROUND, gt & ~seg), (BACKGROUND, seg & ~gt)):
        labels, n = ndimage.label(error, structure=_EIGHT)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        for k in range(1, n + 1):
            if sizes[k] < min_size:
                continue
            component = labels == k
            found.append((int(sizes[k]), label, k, component))
    found.sort(key=lambda item: (-item[0], item[1], item[2]))
    kept = []
    for _, label, _, component in found:
        depth = _depth(component)
        if depth.max() >= min_depth:
            kept.append((label, component, depth))
    return kept


def _depth(component: np.ndarray) -> np.ndarray:
    """Distance of each pixel to the component's outside (the slice border counts as outside)."""
    padded = np.pad(component, 1)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> tuple[int, int]:
    row = candidates[rng.integers(len(candidates))] if len(candidates) > 1 else candidates[0]
    return int(row[0]), int(row[1])


def _walk(ridge, depth, start, max_length, rng):
    """Follow ``ridge`` from ``start`` both ways to the deepest unvisited neighbour."""
    path = [start]
    visited = {start}
    height, width = ridge.shape
    budget = max_length - 1
    for side in range(2):
        steps = budget // 2 if side == 0 else budget - (len(path) - 1)
        current = start
        for _ in range(steps):
            options = []
            for di, dj in _NEIGHBOURS:
                i, j = current[0] + di, current[1] + dj
                if 0 <= i < height and 0 <= j < width and ridge[i, j] and (i, j) not in visited:
                    options.append((i, j))
            if not options:
                break
            best = max(depth[o] for o in options)
            options = np.array([o for o in options if depth[o] == best])
            current = _pick(rng, options)
            visited.add(current)
            path.append(current)
    return path


def _axis_segment(core, start, max_length):
    """The 8-connected line of ``core`` pixels through ``start`` along its principal axis."""
    rows, cols = np.nonzero(core)
    coords = np.stack([rows, cols], axis=1).astype(np.float64)
    centred = coords - coords.mean(axis=0)
    if len(coords) > 1:
        _, vectors = np.linalg.eigh(centred.T @ centred)
        direction = vectors[:, -1]
    else:
        direction = np.array([0.0, 1.0])
    direction = direction / np.abs(direction).max()  # one pixel per step along the main axis
    path = [start]
    for side in range(2):
        budget = (max_length - 1) // 2 if side == 0 else max_length - len(path)
        sign = -1.0 if side == 0 else 1.0
        for t in range(1, budget + 1):
            i = int(np.rint(start[0] + sign * t * direction[0]))
            j = int(np.rint(start[1] + sign * t * direction[1]))
            if not (0 <= i < core.shape[0] and 0 <= j < core.shape[1]) or not core[i, j]:
                break
            path.append((i, j))
    return path


def _stroke(component, depth, *, depth_fraction, max_length, rng):
    from skimage.morphology import skeletonize

    core = depth >= depth_fraction * depth.max()
    ridge = skeletonize(core) & core
    if not ridge.any():
        ridge = depth == depth.max()
    top = depth[ridge].max()
    start = _pick(rng, np.argwhere(ridge & (depth >= 0.9 * top)))
    path = _walk(ridge, depth, start, max_length, rng)
    segment = _axis_segment(core, start, max_length)
    return segment if len(segment) > len(path) else path


def _click(component, depth, *, click_radius, rng):
    start = _pick(rng, np.argwhere(depth == depth.max()))
    if click_radius == 0:
        return [start]
    rows, cols = np.ogrid[: component.shape[0], : component.shape[1]]
    disc = (rows - start[0]) ** 2 + (cols - start[1]) ** 2 <= click_radius**2
    return [tuple(p) for p in np.argwhere(disc & component)]


def simulate_scribbles(
    seg: np.ndarray,
    gt: np.ndarray,
    *,
    seed: int = 0,
    min_size: int = 20,
    mode: str = "scribble",
    max_strokes: int | None = None,
    min_depth: float = 1.5,
    depth_fraction: float = 0.5,
    max_length: int = 20,
    click_radius: int = 0,
) -> np.ndarray:
    """Scribbles (or clicks) a simulated user draws to correct ``seg`` towards ``gt``.

    Parameters
    ----------
    seg : (H, W) ndarray
        Current segmentation (bool or 0/1).
    gt : (H, W) ndarray
        Ground truth (bool or 0/1), same shape.
    seed : int, default 0
        Seed of the random choices (start pixel among near-deepest ones, ties).
    min_size : int, default 20
        Smallest error component (pixels) that gets a stroke.
    mode : {"scribble", "click"}
        A stroke along each component's ridge, or one click at its deepest pixel.
    max_strokes : int, optional
        Mark at most this many components, largest first; ``None`` = all.
    min_depth : float, default 1.5
        Skip components thinner than this (largest inner distance, pixels).
    depth_fraction : float, default 0.5
        Stroke pixels have an inner distance of at least this fraction of the
        component's largest one.
    max_length : int, default 20
        Largest number of pixels of one stroke.
    click_radius : int, default 0
        Radius of a click's disc (0 = one pixel).

    Returns
    -------
    (H, W) ndarray of uint8
        0 = none, 1 = foreground stroke, 2 = background stroke; all zero when
        nothing needs fixing.

    Raises
    ------
    InputError
        On non-binary or differently shaped masks, an unknown ``mode`` or
        out-of-range options.

    Notes
    -----
    See the module docstring for the procedure. Inputs are not modified.
    """
    seg = as_mask(seg, "seg", ndim=2)
    gt = as_mask(gt, "gt", ndim=2, shape=seg.shape, ref="seg")
    as_number(seed, "seed", low=0, integer=True)
    as_choice(mode, "mode", ("scribble", "click"))
    min_size = as_number(min_size, "min_size", low=1, integer=True)
    max_strokes = as_number(max_strokes, "max_strokes", low=0, integer=True, allow_none=True)
    min_depth = as_number(min_depth, "min_depth", low=0.0)
    depth_fraction = as_number(depth_fraction, "depth_fraction", low=0.0, high=1.0)
    max_length = as_number(max_length, "max_length", low=1, integer=True)
    click_radius = as_number(click_radius, "click_radius", low=0, integer=True)

    rng = np.random.default_rng(int(seed))
    scribbles = np.zeros(seg.shape, np.uint8)
    components = _components(seg, gt, min_size, min_depth)
    if max_strokes is not None:
        components = components[:max_strokes]
    for label, component, depth in components:
        if mode == "click":
            pixels = _click(component, depth, click_radius=click_radius, rng=rng)
        else:
            pixels = _stroke(component, depth, depth_fraction=depth_fraction,
                             max_length=max_length, rng=rng)
        rows, cols = zip(*pixels)
        scribbles[list(rows), list(cols)] = label
    return scribbles
