"""Evaluation of predicted label files against reference label files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.errors import InputError
from segrefine.metrics import nanmean_sd, segmentation_scores

KEYS = ("dice", "assd", "hd95")


def evaluate_folders(pred_dir: Path, ref_dir: Path) -> dict:
    """Per-case and mean Dice, ASSD, HD95 (whole structure, label > 0).

    Predictions are ``<case>.nii.gz`` in ``pred_dir`` (``_prob``/``_uncertainty``
    files are ignored); every one needs a reference of the same name.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for d, what in ((pred_dir, "--pred"), (ref_dir, "--ref")):
        if not d.is_dir():
            raise InputError(f"{what} {d}: not a folder")
    refs = {io.case_name(p): p for p in ref_dir.iterdir() if io.is_image_file(p)}
    preds = [p for p in sorted(pred_dir.iterdir()) if io.is_image_file(p)
             and not io.case_name(p).endswith(("_prob", "_uncertainty", "_entropy"))]
    if not preds:
        raise InputError(f"--pred {pred_dir}: no label files")
    cases = []
    for p in preds:
        name = io.case_name(p)
        if name not in refs:
            raise InputError(f"{p}: no reference {name} in {ref_dir}")
        pv, rv = io.load(p, finite=False), io.load(refs[name], finite=False)
        if pv.shape != rv.shape:
            raise InputError(f"{p}: shape {pv.shape} differs from reference shape {rv.shape}")
        scores = segmentation_scores(np.asarray(pv.array), np.asarray(rv.array), rv.spacing)
        cases.append({"case": name, **scores})
    mean = {}
    for k in KEYS:
        m, sd, nan = nanmean_sd(c[k] for c in cases)
        mean[k], mean[f"{k}_sd"], mean[f"{k}_nan"] = m, sd, nan
    return {"cases": cases, "mean": mean}
