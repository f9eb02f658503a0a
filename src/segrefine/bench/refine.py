"""Slice-level refinement benchmark (UGIR Fig. 4): I-DRLSE vs Graph Cut vs R-Net.

Slices: MG-Net's prediction on the cases (hippocampus ``test`` split), every
slice where the simulated user would refine (slice Dice < 0.85 and an error
component of at least 4 pixels, :func:`segrefine.simulate.needs_refinement`);
if more than ``max_slices`` (100), a seeded random subset. One set of
simulated scribbles per slice (:func:`segrefine.interaction.simulate_scribbles`,
min size 4 pixels) is shared by every method. Slices whose error is too thin
for a stroke get no scribbles and are skipped (counted in the JSON).

Speed: median and 95th-percentile milliseconds per slice per method, and the
numba geodesic distance and I-DRLSE against their straightforward NumPy
versions on 192x192 slices of the fetal stack, measured in the same run.
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
    write_json,
    write_text,
)
from segrefine.figures import save_figure
from segrefine.metrics import assd, dice
from segrefine.preprocess import normalise, to_slices
from segrefine.simulate import UserModel, needs_refinement

METHODS = ("idrlse", "graphcut", "rnet")
NAMES = {"idrlse": "I-DRLSE", "graphcut": "Graph Cut", "rnet": "R-Net",
         "idrlse@paper": "I-DRLSE (paper parameters)", "graphcut@paper": "Graph Cut (λ = 5)"}


def _method_preset(name: str, preset: str) -> tuple[str, str]:
    """``idrlse@paper`` -> (idrlse, paper); ``idrlse`` -> (idrlse, the run's preset)."""
    method, _, p = name.partition("@")
    return method, p or preset


def select_slices(cases, *, max_slices: int = 100, seed: int = 0, log=print) -> list[dict]:
    from segrefine.interaction import simulate_scribbles
    from segrefine.uncertainty import Predictor

    predictor = Predictor("mgnet")
    user = UserModel()
    items = []
    skipped = 0
    for case in cases:
        vol = io.load(case.image)
        gt = np.asarray(io.load(case.label, finite=False).array) > 0
        pred = predictor(vol.array)
        norm = normalise(vol.array)
        sp = vol.spacing[:2]
        for k, (img, p, lab, g) in enumerate(zip(to_slices(norm, 2), to_slices(pred.prob, 2),
                                                  to_slices(pred.label, 2), to_slices(gt, 2))):
            if not needs_refinement(lab, g, user):
                continue
            scr = simulate_scribbles(lab > 0, g, seed=seed + k, min_size=user.min_error)
            if not scr.any():
                skipped += 1
                continue
            items.append({"case": case.name, "slice": k, "image": img.copy(), "prob": p.copy(),
                          "init": lab > 0, "gt": g.copy(), "scribbles": scr, "spacing": sp})
    rng = np.random.default_rng(seed)
    if len(items) > max_slices:
        keep = sorted(rng.choice(len(items), size=max_slices, replace=False))
        items = [items[i] for i in keep]
    log(f"{len(items)} mis-segmented slices selected ({skipped} skipped: error too thin to scribble)")
    return items, skipped


def _slice_assd(a, b, sp):
    return assd(a, b, sp) if a.any() and b.any() else float("nan")


def run_methods(items, methods=METHODS, preset: str = "paper") -> dict:
    from segrefine.refine.slice import refine_slice

    out = {}
    for m in methods:
        method, p = _method_preset(m, preset)
        recs = []
        for it in items:
            t = time.perf_counter()
            mask = refine_slice(method, it["image"], it["prob"], it["init"], it["scribbles"],
                                spacing=it["spacing"], preset=p)
            ms = (time.perf_counter() - t) * 1000
            recs.append({"case": it["case"], "slice": it["slice"], "ms": ms,
                         "dice_before": dice(it["init"], it["gt"]), "dice_after": dice(mask, it["gt"]),
                         "assd_before": _slice_assd(it["init"], it["gt"], it["spacing"]),
                         "assd_after": _slice_assd(mask, it["gt"], it["spacing"]),
                         "fg_scribbles_kept": bool(mask[it["scribbles"] == 1].all()),
                         "bg_scribbles_kept": bool(not mask[it["scribbles"] == 2].any())})
        out[m] = recs
    return out


def speed_baselines(fetal_image: Path | None, repeats: int = 5) -> dict:
    """Numba vs NumPy on 192x192 fetal slices: geodesic distance and I-DRLSE."""
    from segrefine.geodesic import geodesic_distance, geodesic_distance_numpy
    from segrefine.refine.levelset import idrlse, idrlse_numpy

    if fetal_image is None or not Path(fetal_image).exists():
        return {}
    vol = io.load(fetal_image)
    img = normalise(vol.array)[:, :, vol.shape[2] // 2].astype(np.float32)
    h, w = img.shape
    seeds = np.zeros(img.shape, bool)
    seeds[h // 2 - 3:h // 2 + 3, w // 2] = True
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 5) ** 2
    prob = np.clip(0.5 + 0.4 * np.where(disc, 1, -1) + 0.05 * img, 0, 1).astype(np.float32)
    scr = np.zeros(img.shape, np.uint8)
    scr[h // 2 - 3:h // 2 + 3, w // 2] = 1
    scr[5:10, 5] = 2

    def timed(fn, n=repeats):
        fn()  # warm-up (numba compile)
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1000)
        return statistics.median(ts)

    g_fast = timed(lambda: geodesic_distance(img, seeds, lamb=0.5))
    g_slow = timed(lambda: geodesic_distance_numpy(img, seeds, lamb=0.5), n=2)
    l_fast = timed(lambda: idrlse(prob, scr, image=img))
    l_slow = timed(lambda: idrlse_numpy(prob, scr, image=img), n=2)
    return {"slice_shape": [h, w], "geodesic_ms": g_fast, "geodesic_numpy_ms": g_slow,
            "geodesic_speedup": g_slow / g_fast, "idrlse_ms": l_fast, "idrlse_numpy_ms": l_slow,
            "idrlse_speedup": l_slow / l_fast}


def run(images: Path, labels: Path, out_json: Path, *, split: str | None = "test",
        splits_file: Path | None = None, max_slices: int = 100, max_cases: int | None = None,
        methods=METHODS, fetal: Path | None = None, levelset_dir: Path | None = None,
        preset: str = "paper", log=print) -> dict:
    cases = cases_for(images, labels, split, splits_file)[:max_cases]
    items, skipped = select_slices(cases, max_slices=max_slices, log=log)
    results = run_methods(items, methods, preset)
    summary = {}
    for m, recs in results.items():
        ms = [r["ms"] for r in recs]
        summary[m] = {k: float(np.nanmean([r[k] for r in recs])) for k in
                      ("dice_before", "dice_after", "assd_before", "assd_after")}
        summary[m].update(dice_after_sd=float(np.nanstd([r["dice_after"] for r in recs])),
                          ms_median=statistics.median(ms), ms_p95=float(np.percentile(ms, 95)),
                          scribbles_respected=float(np.mean([r["fg_scribbles_kept"] and r["bg_scribbles_kept"]
                                                             for r in recs])))
        log(f"{NAMES.get(m, m)}: Dice {summary[m]['dice_before']:.4f} -> {summary[m]['dice_after']:.4f}, "
            f"{summary[m]['ms_median']:.1f} ms median")
    data = {"benchmark": "refine", "command": command_line(), "machine": machine(), "images": str(images),
            "split": split, "preset": preset, "slices": len(items), "skipped_thin_error": skipped,
            "selection_rule": "slice Dice < 0.85 and an error component >= 4 px; seeded subset of 100",
            "summary": summary, "speed": speed_baselines(fetal), "results": results}
    write_json(out_json, data)
    write_text(Path(out_json).with_suffix(".md"), table_markdown(data))
    boxplot(Path(out_json).with_suffix(".png"), data)
    pictures(Path(out_json).parent, items, levelset_dir, [m for m in methods if "@" not in m], fetal, preset)
    return data


def table_markdown(data: dict) -> str:
    rows = []
    for m, recs in data["results"].items():
        s = data["summary"][m]
        rows.append([NAMES.get(m, m), mean_sd([r["dice_before"] * 100 for r in recs]),
                     mean_sd([r["dice_after"] * 100 for r in recs]), mean_sd([r["assd_before"] for r in recs]),
                     mean_sd([r["assd_after"] for r in recs]), f"{s['ms_median']:.1f}", f"{s['ms_p95']:.1f}",
                     f"{100 * s['scribbles_respected']:.0f}%"])
    text = markdown_table(["method", "Dice before (%)", "Dice after (%)", "ASSD before (mm)", "ASSD after (mm)",
                           "ms / slice (median)", "ms / slice (p95)", "scribbles respected"], rows)
    sp = data.get("speed") or {}
    if sp:
        text += (f"\nSpeed on a {sp['slice_shape'][0]}x{sp['slice_shape'][1]} fetal slice: geodesic distance "
                 f"{sp['geodesic_ms']:.2f} ms (NumPy reference {sp['geodesic_numpy_ms']:.1f} ms, "
                 f"{sp['geodesic_speedup']:.0f}x); I-DRLSE {sp['idrlse_ms']:.1f} ms (NumPy reference "
                 f"{sp['idrlse_numpy_ms']:.0f} ms, {sp['idrlse_speedup']:.0f}x).\n")
    m = data["machine"]
    return text + (f"\n{data['slices']} slices ({data['selection_rule']}). Machine: {m['cpu']}, "
                   f"{m['cores']} cores. Command: `{data['command']}`\n")


def boxplot(path: Path, data: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    names = list(data["results"])
    before = [r["dice_before"] for r in data["results"][names[0]]]
    axes[0].boxplot([before] + [[r["dice_after"] for r in data["results"][m]] for m in names])
    axes[0].set_xticks(range(1, len(names) + 2), ["initial"] + [NAMES.get(m, m) for m in names])
    axes[0].set_ylabel("slice Dice")
    ab = [r["assd_before"] for r in data["results"][names[0]]]
    axes[1].boxplot([[v for v in ab if not np.isnan(v)]] +
                    [[r["assd_after"] for r in data["results"][m] if not np.isnan(r["assd_after"])] for m in names])
    axes[1].set_xticks(range(1, len(names) + 2), ["initial"] + [NAMES.get(m, m) for m in names])
    axes[1].set_ylabel("slice ASSD (mm)")
    save_figure(fig, path)
    return path


# Hand-placed strokes for the fetal stack picture (no ground truth exists for the
# stacks): a foreground stroke in the tissue below the official contour on slice 10
# of a26_12, where the official heads disagree, and a background stroke beside it.
# (first index, second index) end points of each straight stroke, label 1 or 2.
FETAL_PICTURE = {"stack": "a26_12", "slice": 10,
                 "strokes": [((88, 66), (104, 67), 1), ((118, 62), (130, 62), 2)]}


def _fetal_slice(fetal: Path | None):
    """The picture's fetal stack slice: image, smoothed official segmentation, strokes."""
    from scipy import ndimage
    from skimage.draw import line

    if fetal is None:
        return None
    stack = Path(fetal).parent.parent
    img_path = stack / "images" / f"{FETAL_PICTURE['stack']}.nii.gz"
    seg_path = stack / "reference_mgnet" / f"{FETAL_PICTURE['stack']}_seg.nii.gz"
    if not (img_path.exists() and seg_path.exists()):
        return None
    k = FETAL_PICTURE["slice"]
    img = normalise(io.load(img_path).array)[:, :, k].astype(np.float32)
    seg = io.load(seg_path).array[:, :, k] > 0
    prob = np.clip(ndimage.gaussian_filter(seg.astype(np.float32), 2.0), 0.02, 0.98)
    scr = np.zeros(img.shape, np.uint8)
    for (r0, c0), (r1, c1), label in FETAL_PICTURE["strokes"]:  # 3 pixels wide
        stroke = np.zeros(img.shape, bool)
        stroke[line(r0, c0, r1, c1)] = True
        scr[ndimage.binary_dilation(stroke)] = label
    return (f"fetal {FETAL_PICTURE['stack']} slice {k}", img, prob, seg, scr, "paper")


def _demo_slices(levelset_dir: Path | None, items, fetal: Path | None = None, preset: str = "paper"):
    """(title, image, prob, initial mask, scribbles, preset) rows of the pictures: the fetal
    slices with the paper's parameters, the hippocampus slice with the benchmark's preset."""
    from skimage.io import imread

    out = []
    if levelset_dir is not None and Path(levelset_dir).is_dir():
        for img_path in sorted(Path(levelset_dir).glob("*img.png")):
            stem = img_path.name[:-len("img.png")]
            img = imread(img_path, as_gray=True).astype(np.float32)
            seg = np.asarray(imread(Path(levelset_dir) / f"{stem}seg.png"))
            seg = (seg[..., 0] if seg.ndim == 3 else seg) > 0
            raw = np.asarray(imread(Path(levelset_dir) / f"{stem}scrb.png"))
            if raw.ndim == 3:
                raw = raw[..., 0]
            scr = np.zeros(raw.shape, np.uint8)
            scr[raw == 127] = 1
            scr[raw == 255] = 2
            from scipy import ndimage

            prob = np.clip(ndimage.gaussian_filter(seg.astype(np.float32), 2.0), 0.02, 0.98)
            out.append((f"levelset_2d {stem}", (img - img.mean()) / (img.std() + 1e-6), prob, seg, scr, "paper"))
    fetal_slice = _fetal_slice(fetal)
    if fetal_slice is not None:
        out.append(fetal_slice)
    if items:  # the benchmark's hippocampus slice with the largest structure (the most visible)
        it = max(items, key=lambda it: int(np.asarray(it["gt"]).sum()))
        out.append((f"{it['case']} slice {it['slice']}", it["image"], it["prob"], it["init"], it["scribbles"], preset))
    return out


def pictures(out_dir: Path, items, levelset_dir, methods, fetal: Path | None = None,
             preset: str = "paper") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segrefine.refine.slice import refine_slice

    demos = _demo_slices(levelset_dir, items, fetal, preset)
    fig, axes = plt.subplots(len(demos), len(methods) + 1, figsize=(3 * (len(methods) + 1), 3 * len(demos)),
                             squeeze=False)
    for r, (name, img, prob, init, scr, row_preset) in enumerate(demos):
        axes[r, 0].imshow(img, cmap="gray")
        axes[r, 0].contour(init, levels=[0.5], colors="y", linewidths=1)
        axes[r, 0].imshow(np.ma.masked_equal(scr, 0), cmap="bwr_r", vmin=1, vmax=2, interpolation="nearest")
        axes[r, 0].set_title(f"{name}\ninitial (yellow), fg red, bg blue", fontsize=9)
        for c, m in enumerate(methods):
            mask = refine_slice(m, img, prob, init, scr, preset=row_preset)
            axes[r, c + 1].imshow(img, cmap="gray")
            axes[r, c + 1].contour(mask, levels=[0.5], colors="lime", linewidths=1)
            axes[r, c + 1].set_title(NAMES[m])
        for a in axes[r]:
            a.axis("off")
    path = Path(out_dir) / "refine_examples.png"
    save_figure(fig, path, dpi=90)
    return path
