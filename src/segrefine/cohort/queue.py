"""The cohort review queue: volumes by expected gain from review, each with its ranked slices.

A volume's expected gain is the number of voxels its model expects to be wrong,
``Σ min(p, 1 - p)`` (:mod:`segrefine.guidance`'s ``gain`` order summed over the
slices): checking the volumes in this order spends a reviewer's time where the
most errors are expected. Each entry keeps the slices of the ``gain`` order
within the budget (60 % of the slices) with their expected wrong voxels, the
order a session on that volume would show them in.

The figures come from ``OUT/manifest.json`` (computed by the workers from the
maps they wrote); a folder of ``segrefine predict`` outputs without a manifest
is ranked from its ``_prob`` and ``_uncertainty`` maps.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from segrefine import io
from segrefine.cohort.tasks import review_summary
from segrefine.errors import InputError

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
QUEUE = "queue.json"


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    """``OUT/manifest.json``, or None when absent (a corrupt one is reported and ignored)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable manifest (%s); ignored", path, exc)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("cases"), dict) else None


def _from_maps(out: Path) -> list[dict]:
    entries = []
    for prob in sorted(out.glob("*_prob.nii.gz")):
        case = prob.name[: -len("_prob.nii.gz")]
        label, unc = out / f"{case}.nii.gz", out / f"{case}_uncertainty.nii.gz"
        if not (label.is_file() and unc.is_file()):
            continue
        p = io.load(prob).array
        rec = {"case": case, "image": None, "status": "done"}
        rec.update(review_summary(io.load(unc).array, io.load(label, finite=False).array, p))
        entries.append(rec)
    return entries


def review_queue(out_dir: str | os.PathLike) -> dict:
    """The queue of ``out_dir`` (a cohort output folder): ``{"cases": [...], "failed": [...]}`` with
    ``cases`` ranked by ``expected_gain`` (ties: case name), each with ``rank``, ``case``,
    ``image``, ``expected_gain``, ``uncertainty``, ``foreground_voxels``, ``axis`` and ``slices``
    (``[index, expected wrong voxels]`` in review order)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: not a folder")
    manifest = read_manifest(out)
    if manifest is not None:
        records = list(manifest["cases"].values())
        source = str(out / MANIFEST)
    else:
        records = _from_maps(out)
        source = "maps"
        if not records:
            raise InputError(f"{out}: no {MANIFEST} and no <case>_prob.nii.gz maps to rank; run "
                             "segrefine predict | refine-gcn | suggest on the cohort first")
    done = [r for r in records if r.get("status") == "done" and r.get("expected_gain") is not None]
    done.sort(key=lambda r: (-r["expected_gain"], r["case"]))
    keys = ("case", "image", "expected_gain", "uncertainty", "foreground_voxels", "axis", "slices")
    cases = [{"rank": i + 1, **{k: r.get(k) for k in keys}} for i, r in enumerate(done)]
    failed = [{"case": r["case"], "error": r.get("error")} for r in records if r.get("status") == "failed"]
    total = sum(c["expected_gain"] for c in cases)
    return {"source": source, "order": "gain", "total_expected_gain": total, "cases": cases,
            "failed": sorted(failed, key=lambda f: f["case"])}
