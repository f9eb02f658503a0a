"""Table 1 of the UGIR paper for any Decathlon-layout dataset.

For U-Net, MC dropout (T passes), an ensemble of U-Nets and MG-Net: parameters,
median seconds per volume, Dice, ASSD, UEO, RVE and AUROC (UEO/RVE thresholds
chosen on the validation split), and the median time on the fetal stack.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.bench.common import (
    cases_for,
    command_line,
    machine,
    markdown_table,
    mean_sd,
    train_like_shipped_unet,
    write_json,
    write_text,
)
from segrefine.datasets import Case
from segrefine.errors import InputError
from segrefine.figures import save_figure
from segrefine.metrics import auroc, best_ueo_threshold, error_mask, rve, segmentation_scores, ueo
from segrefine.nets.checkpoint import shipped_model
from segrefine.uncertainty import OnnxOptions, Prediction, Predictor

METHOD_LABELS = {"unet": "U-Net", "mcdropout": "MC dropout", "ensemble": "Ensemble", "mgnet": "MG-Net",
                 "mgnet_fp32": "MG-Net, fp32"}
#: the rows whose precision is fp32 everywhere; MG-Net's default is int8 on a CPU with VNNI
FP32 = OnnxOptions(precision="fp32")


def ensemble_members(dataset: Path, cache: Path, n: int = 5, *, log=print) -> list[Path]:
    """The shipped U-Net plus ``n - 1`` U-Nets trained like it with seeds 1.. (cached in ``cache``).

    The training settings are read from the shipped checkpoint, so every member is
    trained exactly like the shipped one except for the seed.
    """
    members = [shipped_model("unet")]
    for seed in range(1, n):
        path = Path(cache) / f"unet_seed{seed}.pt"
        if not path.exists():
            log(f"training ensemble member {seed} -> {path}")
            train_like_shipped_unet(dataset, "train", path, seed=seed)
        members.append(path)
    return members


def _load(case: Case):
    vol = io.load(case.image)
    ref = np.asarray(io.load(case.label, finite=False).array) > 0
    return vol, ref


def evaluate_method(predictor: Predictor, val: list[Case], test: list[Case]) -> dict:
    """Threshold on ``val``, figures on ``test``."""
    has_unc = predictor.method != "unet"
    thr = None
    if has_unc:
        uncs, errs = [], []
        for case in val:
            vol, ref = _load(case)
            pred = predictor(vol.array)
            uncs.append(pred.uncertainty)
            errs.append(error_mask(pred.label, ref))
        thr = best_ueo_threshold(uncs, errs)
    per_case = []
    for case in test:
        vol, ref = _load(case)
        pred = predictor(vol.array)
        rec = {"case": case.name, "seconds": pred.seconds,
               **segmentation_scores(pred.label, ref, vol.spacing)}
        if has_unc:
            err = error_mask(pred.label, ref)
            rec.update(ueo=ueo(pred.uncertainty, err, thr), rve=rve(pred.uncertainty, err, thr),
                       auroc=auroc(pred.uncertainty, err))
        per_case.append(rec)
    return {"threshold": thr, "cases": per_case}


def time_volume(predictor: Predictor, image: np.ndarray, repeats: int = 3, warmup: int = 1,
                first: list | None = None) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` ones (ONNX Runtime sets up its
    memory for a new input shape on the first call); the warm-up calls' seconds are appended
    to ``first`` when given."""
    for _ in range(warmup):
        t = time.perf_counter()
        predictor(image)
        if first is not None:
            first.append(time.perf_counter() - t)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        predictor(image)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _runtime(pred: Predictor) -> str:
    """How a method ran: the backend and the number of network passes per slice."""
    name = {"onnx": "ONNX Runtime", "torch": "PyTorch"}[pred.backend]
    if pred.backend == "onnx":
        precision = {pred.onnx.precision_for(n, dropout=pred.method == "mcdropout") for n in pred.nets}
        name += ", int8 (levels >= 1)" if precision == {"int8"} else ", fp32"
    passes = pred.passes if pred.method == "mcdropout" else len(pred.nets)
    return f"{name}, {passes} pass{'es' if passes > 1 else ''}"


def run(images: Path, labels: Path, out_json: Path, *, split: str | None = "test",
        val_split: str = "val", splits_file: Path | None = None, passes: int = 10,
        ensemble_models: list[Path] | None = None, cache: Path = Path("bench_out/ensemble"),
        fetal: Path | None = None, max_cases: int | None = None,
        methods=("unet", "mcdropout", "ensemble", "mgnet", "mgnet_fp32"), log=print) -> dict:
    val = cases_for(images, labels, val_split, splits_file)
    test = cases_for(images, labels, split, splits_file)
    if not split:  # every case but the tuning ones: thresholds are never tuned on reported cases
        tuned = {c.name for c in val}
        test = [c for c in test if c.name not in tuned]
    if max_cases:
        test, val = test[:max_cases], val[:max_cases]
    unknown = set(methods) - set(METHOD_LABELS)
    if unknown or not {"mcdropout", "mgnet"} <= set(methods):
        raise InputError(f"--methods must include mcdropout and mgnet and name only "
                         f"{', '.join(METHOD_LABELS)}; got {', '.join(methods)}")
    if "ensemble" in methods and ensemble_models is None:
        ensemble_models = ensemble_members(Path(images).parent, cache, log=log)
    makers = {"unet": lambda: Predictor("unet"), "mcdropout": lambda: Predictor("mcdropout", passes=passes),
              "ensemble": lambda: Predictor("ensemble", models=ensemble_models), "mgnet": lambda: Predictor("mgnet"),
              "mgnet_fp32": lambda: Predictor("mgnet", onnx=FP32)}
    predictors = {name: makers[name]() for name in METHOD_LABELS if name in methods}
    results = {}
    for name, pred in predictors.items():
        log(f"{METHOD_LABELS[name]}: {len(val)} val + {len(test)} test cases")
        res = evaluate_method(pred, val, test)
        res["parameters_M"] = pred.num_parameters / 1e6
        res["runtime"] = _runtime(pred)
        res["median_seconds"] = statistics.median(c["seconds"] for c in res["cases"])
        if fetal is not None and Path(fetal).exists():
            first: list = []
            res["fetal_median_seconds"] = time_volume(pred, io.load(fetal).array, first=first)
            res["fetal_first_call_seconds"] = first[0]  # the first call on this shape
        results[name] = res
    summary = {}
    for name, res in results.items():
        s = {"parameters_M": res["parameters_M"], "runtime": res["runtime"],
             "median_seconds": res["median_seconds"],
             "fetal_median_seconds": res.get("fetal_median_seconds"),
             "fetal_first_call_seconds": res.get("fetal_first_call_seconds"), "threshold": res["threshold"]}
        for key in ("dice", "assd", "hd95", "ueo", "rve", "auroc"):
            vals = [c.get(key) for c in res["cases"] if c.get(key) is not None]
            arr = np.asarray(vals, float)
            s[key] = float(np.nanmean(arr)) if arr.size else None
            s[f"{key}_sd"] = float(np.nanstd(arr)) if arr.size else None
        summary[name] = s
    mc, mg = summary["mcdropout"], summary["mgnet"]
    ratios = {"mcdropout_over_mgnet_time": mc["median_seconds"] / mg["median_seconds"]}
    if mg["fetal_median_seconds"]:
        ratios["fetal_mcdropout_over_mgnet_time"] = mc["fetal_median_seconds"] / mg["fetal_median_seconds"]
    if "mgnet_fp32" in summary:  # the same runtime and precision as MC dropout
        f32 = summary["mgnet_fp32"]
        ratios["mcdropout_over_mgnet_fp32_time"] = mc["median_seconds"] / f32["median_seconds"]
        if f32["fetal_median_seconds"]:
            ratios["fetal_mcdropout_over_mgnet_fp32_time"] = mc["fetal_median_seconds"] / f32["fetal_median_seconds"]
    data = {"benchmark": "uncertainty", "command": command_line(), "machine": machine(),
            "images": str(images), "split": split, "val_split": val_split, "mc_samples": passes,  # the key of the results files, kept
            "ensemble_models": [str(p) for p in ensemble_models or []], "fetal_stack": str(fetal) if fetal else None,
            "summary": summary, "ratios": ratios, "results": results}
    write_json(out_json, data)
    write_text(Path(out_json).with_suffix(".md"), table_markdown(data))
    figure(Path(out_json).with_suffix(".png"), predictors, test[0])
    return data


def table_markdown(data: dict) -> str:
    rows = []
    for name, s in data["summary"].items():
        res = data["results"][name]

        def col(key, scale=1.0):
            vals = [c[key] * scale for c in res["cases"] if c.get(key) is not None]
            return mean_sd(vals) if vals else "–"

        fetal = s["fetal_median_seconds"]
        rows.append([METHOD_LABELS[name], s.get("runtime", "–"), f"{s['parameters_M']:.2f}",
                     f"{s['median_seconds']:.3f}",
                     f"{fetal:.2f}" if fetal else "–", col("dice", 100), col("assd"),
                     col("ueo", 100), col("rve", 100), col("auroc", 100)])
    header = ["method", "runtime", "params (M)", "s / volume (median)", "s / fetal stack (median)", "Dice (%)",
              "ASSD (mm)", "UEO (%)", "RVE (%)", "AUROC (%)"]
    m = data["machine"]
    r = data["ratios"]
    ratio = (f"\nMC dropout (T = {data['mc_samples']}) over MG-Net (its default precision), same runtime: "
             f"{r['mcdropout_over_mgnet_time']:.1f}x per hippocampus volume"
             + (f", {r['fetal_mcdropout_over_mgnet_time']:.1f}x on the fetal stack"
                if "fetal_mcdropout_over_mgnet_time" in r else "") + ".\n")
    if "mcdropout_over_mgnet_fp32_time" in r:
        ratio += (f"\nMC dropout over MG-Net in fp32 (same runtime and precision): "
                  f"{r['mcdropout_over_mgnet_fp32_time']:.1f}x per hippocampus volume"
                  + (f", {r['fetal_mcdropout_over_mgnet_fp32_time']:.1f}x on the fetal stack"
                     if "fetal_mcdropout_over_mgnet_fp32_time" in r else "") + ".\n")
    return (markdown_table(header, rows) + ratio + f"\nMachine: {m['cpu']}, {m['cores']} cores, "
            f"torch {m['torch']} with {m['torch_threads']} threads. Command: `{data['command']}`\n")


def figure(path: Path, predictors: dict[str, Predictor], case: Case) -> Path:
    """Fig. 3 style: the same slice, each method's segmentation (row 1) and uncertainty (row 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segrefine.figures import best_slice

    vol, ref = _load(case)
    preds: dict[str, Prediction] = {n: p(vol.array) for n, p in predictors.items()}
    k = best_slice(ref)
    img = vol.array[:, :, k].T
    fig, axes = plt.subplots(2, len(preds), figsize=(3 * len(preds), 6), squeeze=False)
    for c, (name, pred) in enumerate(preds.items()):
        axes[0, c].imshow(img, cmap="gray", origin="lower")
        axes[0, c].contour(ref[:, :, k].T, levels=[0.5], colors="g", linewidths=1)
        axes[0, c].contour(pred.label[:, :, k].T > 0, levels=[0.5], colors="r", linewidths=1)
        axes[0, c].set_title(METHOD_LABELS[name])
        u = pred.uncertainty[:, :, k].T
        axes[1, c].imshow(u / (u.max() if u.max() > 0 else 1), cmap="jet", origin="lower", vmin=0, vmax=1)
        axes[1, c].set_title(f"{pred.uncertainty_kind} (normalised)")
        for a in axes[:, c]:
            a.axis("off")
    fig.suptitle(f"{case.name} slice {k}: reference green, prediction red")
    save_figure(fig, path)
    return path
