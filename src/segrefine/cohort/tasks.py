"""What a worker does for one case: the inputs of a cohort, the per-case tasks, their outputs.

Every task takes plain values (paths as strings, an options dict) so that it
pickles to any Dask worker, and returns one record (a dict) that the client
writes into ``OUT/manifest.json``. A task never raises for a bad case: an
:class:`InputError` (or any other error) becomes ``status: failed`` with a
one-line error, and the other cases go on.

The networks are loaded once per worker process (:func:`cached_predictor`,
warmed by :class:`LoadModel` when the worker starts), not once per case.
"""

from __future__ import annotations

import functools
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.errors import InputError
from segrefine.guidance import budget_count, rank_slices
from segrefine.guidance import suggest as rank_suggest

KINDS = ("predict", "refine-gcn", "suggest")
#: the share of each volume's slices whose ranks the manifest keeps (the suggestion budget)
REVIEW_BUDGET = 0.6
LIST_SUFFIXES = (".txt", ".lst")


# ------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class CohortCase:
    name: str
    image: Path


def _list_file(path: Path) -> list[Path]:
    """One image path a line (relative to the list's folder); blank lines and ``#`` lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the list file ({exc})") from None
    entries = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not entries:
        raise InputError(f"{path}: the list file names no images")
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]


def cohort_inputs(path: str | os.PathLike, *, split: str | None = None) -> list[CohortCase]:
    """The cases of a folder of images, a list file (``.txt``/``.lst``) or a Decathlon dataset.

    A Decathlon / nnU-Net dataset (a folder with ``imagesTr/`` or ``imagesTs/``) gives its
    ``imagesTr`` and ``imagesTs`` cases (``split``: only the cases of that split of
    ``splits.json``). Case names must be unique: they name the outputs.
    """
    from segrefine.datasets import load_dataset, load_splits, pair_folders, select

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    decathlon = path.is_dir() and any((path / f"images{s}").is_dir() for s in ("Tr", "Ts"))
    if split is not None and not decathlon:
        raise InputError(f"--split {split!r} needs a Decathlon dataset folder (imagesTr/), got {path}")
    if decathlon:
        cases = []
        for test in (False, True):
            if (path / ("imagesTs" if test else "imagesTr")).is_dir():
                cases += [CohortCase(c.name, c.image) for c in load_dataset(path, test=test)]
        if split is not None:
            splits = load_splits(path / "splits.json")
            if split not in splits:
                raise InputError(f"{path / 'splits.json'}: no split named {split!r} (has {', '.join(splits)})")
            by_name = {c.name: c for c in cases}
            chosen = select([c for c in pair_folders(path / "imagesTr", None)], splits[split],
                            what=f"{path / 'splits.json'}:{split}")
            cases = [by_name[c.name] for c in chosen]
    elif path.is_file() and path.name.lower().endswith(LIST_SUFFIXES):
        cases = [CohortCase(io.case_name(p), p) for p in _list_file(path)]
    else:
        cases = [CohortCase(io.case_name(p), p) for p in io.list_images(path)]
    seen: dict[str, Path] = {}
    for c in cases:
        if c.name in seen:
            raise InputError(f"{path}: two inputs give the case name {c.name!r} ({seen[c.name]} and "
                             f"{c.image}); their outputs would overwrite each other")
        seen[c.name] = c.image
    return cases


# ------------------------------------------------------------------------------ models
_LOADS = {"count": 0}


@functools.lru_cache(maxsize=4)
def cached_predictor(method: str, models: tuple[str, ...] = (), passes: int = 10, axis: int = 2,
                     uncertainty: str = "variance", backend: str = "auto", precision: str = "auto"):
    """One :class:`~segrefine.uncertainty.Predictor` per process and settings (a worker's model)."""
    from segrefine.uncertainty import OnnxOptions, Predictor

    _LOADS["count"] += 1
    return Predictor(method, models=list(models) or None, passes=passes, axis=axis,
                     uncertainty=uncertainty, backend=backend, onnx=OnnxOptions(precision=precision))


def predictor_for(kind: str, options: dict):
    """The predictor a task of ``kind`` with ``options`` uses (loaded once per process)."""
    if kind == "predict":
        return cached_predictor(options.get("method", "mgnet"), tuple(options.get("models") or ()),
                                int(options.get("passes", 10)), int(options.get("axis", 2)),
                                options.get("uncertainty", "variance"), "auto", options.get("precision", "auto"))
    if kind == "refine-gcn":
        # torch, not ONNX Runtime: its dropout masks follow torch's seed, set per case, so a case
        # gives the same passes on any worker, in any order
        return cached_predictor("mcdropout", tuple(options.get("models") or ()),
                                int(options.get("passes", 20)), 2, "variance", "torch")
    if kind == "suggest":
        return cached_predictor("mgnet", (), 10, int(options.get("axis", 2)))
    raise InputError(f"cohort task must be one of {', '.join(KINDS)}, got {kind!r}")


# ------------------------------------------------------------------------------ outputs
def output_names(kind: str, case: str) -> list[str]:
    if kind == "predict":
        return [f"{case}.nii.gz", f"{case}_prob.nii.gz", f"{case}_uncertainty.nii.gz"]
    if kind == "refine-gcn":
        return [f"{case}.nii.gz", f"{case}_entropy.nii.gz"]
    return [f"{case}.json"]


def _load_outputs(kind: str, case: str, image: str, out: Path) -> dict | None:
    """The outputs of a finished case, read back and checked; None when any is missing or bad."""
    paths = [out / n for n in output_names(kind, case)]
    if not all(p.is_file() for p in paths):
        return None
    try:
        if kind == "suggest":
            data = json.loads(paths[0].read_text(encoding="utf-8"))
            ok = (isinstance(data, dict) and data.get("image") == image and isinstance(data.get("slices"), list)
                  and all(s.get("expected_errors") is not None for s in data["slices"]))
            return {"suggestions": data} if ok else None
        vols = [io.load(p, finite=False) for p in paths]
    except (InputError, ValueError, OSError):
        return None
    shapes = {v.shape for v in vols}
    if len(shapes) != 1:
        return None
    if image.lower().endswith(io.NIFTI_SUFFIXES):
        import nibabel as nib

        try:
            if tuple(nib.load(image).shape) != vols[0].shape:
                return None
        except Exception:  # an unreadable input: the outputs cannot be checked against it
            return None
    arrays = [np.asarray(v.array) for v in vols]
    if not all(np.isfinite(a).all() for a in arrays[1:]):
        return None
    return {"arrays": arrays}


def minority_from_entropy(entropy: np.ndarray) -> np.ndarray:
    """``min(p, 1 - p)`` from the binary entropy ``H_b(p)`` in bits (H is symmetric, and one-to-one
    on [0, 0.5]): bisection to 1e-9, so the expected wrong voxels of a refine-gcn output can be
    read back from its ``_entropy`` map alone."""
    h = np.clip(np.asarray(entropy, np.float64), 0.0, 1.0)
    lo, hi = np.zeros_like(h), np.full_like(h, 0.5)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        m = np.clip(mid, 1e-300, 0.5)
        hm = -(m * np.log2(m) + (1 - m) * np.log2(1 - m))
        below = hm < h
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return (0.5 * (lo + hi)).astype(np.float32)


def review_summary(uncertainty: np.ndarray, label: np.ndarray, prob: np.ndarray, *, axis: int = 2) -> dict:
    """Volume-level review figures from the maps, with :mod:`segrefine.guidance`'s ``gain`` order."""
    return review_from_suggestions(rank_suggest(uncertainty, label, prob=prob, order="gain", axis=axis,
                                                budget=REVIEW_BUDGET))


def review_from_suggestions(s: dict) -> dict:
    """``expected_gain`` = Σ min(p, 1 - p) (the expected wrong voxels that a review can fix),
    ``uncertainty`` = ΣU / (ΣY + ζ) (the paper's ν over the whole volume), the foreground
    voxels, and the slices of the ``gain`` order within the budget as ``[index, expected]``."""
    slices = s["slices"]
    expected = np.array([x["expected_errors"] or 0.0 for x in slices], float)
    index = np.array([x["index"] for x in slices])
    order = rank_slices(expected)
    area = float(sum(x["area"] for x in slices))
    top = order[:budget_count(len(order), REVIEW_BUDGET)]
    return {"expected_gain": float(expected.sum()),
            "uncertainty": float(sum(x["nu_naive"] for x in slices) / (area + s["zeta"])),
            "foreground_voxels": int(area), "axis": s["axis"],
            "slices": [[int(index[i]), round(float(expected[i]), 3)] for i in top]}


def _review_from_files(kind: str, loaded: dict, options: dict) -> dict:
    if kind == "suggest":
        return review_from_suggestions(loaded["suggestions"])
    arrays = loaded["arrays"]
    if kind == "predict":
        label, prob, unc = arrays
        return review_summary(unc, label, prob, axis=int(options.get("axis", 2)))
    label, entropy = arrays
    return review_summary(entropy, label, minority_from_entropy(entropy))


# ------------------------------------------------------------------------------ the tasks
def _predict(case: str, vol: io.Volume, out: Path, options: dict) -> dict:
    from segrefine.predict import write_prediction

    pred = predictor_for("predict", options)(vol.array)
    write_prediction(vol, pred, out, case)
    return review_summary(pred.uncertainty, pred.label, pred.prob, axis=int(options.get("axis", 2)))


def refine_gcn_maps(vol: io.Volume, *, samples=None, prob=None, entropy=None, crf: bool = False,
                    **gcn_options) -> tuple[np.ndarray, np.ndarray, dict, list]:
    """``refine_gcn`` on one volume (then the dense CRF with ``crf``): the refined labels (uint8),
    the entropy map written beside them (bits, float32), the info dict and the warnings raised."""
    import warnings

    from segrefine.refine.gcn import mc_statistics, refine_gcn
    from segrefine.uncertainty import binary_entropy

    kw = {"samples": samples} if samples is not None else {"prob": prob}
    if entropy is not None:
        kw["entropy"] = entropy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refined, info = refine_gcn(vol.array, spacing=vol.spacing, return_prob=crf, **kw, **gcn_options)
        if crf:
            from segrefine.refine.crf import dense_crf

            before = refined
            refined = dense_crf(vol.array, info["prob"], spacing=vol.spacing)
            info["n_changed_crf"] = int((refined != before).sum())
    if samples is not None:
        entropy = mc_statistics(samples)[1]
    elif entropy is None:
        entropy = binary_entropy(prob)
    return refined.astype(np.uint8), np.asarray(entropy, np.float32), info, [str(w.message) for w in caught]


def _refine_gcn(case: str, vol: io.Volume, out: Path, options: dict) -> dict:
    import torch

    state = torch.get_rng_state()
    torch.manual_seed(zlib.crc32(case.encode("utf-8")))
    try:
        samples = predictor_for("refine-gcn", options)(vol.array, keep_samples=True).samples
    finally:
        torch.set_rng_state(state)
    gcn = {k: options[k] for k in ("tau", "margin", "nodes", "max_nodes", "graph", "relabel") if k in options}
    refined, entropy, info, _ = refine_gcn_maps(vol, samples=samples, crf=bool(options.get("crf")), **gcn)
    io.save(vol.with_array(entropy), out / f"{case}_entropy.nii.gz", dtype=np.float32)
    io.save(vol.with_array(refined), out / f"{case}.nii.gz", dtype=np.uint8)
    return review_summary(entropy, refined, minority_from_entropy(entropy))


def _suggest(case: str, vol: io.Volume, out: Path, options: dict, image: str) -> dict:
    axis = int(options.get("axis", 2))
    pred = predictor_for("suggest", options)(vol.array)
    data = rank_suggest(pred.uncertainty, pred.label, prob=pred.prob, order=options.get("order", "gain"),
                        axis=axis, budget=float(options.get("budget", 0.6)))
    data["image"] = image
    with io.atomic_path(out / f"{case}.json") as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return review_from_suggestions(data)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and isinstance(exc, InputError) else f"{type(exc).__name__}: {text[0] if text else ''}"


def run_case(kind: str, case: str, image: str, out_dir: str, options: dict, *, overwrite: bool = False,
             max_voxels: int | None = None) -> dict:
    """Do one case (or find it already done) and return its manifest record; never raises."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    if max_voxels is not None:
        io.MAX_VOXELS = max_voxels
    start, cpu = time.perf_counter(), time.process_time()
    out = Path(out_dir)
    rec = {"case": case, "image": image, "status": "done", "error": None, "resumed": False,
           "worker": _worker_name(), "pid": os.getpid()}
    try:
        loaded = None if overwrite else _load_outputs(kind, case, image, out)
        if loaded is not None:
            rec["resumed"] = True
            rec.update(_review_from_files(kind, loaded, options))
        else:
            vol = io.load(image)
            if kind == "predict":
                rec.update(_predict(case, vol, out, options))
            elif kind == "refine-gcn":
                rec.update(_refine_gcn(case, vol, out, options))
            else:
                rec.update(_suggest(case, vol, out, options, image))
    except Exception as exc:  # noqa: BLE001 - one bad case is recorded, the cohort goes on
        rec.update(status="failed", error=_first_line(exc))
    rec["seconds"] = round(time.perf_counter() - start, 4)
    rec["cpu_seconds"] = round(time.process_time() - cpu, 4)  # this process's CPU time: one thread, the task's
    rec["model_loads"] = _LOADS["count"]
    return rec


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"
