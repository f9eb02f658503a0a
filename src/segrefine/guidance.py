"""Uncertainty-guided slice suggestions (UGIR): slice scores, orders, budget, stop rules.

For the slices ``S_k`` along ``axis`` of a volume with segmentation ``Y``, voxel
uncertainty ``U`` and mean foreground probability ``p``:

- ``gain`` (the default): the **expected number of wrong voxels**
  ``E_k = Σ_{x∈S_k} min(p_x, 1 - p_x)``, i.e. the errors a calibrated model expects
  in the slice, plus an **end prior**: the first and last slices of the predicted
  structure along the axis and the slice beyond each get ``END_WEIGHT`` (0.75) times
  the median ``E_k`` of the structure's slices added. Fixing a slice gains volume Dice
  in proportion to the error voxels it removes, and every suggested slice costs the
  user the same inspection time (3.5 s in :class:`segrefine.simulate.TimeModel`;
  correction time is spent only where there are errors), so this order is the
  expected Dice gained per second of inspection. The end prior is there because the
  network can be confidently wrong where the structure begins and ends (a missed
  tail has p ≈ 0, so ``E`` ≈ 0): on the hippocampus ``val`` split, UGIR with the
  default stop ends 0.14 points below sequential inspection with 30 % of its user
  time, and 0.33 below with 21 % without the prior (docs/tuning.md). Fixing the top
  30 % of slices in this order gains 90 % of what the best possible 30 % gains on
  ``test`` (94 % without the prior; ``segrefine bench stack``).
- ``nu`` (the paper's definition): ``ν_k = Σ U_x / (Σ Y_x + ζ)``, which keeps slices
  with a small structure from being ignored, but puts small end slices whose errors
  are a few voxels first.
- ``nu-naive`` (the paper's UGIR(*)): ``ν*_k = Σ U_x``.

Empty slices (Σ Y = 0) under ν
------------------------------
With a tiny ζ an empty slice would get ν = ΣU / ζ and a little background noise
would put it at the top of the queue. Two rules prevent it without hiding a
structure the network missed:

1. **Noise floor**: voxels with ``U < noise_floor · max(U)`` (default 2 % of the
   volume's largest uncertainty) count as 0 in both ν and ν*.
2. **ζ is an area**, not an epsilon: by default 10 % of the median foreground
   area of the non-empty slices (at least 1 voxel). An empty slice is then
   compared as if it held a small structure: faint noise gives a small ν, while
   a missed structure (a compact region where the network hesitates, i.e. high
   uncertainty over many voxels) still gets a large ν and is suggested.

Budget and stop rules
---------------------
The user is shown at most ``budget · M`` slices (``M`` slices along the axis,
rounded up; the paper uses 0.6 chosen on the validation set) in the order's
ranking. With the ``gain`` order:

- **follow the error**: when a slice needed refinement, its two neighbours along the
  axis (those not shown yet) are shown next, before the ranking resumes: errors run
  over consecutive slices, and the end of a run is where the model is least aware
  of it;
- **stop on the expected remaining Dice**: the queue stops once the slices not yet
  shown hold less than ``stop_dice`` (``STOP_DICE``, 2.25 points) of expected Dice,
  i.e. ``Σ score / (2 Σ p) < stop_dice`` over the slices left (an error voxel costs
  about ``1 / (2 |foreground|)`` of Dice), or the next slice less than one expected
  wrong voxel.

With ``nu`` and ``nu-naive`` it stops, as in the paper, after ``patience`` (3)
consecutive suggested slices that needed no refinement, and does not follow.
Any rule can be given to any order; ``stop_remaining`` (stop once the slices left
hold less than a fraction of the volume's expected wrong voxels) is the earlier
rule, kept as an option.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from segrefine.errors import InputError
from segrefine.validate import (
    as_array,
    as_axis,
    as_choice,
    as_nonnegative,
    as_number,
    as_probability,
)

log = logging.getLogger(__name__)


def _check_maps(uncertainty: np.ndarray, segmentation: np.ndarray, axis: int):
    u = as_nonnegative(uncertainty, "uncertainty")
    y = as_array(segmentation, "segmentation", ndim=3, shape=u.shape, ref="uncertainty")
    as_axis(axis)
    return u, y > 0


ORDERS = ("gain", "nu", "nu-naive")
DEFAULT_ORDER = "gain"
# stop rule of the gain order: stop when the slices not yet shown are expected to hold less
# than this much Dice (0.0225 = 2.25 points; chosen on the hippocampus val split, see
# docs/tuning.md)
STOP_DICE = 0.0225
# the earlier relative rule (a fraction of the volume's expected wrong voxels), an option
STOP_REMAINING = 0.2
# end prior of the gain order: the structure's first and last slices along the axis and the
# slice beyond each get this many times the median expected wrong voxels of its slices
END_WEIGHT = 0.75
# and never show a slice where the model expects less than one wrong voxel
MIN_EXPECTED = 1.0


def slice_uncertainty(uncertainty: np.ndarray, segmentation: np.ndarray, *, axis: int = 2,
                      zeta: float | None = None, noise_floor: float = 0.02,
                      prob: np.ndarray | None = None) -> dict:
    """Slice scores along ``axis``: ν, ν* and, with ``prob``, the expected wrong voxels.

    Parameters
    ----------
    uncertainty : (I, J, K) ndarray
        Voxel uncertainty U (any non-negative measure: variance, entropy).
    segmentation : (I, J, K) ndarray
        Segmentation Y (foreground = value > 0).
    zeta : float or None
        ζ in voxels; None = 10 % of the median foreground area of non-empty slices.
    noise_floor : float
        Fraction of max(U) under which uncertainty is treated as 0 (ν and ν* only).
    prob : (I, J, K) ndarray or None
        Mean foreground probability p in [0, 1]; gives ``expected_errors``.

    Returns
    -------
    dict with ``nu``, ``nu_naive``, ``area`` (Σ Y), ``expected_errors`` (Σ min(p, 1 - p),
    or None without ``prob``), arrays of length M, ``zeta`` and ``foreground`` (Σ p over the
    volume, the expected foreground voxels; None without ``prob``).
    """
    u, y = _check_maps(uncertainty, segmentation, axis)
    other = tuple(a for a in range(3) if a != axis)
    expected = foreground = None
    if prob is not None:
        as_probability(prob, "prob", ndim=3, shape=u.shape, ref="uncertainty")
        p = np.asarray(prob, dtype=np.float64)
        expected = np.minimum(p, 1.0 - p).sum(axis=other)
        foreground = float(p.sum())
    umax = float(u.max())
    if umax > 0 and noise_floor > 0:
        u = np.where(u >= noise_floor * umax, u, 0.0)
    nu_naive = u.sum(axis=other)
    area = y.sum(axis=other).astype(np.float64)
    if zeta is None:
        nonzero = area[area > 0]
        zeta = max(1.0, 0.1 * float(np.median(nonzero))) if nonzero.size else 1.0
    zeta = as_number(zeta, "zeta", low=0.0, low_open=True)
    nu = nu_naive / (area + zeta)
    return {"nu": nu, "nu_naive": nu_naive, "area": area, "zeta": float(zeta),
            "expected_errors": expected, "foreground": foreground}


def end_prior(expected: np.ndarray, area: np.ndarray, weight: float = END_WEIGHT) -> np.ndarray:
    """``expected`` plus the end prior: the first and last slices with foreground (``area`` > 0)
    and the slice beyond each get ``weight`` times the median of ``expected`` over the slices
    with foreground (nothing without foreground)."""
    out = np.array(expected, dtype=np.float64)
    inside = np.flatnonzero(np.asarray(area) > 0)
    if inside.size == 0 or weight == 0:
        return out
    lo, hi = int(inside[0]), int(inside[-1])
    bonus = weight * float(np.median(out[inside]))
    for k in {lo - 1, lo, hi, hi + 1}:
        if 0 <= k < out.size:
            out[k] += bonus
    return out


def order_scores(scores: dict, order: str, *, end_weight: float = END_WEIGHT) -> np.ndarray:
    """The per-slice score that ``order`` ranks by (from :func:`slice_uncertainty`): for
    ``gain`` the expected wrong voxels with the end prior (``end_weight``), else ν or ν*."""
    as_choice(order, "order", ORDERS)
    if order == "gain":
        if scores["expected_errors"] is None:
            raise InputError("order 'gain' needs the foreground probability map (prob); "
                             "give it, or choose order 'nu' or 'nu-naive'")
        return end_prior(scores["expected_errors"], scores["area"], end_weight)
    return scores["nu"] if order == "nu" else scores["nu_naive"]


def rank_slices(scores: np.ndarray) -> list[int]:
    """Slice indices by decreasing score (ties: lower index first)."""
    scores = np.asarray(scores)
    return [int(i) for i in np.lexsort((np.arange(scores.size), -scores))]


def budget_count(n_slices: int, budget: float) -> int:
    budget = as_number(budget, "budget", low=0.0, high=1.0, low_open=True)
    return max(1, math.ceil(budget * n_slices))


def suggest(uncertainty: np.ndarray, segmentation: np.ndarray, *, prob: np.ndarray | None = None,
            order: str | None = None, axis: int = 2, budget: float = 0.6, naive: bool = False,
            zeta: float | None = None, noise_floor: float = 0.02, end_weight: float = END_WEIGHT) -> dict:
    """The ranked suggestions as written by ``segrefine suggest``.

    ``order``: ``gain`` (default; needs ``prob``), ``nu`` (the paper's ν) or ``nu-naive``
    (ν*); ``naive=True`` is the older spelling of ``order="nu-naive"``.

    Returns ``{"axis", "budget", "budget_slices", "zeta", "order", "total_expected_errors",
    "expected_foreground", "slices": [{"index", "score", "nu", "nu_naive", "expected_errors",
    "area", "in_budget"}, ...]}`` with ``slices`` ordered by ``score`` (the order's: expected
    wrong voxels with the end prior, ν or ν*), highest first (``expected_errors`` and
    ``expected_foreground`` are None without ``prob``).
    """
    if order is None:
        order = "nu-naive" if naive else DEFAULT_ORDER
    budget_count(1, budget)  # checks the budget before any work
    s = slice_uncertainty(uncertainty, segmentation, axis=axis, zeta=zeta, noise_floor=noise_floor,
                          prob=prob)
    note = None
    if order == "gain" and s["expected_errors"] is not None and not s["expected_errors"].any():
        # a hard (0/1) probability map expects no errors anywhere: rank by the uncertainty
        order, s["expected_errors"] = "nu-naive", None
        note = "the probability map is binary (no expected errors): ranked by ν* = ΣU instead"
        log.warning(note)
    score = order_scores(s, order, end_weight=end_weight)
    ranking = rank_slices(score)
    n_budget = budget_count(len(ranking), budget)
    exp = s["expected_errors"]
    slices = [{"index": k, "score": float(score[k]), "nu": float(s["nu"][k]),
               "nu_naive": float(s["nu_naive"][k]),
               "expected_errors": None if exp is None else float(exp[k]),
               "area": int(s["area"][k]), "in_budget": rank < n_budget}
              for rank, k in enumerate(ranking)]
    return {"axis": axis, "budget": budget, "budget_slices": n_budget, "zeta": s["zeta"],
            "order": order, "total_expected_errors": None if exp is None else float(exp.sum()),
            "expected_foreground": s["foreground"] if exp is not None else None,
            "note": note, "slices": slices}


@dataclass
class SuggestionQueue:
    """Walks the ranked slices within the budget, follows errors and stops early.

    ``next()`` gives the next slice index (or None when done); ``report(needed)``
    tells whether the slice just shown needed refinement.

    Rules (each optional): ``follow`` shows the unshown neighbours (index ± 1) of a slice
    that needed refinement next, before the ranking resumes; ``patience`` stops after that
    many consecutive slices that needed nothing (UGIR: 3; None = off); ``stop_dice`` stops
    before the next ranked slice once the slices not yet shown hold less than that much
    expected Dice (``Σ expected / (2 foreground)``); ``stop_remaining`` once they hold less
    than that fraction of ``expected`` (the ranking score of each slice in ``order``: the
    expected wrong voxels with the end prior); with either, also when the next ranked slice
    is expected to hold less than ``min_expected`` (1) wrong voxel. Slices shown by
    ``follow`` count against the budget and are not held back by the stop rules.
    """

    order: list[int]
    budget_slices: int
    patience: int | None = 3
    position: int = 0
    streak: int = 0
    shown: list[int] = field(default_factory=list)
    stopped_early: bool = False
    expected: list[float] | None = None
    stop_remaining: float | None = None
    min_expected: float = MIN_EXPECTED
    stop_dice: float | None = None
    foreground: float | None = None
    follow: bool = False
    front: list[int] = field(default_factory=list)
    #: the fields ``next()`` and ``report()`` change: what a saved session keeps and restores
    MUTABLE: ClassVar[tuple[str, ...]] = ("position", "streak", "stopped_early", "shown", "front")

    @classmethod
    def from_suggestions(cls, suggestions: dict, patience: int | None = None,
                         stop_remaining: float | None = None, stop_dice: float | None = None,
                         follow: bool | None = None) -> SuggestionQueue:
        """The queue for ``suggestions`` with the order's own rules unless given: for ``gain``,
        follow the error and stop on the expected remaining Dice; for ``nu`` and ``nu-naive``,
        patience 3 and no following."""
        gain = suggestions.get("order", "nu") == "gain"
        foreground = suggestions.get("expected_foreground")
        if patience is None and stop_remaining is None and stop_dice is None:
            if not gain:
                patience = 3
            elif foreground is None:  # suggestions saved before the Dice stop: the earlier rule
                stop_remaining = STOP_REMAINING
            else:
                stop_dice = STOP_DICE
        follow = gain if follow is None else bool(follow)
        expected = [s.get("score", s.get("expected_errors")) if gain else s.get("expected_errors")
                    for s in suggestions["slices"]]
        ruled = stop_remaining is not None or stop_dice is not None
        if ruled and any(e is None for e in expected):
            raise InputError("the expected-remaining-gain stop needs the probability map (prob)")
        if stop_dice is not None and foreground is None:
            raise InputError("the expected-remaining-Dice stop needs the probability map (prob)")
        return cls([s["index"] for s in suggestions["slices"]], suggestions["budget_slices"], patience,
                   expected=[float(e) for e in expected] if ruled else None,
                   stop_remaining=stop_remaining, stop_dice=stop_dice,
                   foreground=None if foreground is None else float(foreground), follow=follow)

    def restore(self, state: dict) -> None:
        """Set the :attr:`MUTABLE` fields from a saved ``state`` (``front`` is absent in states
        saved before following)."""
        self.position, self.streak = int(state["position"]), int(state["streak"])
        self.stopped_early, self.shown = bool(state["stopped_early"]), [int(k) for k in state["shown"]]
        self.front = [int(k) for k in state.get("front", [])]

    def _left(self) -> list[int]:
        """Positions in ``order`` of the slices not shown yet."""
        shown = set(self.shown)
        return [i for i in range(len(self.order)) if self.order[i] not in shown]

    def remaining_fraction(self) -> float | None:
        """Fraction of the expected wrong voxels in the slices not yet shown (None: no expectation)."""
        if self.expected is None:
            return None
        total = float(sum(self.expected))
        return float(sum(self.expected[i] for i in self._left())) / total if total > 0 else 0.0

    def remaining_dice(self) -> float | None:
        """Expected Dice held by the slices not yet shown (None: no expectation or foreground)."""
        if self.expected is None or self.foreground is None:
            return None
        return float(sum(self.expected[i] for i in self._left())) / (2.0 * max(self.foreground, 1.0))

    @property
    def _budget_left(self) -> bool:
        return len(self.shown) < min(self.budget_slices, len(self.order))

    def _follow_next(self) -> int | None:
        shown = set(self.shown)
        return next((k for k in self.front if k not in shown), None)

    def _stop_now(self) -> bool:
        """Whether a stop rule holds before the next ranked slice."""
        left = self._left()
        if not left:
            return False
        if self.stop_remaining is None and self.stop_dice is None:
            return False
        if self.expected[left[0]] < self.min_expected:
            return True
        if self.stop_remaining is not None and self.remaining_fraction() < self.stop_remaining:
            return True
        return self.stop_dice is not None and self.remaining_dice() < self.stop_dice

    @property
    def done(self) -> bool:
        if self.stopped_early or not self._budget_left:
            return True
        if self._follow_next() is not None:
            return False
        return not self._left() or self._stop_now()

    def next(self) -> int | None:
        if self.stopped_early or not self._budget_left:
            return None
        k = self._follow_next()
        if k is None:
            left = self._left()
            if not left:
                return None
            if self._stop_now():
                self.stopped_early = True
                return None
            self.position = left[0] + 1
            k = self.order[left[0]]
        self.front = [j for j in self.front if j != k]
        self.shown.append(k)
        return k

    def report(self, needed_refinement: bool) -> None:
        self.streak = 0 if needed_refinement else self.streak + 1
        if self.patience is not None and self.streak >= self.patience:
            self.stopped_early = True
        if needed_refinement and self.follow and self.shown:
            k, shown = self.shown[-1], set(self.shown)
            n = len(self.order)  # every slice along the axis is ranked: indices 0..n-1
            self.front += [j for j in (k - 1, k + 1) if 0 <= j < n and j not in shown and j not in self.front]

    def state(self) -> dict:
        return {"order": list(self.order), "position": self.position, "budget_slices": self.budget_slices,
                "streak": self.streak, "patience": self.patience, "stop_remaining": self.stop_remaining,
                "stop_dice": self.stop_dice, "foreground": self.foreground, "follow": self.follow,
                "front": list(self.front), "expected": self.expected,
                "remaining_fraction": self.remaining_fraction(), "remaining_dice": self.remaining_dice(),
                "stopped_early": self.stopped_early, "done": self.done, "shown": list(self.shown)}
