"""The simulated user study (UGIR Table 2): strategies, slice decisions and a time model.

A simulated user works through the slices a strategy shows. For each slice it

1. **inspects** it (``inspect_s`` seconds of user time);
2. decides whether it needs refinement: slice Dice against the ground truth
   below ``tolerance`` *and* an error component of at least ``min_error``
   pixels (a real user does not scribble on a one-pixel disagreement);
3. if so, gives scribbles on the current error (the slice-level simulated user
   of :mod:`segrefine.interaction`, ``scribble_s`` seconds per stroke), the
   method refines, and this repeats until the slice reaches the tolerance or
   ``max_rounds`` rounds are used;
4. accepts the slice (``accept_s`` seconds).

Strategies
----------
``ugir``: MG-Net's slices in the default ``gain`` order (expected wrong voxels with the
end prior, :mod:`segrefine.guidance`) within the budget M', showing the neighbours of a
slice that needed refinement next, and stopping when the slices not yet shown are
expected to hold less than 2.25 Dice points; I-DRLSE refinement.
``ugir-nu``: the paper's UGIR: ν order, early stop after 3 (``patience``)
consecutive slices that needed nothing.
``ugir-naive``: the paper's UGIR(*): ν* order, the same early stop.
``ugir-paint``: ``ugir``'s slices, but the refinement is painting the strokes
(the baseline every refinement must beat).
``ugir-oracle`` / ``ugir-random``: baselines for the order, with ``ugir``'s budget,
stop rule, following and refinement: slices by their true error voxels (the best
possible order; the stop counts true errors) or in a seeded random order.
``sequential``: UGIR(-U): every slice in order, I-DRLSE refinement.
``graphcut``: Graph Cut from scratch (no CNN): every slice, starting empty.
``deepigeos``: every slice in order with the R-Net refinement network.

Machine time is measured (prediction and every refinement), not modelled.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from segrefine.errors import InputError
from segrefine.guidance import END_WEIGHT, SuggestionQueue, suggest
from segrefine.metrics import dice
from segrefine.preprocess import normalise
from segrefine.refine.slice import DEFAULT_PRESET

STRATEGIES = ("ugir", "ugir-nu", "ugir-naive", "ugir-paint", "ugir-oracle", "ugir-random", "sequential",
              "graphcut", "deepigeos")
GUIDED = {"ugir": None, "ugir-nu": "nu", "ugir-naive": "nu-naive", "ugir-paint": None,
          "ugir-oracle": None, "ugir-random": None}  # order (None: --order)
# benchmark baselines around the default order, with the same budget and stop rule: the best
# possible order (slices by their true error voxels, which also drive the stop) and a random one
BASELINE_ORDERS = ("ugir-oracle", "ugir-random")


@dataclass
class TimeModel:
    """Seconds of simulated user time per action (documented defaults).

    ``inspect_s``: look at one slice and decide (3 s); ``scribble_s``: draw one
    stroke (2 s); ``accept_s``: confirm a slice (0.5 s); ``scroll_s``: move to
    the next slice in a sequential search (0.5 s; guided strategies jump).
    """

    inspect_s: float = 3.0
    scribble_s: float = 2.0
    accept_s: float = 0.5
    scroll_s: float = 0.5


@dataclass
class UserModel:
    tolerance: float = 0.85
    min_error: int = 4
    max_rounds: int = 10
    seed: int = 0


def _largest_error(seg: np.ndarray, gt: np.ndarray) -> int:
    import cc3d

    err = (seg != gt).astype(np.uint8)
    if not err.any():
        return 0
    labels = cc3d.connected_components(err, connectivity=8)
    return int(np.bincount(labels.ravel())[1:].max())


def needs_refinement(seg: np.ndarray, gt: np.ndarray, user: UserModel) -> bool:
    seg, gt = seg > 0, gt > 0
    if not seg.any() and not gt.any():
        return False
    return dice(seg, gt) < user.tolerance and _largest_error(seg, gt) >= user.min_error


def _count_strokes(scribbles: np.ndarray) -> int:
    import cc3d

    if not scribbles.any():
        return 0
    n = 0
    for lab in (1, 2):
        n += int(cc3d.connected_components((scribbles == lab).astype(np.uint8), connectivity=8).max())
    return n


def fix_slice(image, prob, init, gt, *, method: str, user: UserModel, spacing, seed: int,
              preset: str = DEFAULT_PRESET):
    """Rounds of scribbles + refinement on one slice. Returns (mask, strokes, seconds of each
    refinement step)."""
    from segrefine.interaction import simulate_scribbles
    from segrefine.refine.slice import refine_slice

    mask = init > 0
    scribbles = np.zeros(mask.shape, np.uint8)
    strokes, steps = 0, []
    for r in range(user.max_rounds):
        new = simulate_scribbles(mask, gt > 0, seed=seed + r, min_size=user.min_error)
        if not new.any():
            break
        added = (new > 0) & (scribbles == 0)
        strokes += _count_strokes(np.where(added, new, 0))
        scribbles = np.where(new > 0, new, scribbles).astype(np.uint8)
        t = time.perf_counter()
        if method == "graphcut-scratch":
            from segrefine.refine.graphcut import graphcut_from_scratch

            mask = graphcut_from_scratch(image, scribbles, spacing=spacing)
        else:
            mask = refine_slice(method, image, prob, mask, scribbles, spacing=spacing, preset=preset)
        steps.append(time.perf_counter() - t)
        if not needs_refinement(mask, gt, user):
            break
    return mask, strokes, steps


def _baseline_order(sug: dict, strategy: str, mask: np.ndarray, gt: np.ndarray, axis: int, *,
                    seed: int) -> dict:
    """``sug`` re-ranked for a baseline: ``ugir-oracle`` by each slice's true error voxels (the
    stop rule then counts true errors), ``ugir-random`` in a seeded random order."""
    by_index = {s["index"]: dict(s) for s in sug["slices"]}
    n = len(by_index)
    if strategy == "ugir-oracle":
        other = tuple(a for a in range(3) if a != axis)
        errors = (mask != gt).sum(axis=other)
        ranking = [int(i) for i in np.lexsort((np.arange(n), -errors))]
        for k in ranking:
            by_index[k]["expected_errors"] = by_index[k]["score"] = float(errors[k])
    else:
        ranking = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    slices = [by_index[k] for k in ranking]
    for rank, s in enumerate(slices):
        s["in_budget"] = rank < sug["budget_slices"]
    return {**sug, "order": "gain", "slices": slices}


def run_case(image: np.ndarray, gt: np.ndarray, strategy: str, *, prob=None, uncertainty=None,
             label=None, spacing=(1.0, 1.0, 1.0), axis: int = 2, budget: float = 0.6,
             user: UserModel | None = None, times: TimeModel | None = None,
             predict_seconds: float = 0.0, preset: str = DEFAULT_PRESET, order: str = "gain",
             patience: int | None = None, stop_remaining: float | None = None,
             stop_dice: float | None = None, follow: bool | None = None,
             end_weight: float | None = None) -> dict:
    """Simulate one case; returns the record written by ``segrefine simulate``.

    ``order``: the slice order of ``ugir`` and ``ugir-paint`` (``ugir-nu`` and ``ugir-naive``
    fix theirs). Stop rules of the guided strategies: ``patience`` (stop after this many
    consecutive slices that needed nothing; the paper: 3), ``stop_dice`` (stop when the slices
    not yet shown are expected to hold less than this much Dice) and ``stop_remaining`` (stop
    when they hold less than this fraction of the expected wrong voxels); ``follow``: show the
    neighbours of a slice that needed refinement next. None given: the order's own rules
    (:meth:`SuggestionQueue.from_suggestions`). ``end_weight``: the gain order's end prior
    (None: :data:`segrefine.guidance.END_WEIGHT`)."""
    if strategy not in STRATEGIES:
        raise InputError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    user = user or UserModel()
    times = times or TimeModel()
    gt = np.asarray(gt) > 0
    norm = normalise(image)
    n = image.shape[axis]
    sp2 = tuple(float(s) for i, s in enumerate(spacing) if i != axis)
    if strategy == "graphcut":
        mask = np.zeros(gt.shape, bool)
        prob = np.zeros(gt.shape, np.float32)
    else:
        if prob is None or label is None:
            raise InputError(f"strategy {strategy} needs the CNN's probability and label maps")
        mask = np.asarray(label) > 0
    dice_before = dice(mask, gt)
    method = {"ugir": "idrlse", "ugir-nu": "idrlse", "ugir-naive": "idrlse", "ugir-paint": "paint",
              "ugir-oracle": "idrlse", "ugir-random": "idrlse",
              "sequential": "idrlse", "graphcut": "graphcut-scratch", "deepigeos": "rnet"}[strategy]
    mv = lambda a: np.moveaxis(a, axis, 0)
    inspected = strokes = 0
    step_ms: list[float] = []
    user_s, machine_s = 0.0, predict_seconds
    if strategy in GUIDED:
        if uncertainty is None:
            raise InputError(f"strategy {strategy} needs an uncertainty map")
        sug = suggest(uncertainty, mask, prob=prob, axis=axis, budget=budget,
                      order=GUIDED[strategy] or order,
                      end_weight=END_WEIGHT if end_weight is None else end_weight)
        if strategy in BASELINE_ORDERS:
            sug = _baseline_order(sug, strategy, mask, gt, axis, seed=user.seed)
        queue = SuggestionQueue.from_suggestions(sug, patience=patience, stop_remaining=stop_remaining,
                                                 stop_dice=stop_dice, follow=follow)
        if strategy == "ugir-random":
            queue.min_expected = 0.0  # "the next slice expects < 1 wrong voxel" presumes a ranking
        order = iter(lambda: queue.next(), None)
    else:
        queue = None
        order = iter(range(n))
    for k in order:
        inspected += 1
        user_s += times.inspect_s + (times.scroll_s if queue is None else 0.0)
        seg_k, gt_k = mv(mask)[k], mv(gt)[k]
        needed = needs_refinement(seg_k, gt_k, user)
        if needed:
            new, s, steps = fix_slice(mv(norm)[k], mv(prob)[k], seg_k, gt_k, method=method, user=user,
                                      spacing=sp2, seed=user.seed + 7919 * k, preset=preset)
            mv(mask)[k] = new
            strokes += s
            machine_s += sum(steps)
            step_ms += [1000 * t for t in steps]
            user_s += s * times.scribble_s
        user_s += times.accept_s
        if queue is not None:
            queue.report(needed)
    return {"dice_before": dice_before, "dice_after": dice(mask, gt), "slices_inspected": inspected,
            "scribbles": strokes, "user_seconds": user_s, "machine_seconds": machine_s,
            "slices": n, "stopped_early": bool(queue.stopped_early) if queue else False,
            "refine_steps": len(step_ms), "refine_ms_median": float(np.median(step_ms)) if step_ms else None,
            "refine_ms": step_ms,
            "mask": mask}


def settings(user: UserModel, times: TimeModel) -> dict:
    return {"user": asdict(user), "time_model": asdict(times)}
