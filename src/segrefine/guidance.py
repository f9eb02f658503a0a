"""Uncertainty-guided slice suggestions (UGIR): slice-level uncertainty, ranking, budget, early stop.

For the slices ``S_k`` along ``axis`` of a volume with segmentation ``Y`` and
voxel uncertainty ``U``:

- naive slice uncertainty ``ν*_k = Σ_{x∈S_k} U_x``
- normalised slice uncertainty ``ν_k = Σ U_x / (Σ Y_x + ζ)`` (the paper's definition),
  which keeps slices with a small structure from being ignored.

Empty slices (Σ Y = 0)
----------------------
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

Budget and early stop
---------------------
The user is shown at most ``budget · M`` slices (``M`` slices along the axis,
rounded up; the paper uses 0.6 chosen on the validation set), highest ν first,
and the queue stops early after ``patience`` (3) consecutive suggested slices
that needed no refinement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from segrefine.errors import InputError


def _check_maps(uncertainty: np.ndarray, segmentation: np.ndarray, axis: int):
    u = np.asarray(uncertainty, dtype=np.float64)
    y = np.asarray(segmentation)
    if u.ndim != 3:
        raise InputError(f"uncertainty must be 3D, got shape {u.shape}")
    if y.shape != u.shape:
        raise InputError(f"segmentation shape {y.shape} differs from uncertainty shape {u.shape}")
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis}")
    if not np.isfinite(u).all():
        raise InputError("uncertainty holds NaN or inf values")
    if (u < 0).any():
        raise InputError("uncertainty must be non-negative")
    return u, y > 0


def slice_uncertainty(uncertainty: np.ndarray, segmentation: np.ndarray, *, axis: int = 2,
                      zeta: float | None = None, noise_floor: float = 0.02) -> dict:
    """ν and ν* of every slice along ``axis``.

    Parameters
    ----------
    uncertainty : (I, J, K) ndarray
        Voxel uncertainty U (any non-negative measure: variance, entropy).
    segmentation : (I, J, K) ndarray
        Segmentation Y (foreground = value > 0).
    zeta : float or None
        ζ in voxels; None = 10 % of the median foreground area of non-empty slices.
    noise_floor : float
        Fraction of max(U) under which uncertainty is treated as 0.

    Returns
    -------
    dict with ``nu``, ``nu_naive``, ``area`` (Σ Y), arrays of length M, and ``zeta``.
    """
    u, y = _check_maps(uncertainty, segmentation, axis)
    umax = float(u.max())
    if umax > 0 and noise_floor > 0:
        u = np.where(u >= noise_floor * umax, u, 0.0)
    other = tuple(a for a in range(3) if a != axis)
    nu_naive = u.sum(axis=other)
    area = y.sum(axis=other).astype(np.float64)
    if zeta is None:
        nonzero = area[area > 0]
        zeta = max(1.0, 0.1 * float(np.median(nonzero))) if nonzero.size else 1.0
    if zeta <= 0:
        raise InputError(f"zeta must be positive, got {zeta}")
    nu = nu_naive / (area + zeta)
    return {"nu": nu, "nu_naive": nu_naive, "area": area, "zeta": float(zeta)}


def rank_slices(scores: np.ndarray) -> list[int]:
    """Slice indices by decreasing score (ties: lower index first)."""
    scores = np.asarray(scores)
    return [int(i) for i in np.lexsort((np.arange(scores.size), -scores))]


def budget_count(n_slices: int, budget: float) -> int:
    if not 0 < budget <= 1:
        raise InputError(f"budget must be in (0, 1], got {budget}")
    return max(1, math.ceil(budget * n_slices))


def suggest(uncertainty: np.ndarray, segmentation: np.ndarray, *, axis: int = 2, budget: float = 0.6,
            naive: bool = False, zeta: float | None = None, noise_floor: float = 0.02) -> dict:
    """The ranked suggestions as written by ``segrefine suggest``.

    Returns ``{"axis", "budget", "budget_slices", "zeta", "order", "slices": [{"index", "nu",
    "nu_naive", "area", "in_budget"}, ...]}`` with ``slices`` ordered by ν (or ν* when
    ``naive``), highest first.
    """
    s = slice_uncertainty(uncertainty, segmentation, axis=axis, zeta=zeta, noise_floor=noise_floor)
    order = rank_slices(s["nu_naive"] if naive else s["nu"])
    n_budget = budget_count(len(order), budget)
    slices = [{"index": k, "nu": float(s["nu"][k]), "nu_naive": float(s["nu_naive"][k]),
               "area": int(s["area"][k]), "in_budget": rank < n_budget}
              for rank, k in enumerate(order)]
    return {"axis": axis, "budget": budget, "budget_slices": n_budget, "zeta": s["zeta"],
            "order": "nu_naive" if naive else "nu", "slices": slices}


@dataclass
class SuggestionQueue:
    """Walks the ranked slices within the budget and stops early.

    ``next()`` gives the next slice index (or None when done); ``report(needed)``
    tells whether the slice just shown needed refinement.
    """

    order: list[int]
    budget_slices: int
    patience: int = 3
    position: int = 0
    streak: int = 0
    shown: list[int] = field(default_factory=list)
    stopped_early: bool = False

    @classmethod
    def from_suggestions(cls, suggestions: dict, patience: int = 3) -> SuggestionQueue:
        return cls([s["index"] for s in suggestions["slices"]], suggestions["budget_slices"], patience)

    @property
    def done(self) -> bool:
        return self.stopped_early or self.position >= min(self.budget_slices, len(self.order))

    def next(self) -> int | None:
        if self.done:
            return None
        k = self.order[self.position]
        self.position += 1
        self.shown.append(k)
        return k

    def report(self, needed_refinement: bool) -> None:
        self.streak = 0 if needed_refinement else self.streak + 1
        if self.streak >= self.patience:
            self.stopped_early = True

    def state(self) -> dict:
        return {"order": list(self.order), "position": self.position, "budget_slices": self.budget_slices,
                "streak": self.streak,
                "stopped_early": self.stopped_early, "done": self.done, "shown": list(self.shown)}
