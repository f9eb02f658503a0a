"""Segmentation and uncertainty quality metrics.

Arrays are binary masks ``(I, J[, K])`` in voxel order; ``spacing`` is one number
per axis in mm (``None`` = 1 mm). Surface distances follow MONAI's definition
(boundary = mask XOR its erosion with the face-connected structuring element,
Euclidean distance transform with the spacing) so values agree with
``monai.metrics`` (tested).

Empty structures: Dice is 1.0 when both masks are empty and 0.0 when only one
is; ASSD and HD95 are NaN when either mask is empty (no surface to measure),
and means over cases skip NaN and report how many were skipped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from segrefine.errors import InputError


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred.astype(bool), ref.astype(bool)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice = 2|P∩R| / (|P| + |R|); 1.0 when both are empty."""
    pred, ref = _check_pair(pred, ref)
    total = pred.sum() + ref.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(pred, ref).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing=None):
    """Distances (mm) from each boundary voxel of ``pred`` to ``ref``'s boundary, and back.

    Returns ``(d_pred_to_ref, d_ref_to_pred)`` or ``None`` if either mask is empty.
    """
    pred, ref = _check_pair(pred, ref)
    if not pred.any() or not ref.any():
        return None
    spacing = None if spacing is None else tuple(float(s) for s in spacing)
    sp, sr = _surface(pred), _surface(ref)
    dt_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    dt_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return dt_ref[sp], dt_pred[sr]


def assd(pred: np.ndarray, ref: np.ndarray, spacing=None) -> float:
    """Average symmetric surface distance in mm (mean over both boundaries' distances)."""
    d = surface_distances(pred, ref, spacing)
    if d is None:
        return float("nan")
    return float(np.concatenate(d).mean())


def hd95(pred: np.ndarray, ref: np.ndarray, spacing=None) -> float:
    """95th-percentile Hausdorff distance in mm: max of the two directed 95th percentiles."""
    d = surface_distances(pred, ref, spacing)
    if d is None:
        return float("nan")
    return float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))


def segmentation_scores(pred: np.ndarray, ref: np.ndarray, spacing=None) -> dict[str, float]:
    """Dice, ASSD and HD95 of the whole structure (label > 0)."""
    pred = np.asarray(pred) > 0
    ref = np.asarray(ref) > 0
    d = surface_distances(pred, ref, spacing)
    if d is None:
        a = h = float("nan")
    else:
        a = float(np.concatenate(d).mean())
        h = float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))
    return {"dice": dice(pred, ref), "assd": a, "hd95": h}


# --- uncertainty quality -------------------------------------------------------------


def error_mask(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Voxels where the (binary) prediction disagrees with the reference."""
    return (np.asarray(pred) > 0) != (np.asarray(ref) > 0)


def ueo(uncertainty: np.ndarray, error: np.ndarray, threshold: float) -> float:
    """Uncertainty-error overlap: Dice between ``uncertainty > threshold`` and the error mask."""
    return dice(np.asarray(uncertainty) > threshold, error)


def rve(uncertainty: np.ndarray, error: np.ndarray, threshold: float) -> float:
    """Relative volume error |V_u - V_e| / V_e of the thresholded uncertain region.

    NaN when the error mask is empty.
    """
    ve = float(np.count_nonzero(error))
    if ve == 0:
        return float("nan")
    vu = float(np.count_nonzero(np.asarray(uncertainty) > threshold))
    return abs(vu - ve) / ve


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for detecting ``positive`` (Mann-Whitney U).

    Ties get average ranks. NaN when all voxels are of one class.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def expected_calibration_error(prob: np.ndarray, ref: np.ndarray, bins: int = 10) -> float:
    """ECE of the foreground probability against the reference, ``bins`` equal-width bins."""
    prob = np.asarray(prob, dtype=np.float64).ravel()
    ref = (np.asarray(ref) > 0).ravel()
    conf = np.where(prob >= 0.5, prob, 1.0 - prob)
    correct = (prob >= 0.5) == ref
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(ece)


def best_ueo_threshold(uncertainties, errors, candidates=None) -> float:
    """The threshold maximising mean UEO over a set of cases (the paper's val-split choice).

    ``candidates`` defaults to 50 quantile-spaced values of the pooled positive
    uncertainties.
    """
    if candidates is None:
        pooled = np.concatenate([np.asarray(u).ravel() for u in uncertainties])
        pooled = pooled[pooled > 0]
        if pooled.size == 0:
            return 0.0
        candidates = np.unique(np.quantile(pooled, np.linspace(0.0, 0.995, 50)))
    best, best_score = float(candidates[0]), -1.0
    for t in candidates:
        score = float(np.mean([ueo(u, e, t) for u, e in zip(uncertainties, errors)]))
        if score > best_score:
            best, best_score = float(t), score
    return best


def nanmean_sd(values) -> tuple[float, float, int]:
    """Mean and sample-free SD over non-NaN values, and the number of NaN skipped."""
    arr = np.asarray(list(values), dtype=np.float64)
    ok = arr[~np.isnan(arr)]
    if ok.size == 0:
        return float("nan"), float("nan"), int(arr.size)
    return float(ok.mean()), float(ok.std()), int(arr.size - ok.size)
