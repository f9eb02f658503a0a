"""Model cards: what a checkpoint was trained on, and a check of an input against it.

A card is a plain dict stored in the checkpoint (``payload["card"]``). Its fields:

``dataset``, ``description``, ``reference``, ``modality``, ``licence``, ``label_names``
    from the training dataset's ``dataset.json`` (the Decathlon fields; the small
    per-dataset information source);
``foreground``
    what the network segments (``labels > 0 merged`` unless trained multi-class);
``profile``
    measured on the training cases: ``spacing`` (mm) and ``in_plane`` size (voxels,
    the two axes other than the slice axis) as ``[min, max]`` per axis, and intensity
    statistics that do not depend on the scanner's scale, ``cv`` (standard deviation
    over the absolute mean) and ``dark_fraction`` (voxels at most 2 % of the 1-99
    percentile range above the 1st percentile), as ``[min, max]`` over the cases;
``normalisation``, ``slice_axis``, ``refinement_preset``, ``training_command``,
``val_dice`` (and ``val_metric``, ``val_split``), ``arch``, ``parameters``.

:func:`input_differences` compares an input volume with the profile and names what
lies outside it (with a tolerance); :func:`mismatch_warning` makes the one-line
warning that ``predict``, ``suggest``, ``refine-gcn`` and the web app show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.datasets import Case, dataset_labels
from segrefine.errors import InputError

NORMALISATION = "z-score over the whole volume (mean 0, sd 1; segrefine.preprocess.normalise)"

#: card fields in display order, with their labels
FIELDS = (("dataset", "dataset"), ("modality", "modality"), ("licence", "licence of the training data"),
          ("label_names", "label names"), ("foreground", "segments"), ("spacing", "voxel spacing (mm)"),
          ("in_plane", "in-plane size (voxels)"), ("intensity", "intensity statistics"),
          ("normalisation", "intensity normalisation"), ("slice_axis", "slice axis"),
          ("refinement_preset", "refinement preset"), ("training_command", "training command"),
          ("val_dice", "val Dice"), ("arch", "network"))

#: relative tolerance on spacing and in-plane size beyond the training range
SPACING_TOLERANCE = 0.25
SIZE_TOLERANCE = 0.5


def dataset_info(root: str | Path) -> dict:
    """The card fields read from ``root/dataset.json`` (empty strings where it lacks them)."""
    path = Path(root) / "dataset.json"
    meta = {}
    if path.exists():
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    modality = meta.get("modality", {})
    if isinstance(modality, dict):
        modality = ", ".join(str(v) for v in modality.values())
    return {"dataset": str(meta.get("name") or Path(root).name), "description": str(meta.get("description", "")),
            "reference": str(meta.get("reference", "")), "modality": str(modality or "not stated"),
            "licence": str(meta.get("licence") or meta.get("license") or "not stated in dataset.json"),
            "label_names": {str(k): v for k, v in sorted(dataset_labels(root).items())}}


def intensity_stats(image: np.ndarray) -> dict:
    """Scale-free intensity statistics of one volume: ``cv`` and ``dark_fraction``."""
    a = np.asarray(image, dtype=np.float64).ravel()
    mean, std = float(a.mean()), float(a.std())
    p1, p99 = np.percentile(a, [1, 99])
    cv = std / abs(mean) if abs(mean) > 1e-12 else float("inf")
    dark = float((a <= p1 + 0.02 * (p99 - p1)).mean())
    return {"cv": round(cv, 4), "dark_fraction": round(dark, 4)}


def volume_profile(volume: io.Volume, axis: int) -> dict:
    """Spacing, in-plane size (the two axes other than ``axis``) and intensity statistics."""
    in_plane = [int(n) for i, n in enumerate(volume.shape) if i != axis]
    return {"spacing": [round(s, 4) for s in volume.spacing], "in_plane": in_plane,
            **intensity_stats(volume.array)}


def training_profile(cases: list[Case], axis: int) -> dict:
    """``[min, max]`` over the training cases of every :func:`volume_profile` entry."""
    if not cases:
        raise InputError("model card: no training cases to profile")
    profiles = [volume_profile(io.load(c.image), axis) for c in cases]
    out = {}
    for key in ("spacing", "in_plane"):
        values = np.array([p[key] for p in profiles], dtype=np.float64)
        out[key] = [[float(lo), float(hi)] for lo, hi in zip(values.min(0), values.max(0))]
    for key in ("cv", "dark_fraction"):
        values = [p[key] for p in profiles]
        out[key] = [float(min(values)), float(max(values))]
    out["cases"] = len(profiles)
    return out


def build_card(dataset_root: str | Path, train_cases: list[Case], *, axis: int, arch: str,
               command: str, preset: str, multiclass: bool = False, val_split: str = "val",
               val_metric: str = "whole-volume Dice (mean of the heads > 0.5)") -> dict:
    """A card for a network about to be trained on ``train_cases`` of ``dataset_root``;
    ``val_dice`` is filled in by :func:`with_val_dice` when a checkpoint is saved."""
    info = dataset_info(dataset_root)
    names = [v for k, v in info["label_names"].items() if k != "0"]
    foreground = ("each label value as its own class" if multiclass else
                  "labels > 0 merged into one foreground" + (f" ({' + '.join(names)})" if names else ""))
    return {**info, "foreground": foreground, "profile": training_profile(train_cases, axis),
            "normalisation": NORMALISATION, "slice_axis": axis, "refinement_preset": preset,
            "training_command": command, "val_dice": None, "val_metric": val_metric,
            "val_split": val_split, "arch": arch, "train_cases": len(train_cases)}


def with_val_dice(card: dict | None, val_dice: float, parameters: int | None = None) -> dict | None:
    if card is None:
        return None
    out = {**card, "val_dice": round(float(val_dice), 4)}
    if parameters is not None:
        out["parameters"] = int(parameters)
    return out


def _fmt_range(lo: float, hi: float, digits: int = 2) -> str:
    return f"{lo:.{digits}f}" if abs(hi - lo) < 10 ** -digits else f"{lo:.{digits}f}-{hi:.{digits}f}"


def input_differences(card: dict, volume: io.Volume, axis: int) -> list[str]:
    """What about ``volume`` (sliced along ``axis``) lies outside the card's training profile,
    one short phrase each; empty when it looks like the training data (or the card has no
    profile)."""
    prof = card.get("profile")
    if not prof:
        return []
    diffs = []
    trained_axis = card.get("slice_axis")
    if trained_axis is not None and axis != trained_axis:
        diffs.append(f"slice axis {axis} (trained on axis {trained_axis})")
    inp = volume_profile(volume, axis)
    sp_lo, sp_hi = np.array(prof["spacing"]).T
    sp = np.array(inp["spacing"])
    if np.any(sp < sp_lo / (1 + SPACING_TOLERANCE)) or np.any(sp > sp_hi * (1 + SPACING_TOLERANCE)):
        trained = " x ".join(_fmt_range(lo, hi) for lo, hi in prof["spacing"])
        diffs.append(f"spacing {' x '.join(f'{s:.2f}' for s in sp)} mm (trained {trained})")
    # the in-plane range is kept per slice axis; a card trained on another axis has other sizes
    if trained_axis is None or axis == trained_axis:
        lo, hi = np.array(prof["in_plane"]).T
        n = np.array(inp["in_plane"])
        if np.any(n < lo / (1 + SIZE_TOLERANCE)) or np.any(n > hi * (1 + SIZE_TOLERANCE)):
            trained = " x ".join(_fmt_range(a, b, 0) for a, b in prof["in_plane"])
            diffs.append(f"in-plane size {' x '.join(str(v) for v in n)} (trained {trained})")
    for key, label in (("cv", "intensity sd/mean"), ("dark_fraction", "dark-voxel fraction")):
        lo, hi = prof[key]
        tol = max(0.25 * (hi - lo), 0.05 * abs(hi))
        value = inp[key]
        if not (lo - tol <= value <= hi + tol):
            diffs.append(f"{label} {value:.3f} (trained {lo:.3f}-{hi:.3f})")
    return diffs


def mismatch_warning(card: dict | None, volume: io.Volume, axis: int, *, what: str, model: str) -> str | None:
    """One line naming how ``volume`` (called ``what``) differs from ``model``'s training data,
    or None when it does not (or the model has no card)."""
    if not card:
        return None
    diffs = input_differences(card, volume, axis)
    if not diffs:
        return None
    return (f"warning: {what} is unlike the training data of {model} ({card.get('dataset', '?')}, "
            f"{card.get('modality', '?')}): {'; '.join(diffs)}; expect a poor segmentation")


def card_lines(card: dict | None) -> list[tuple[str, str]]:
    """``(label, text)`` rows for display (``segrefine models``, the docs)."""
    if not card:
        return [("card", "none: fill it in with `segrefine card` (docs/models.md)")]
    prof = card.get("profile") or {}
    rows = []
    for key, label in FIELDS:
        if key == "spacing" and prof:
            value = " x ".join(_fmt_range(lo, hi) for lo, hi in prof["spacing"])
        elif key == "in_plane" and prof:
            value = " x ".join(_fmt_range(lo, hi, 0) for lo, hi in prof["in_plane"]) + \
                f" (slices along axis {card.get('slice_axis')})"
        elif key == "intensity" and prof:
            value = (f"sd/mean {_fmt_range(*prof['cv'], 3)}, dark-voxel fraction "
                     f"{_fmt_range(*prof['dark_fraction'], 3)} over {prof.get('cases', '?')} training cases")
        elif key == "label_names":
            value = ", ".join(f"{k} {v}" for k, v in card.get(key, {}).items()) or "not stated"
        elif key == "val_dice":
            v = card.get("val_dice")
            value = "not recorded" if v is None else f"{v:.4f} ({card.get('val_metric', '')}, split " \
                                                      f"{card.get('val_split', '?')!r})"
        elif key == "arch":
            value = str(card.get("arch", "?")) + (f", {card['parameters']:,} parameters"
                                                  if card.get("parameters") else "")
        else:
            value = str(card.get(key, "not recorded"))
        rows.append((label, value))
    return rows


def model_warning(net, volume: io.Volume, axis: int, *, what: str) -> str | None:
    """:func:`mismatch_warning` for a loaded network (its ``card`` and ``source`` from
    :func:`segrefine.nets.checkpoint.load_network`)."""
    model = Path(getattr(net, "source", "the model")).name
    return mismatch_warning(getattr(net, "card", None), volume, axis, what=what, model=model)
