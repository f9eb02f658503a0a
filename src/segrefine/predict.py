"""Batch prediction over files and folders: ``<case>.nii.gz``, ``_prob`` and ``_uncertainty``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.uncertainty import Prediction, Predictor


def output_paths(out_dir: Path, case: str) -> dict[str, Path]:
    return {"label": out_dir / f"{case}.nii.gz", "prob": out_dir / f"{case}_prob.nii.gz",
            "uncertainty": out_dir / f"{case}_uncertainty.nii.gz"}


def write_prediction(volume: io.Volume, pred: Prediction, out_dir: Path, case: str) -> dict[str, Path]:
    """Write labels (uint8), probability and uncertainty (float32) with the input's affine."""
    paths = output_paths(out_dir, case)
    io.save(volume.with_array(pred.label.astype(np.uint8)), paths["label"], dtype=np.uint8)
    io.save(volume.with_array(pred.prob.astype(np.float32)), paths["prob"], dtype=np.float32)
    io.save(volume.with_array(pred.uncertainty.astype(np.float32)), paths["uncertainty"],
            dtype=np.float32)
    return paths


def load_inputs(inputs: list[Path]) -> list[tuple[Path, io.Volume]]:
    """Load (and so validate) every input before anything is written."""
    return [(path, io.load(path)) for path in inputs]


def predict_files(volumes: list[tuple[Path, io.Volume]], out_dir: Path, predictor: Predictor,
                  on_case: Callable[[str, Prediction], None] | None = None) -> list[dict]:
    """Predict every loaded input and write its three files to ``out_dir``."""
    out_dir = io.check_writable_dir(out_dir)
    records = []
    for path, volume in volumes:
        pred = predictor(volume.array)
        case = io.case_name(path)
        write_prediction(volume, pred, out_dir, case)
        records.append({"case": case, "seconds": pred.seconds,
                        "foreground_voxels": int((pred.label > 0).sum())})
        if on_case:
            on_case(case, pred)
    return records
