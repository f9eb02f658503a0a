"""Slice-level refinement benchmark (UGIR Fig. 4): painting vs I-DRLSE vs Graph Cut vs R-Net.

Slices: MG-Net's prediction on the cases (hippocampus ``test`` split), every
slice where the simulated user would refine (slice Dice < 0.85 and an error
component of at least 4 pixels, :func:`segrefine.simulate.needs_refinement`);
if more than ``max_slices`` (100), a seeded random subset. One set of
simulated scribbles per slice (:func:`segrefine.interaction.simulate_scribbles`,
min size 4 pixels) is shared by every method. Slices whose error is too thin
for a stroke get no scribbles and are skipped (counted in the JSON).

The baseline is **painting** (``paint``): the initial mask with the stroke
pixels set to their label. Every method's mean gain over painting and the
number of slices it makes better / worse than painting are reported. Whether
the strokes are respected is measured on each method's output *before* the
final overwrite of the stroke pixels (painting is that overwrite: by
construction).

Speed: median and 95th-percentile milliseconds per slice per method; the
numba geodesic distance and I-DRLSE against their straightforward NumPy
versions; and I-DRLSE on real 192x192 fetal slices (:func:`fetal_timing`),
measured in the same run.
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
from segrefine.refine.slice import DEFAULT_PRESET
from segrefine.simulate import UserModel, needs_refinement

METHODS = ("paint", "idrlse", "graphcut", "rnet")
NAMES = {"paint": "Painting (strokes only)", "idrlse": "I-DRLSE", "graphcut": "Graph Cut", "rnet": "R-Net",
         "idrlse@paper": "I-DRLSE (paper parameters)", "idrlse@hippocampus": "I-DRLSE (earlier hippocampus preset)",
         "graphcut@paper": "Graph Cut (λ = 5)"}


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


#: the stroke styles of the benchmark (the default preset was chosen on `val` with the same three)
STROKE_STYLES = {
    "standard": "one 1-pixel stroke of up to 20 px along the ridge of every error component >= 4 px",
    "few": "at most 2 strokes of at most 8 px per slice, 1 pixel wide",
    "brush": "strokes of up to 40 px, 3 pixels wide (dilated once, kept inside their error component)",
}


def restroke(items: list[dict], style: str) -> list[dict]:
    """The same slices with the strokes of ``style`` (:data:`STROKE_STYLES`; seeded per slice)."""
    from scipy import ndimage

    from segrefine.interaction import simulate_scribbles

    if style == "standard":
        return items
    out = []
    for it in items:
        if style == "few":
            scr = simulate_scribbles(it["init"], it["gt"], seed=1000 + it["slice"], min_size=4, max_length=8,
                                     max_strokes=2)
        elif style == "brush":
            thin = simulate_scribbles(it["init"], it["gt"], seed=2000 + it["slice"], min_size=4, max_length=40)
            scr = np.zeros_like(thin)
            scr[ndimage.binary_dilation(thin == 1) & it["gt"] & ~it["init"]] = 1
            scr[ndimage.binary_dilation(thin == 2) & it["init"] & ~it["gt"]] = 2
        else:
            raise ValueError(f"unknown stroke style {style!r}")
        if scr.any():
            out.append({**it, "scribbles": scr})
    return out


def _slice_assd(a, b, sp):
    return assd(a, b, sp) if a.any() and b.any() else float("nan")


def run_methods(items, methods=METHODS, preset: str = DEFAULT_PRESET) -> dict:
    """Per method, one record per slice; ``dice_paint`` is painting's Dice on that slice."""
    from segrefine.refine.slice import paint, refine_slice

    out = {}
    for m in methods:
        method, p = _method_preset(m, preset)
        recs = []
        if items:  # warm-up, untimed: imports, numba compilation, loading R-Net
            first = items[0]
            refine_slice(method, first["image"], first["prob"], first["init"], first["scribbles"],
                         spacing=first["spacing"], preset=p)
        for it in items:
            info: dict = {}
            t = time.perf_counter()
            mask = refine_slice(method, it["image"], it["prob"], it["init"], it["scribbles"],
                                spacing=it["spacing"], preset=p, info=info)
            ms = (time.perf_counter() - t) * 1000
            painted = paint(it["init"], it["scribbles"])
            recs.append({"case": it["case"], "slice": it["slice"], "ms": ms,
                         "dice_before": dice(it["init"], it["gt"]), "dice_after": dice(mask, it["gt"]),
                         "dice_paint": dice(painted, it["gt"]),
                         "assd_before": _slice_assd(it["init"], it["gt"], it["spacing"]),
                         "assd_after": _slice_assd(mask, it["gt"], it["spacing"]),
                         "scribble_pixels": int(np.count_nonzero(it["scribbles"])),
                         "scribbles_violated_before_overwrite": info.get("scribbles_violated")})
        out[m] = recs
    return out


def versus_painting(recs: list[dict]) -> dict:
    """Mean gain over painting (Dice points) and the slices better / worse / equal."""
    diff = np.array([r["dice_after"] - r["dice_paint"] for r in recs])
    return {"gain_vs_paint": float(100 * diff.mean()), "better_than_paint": int((diff > 1e-9).sum()),
            "worse_than_paint": int((diff < -1e-9).sum()), "same_as_paint": int((np.abs(diff) <= 1e-9).sum())}


def fetal_slices(stacks_dir: Path, *, min_area: int = 200) -> list[dict]:
    """Real fetal slices with strokes that change the official MG-Net segmentation.

    Every slice of the stacks in ``stacks_dir/images`` whose official segmentation
    (``reference_mgnet/<stack>_seg.nii.gz``) has at least ``min_area`` pixels: the
    initial mask is that segmentation, ``P`` the segmentation smoothed (Gaussian,
    σ 2 px, clipped to [0.02, 0.98]; the official probability is not shipped), and
    the strokes are the simulated user's (:func:`segrefine.interaction.simulate_scribbles`)
    against a target that moves the contour by 4 pixels: dilated on even slices
    (foreground strokes outside the mask), eroded on odd ones (background strokes
    inside). No ground truth exists for the stacks: these slices time the method on
    real images and masks, they do not score it.
    """
    from scipy import ndimage

    from segrefine.interaction import simulate_scribbles

    out = []
    for img_path in sorted((Path(stacks_dir) / "images").glob("*.nii.gz")):
        stack = img_path.name[:-len(".nii.gz")]
        seg_path = Path(stacks_dir) / "reference_mgnet" / f"{stack}_seg.nii.gz"
        if not seg_path.exists():
            continue
        vol = io.load(img_path)
        norm = normalise(vol.array)
        segs = np.asarray(io.load(seg_path).array) > 0
        for k in range(vol.shape[2]):
            seg = segs[:, :, k]
            if seg.sum() < min_area:
                continue
            move = ndimage.binary_dilation if k % 2 == 0 else ndimage.binary_erosion
            target = move(seg, iterations=4)
            scr = simulate_scribbles(seg, target, seed=k)
            if not scr.any():
                continue
            prob = np.clip(ndimage.gaussian_filter(seg.astype(np.float32), 2.0), 0.02, 0.98)
            out.append({"name": f"{stack}:{k}", "image": norm[:, :, k].astype(np.float32), "prob": prob,
                        "init": seg, "scribbles": scr, "spacing": tuple(vol.spacing[:2])})
    return out


def fetal_timing(stacks_dir: Path | None, presets=(DEFAULT_PRESET, "paper"), numpy_slices: int = 4,
                 repeats: int = 3) -> dict:
    """I-DRLSE on real 192x192 fetal slices (:func:`fetal_slices`): ms per slice per preset (the
    best of ``repeats`` runs of each slice), iterations, pixels changed beyond painting; numba vs
    NumPy on the first slices."""
    from segrefine.geodesic import geodesic_distance, geodesic_distance_numpy
    from segrefine.refine.levelset import idrlse, idrlse_numpy
    from segrefine.refine.slice import paint, preset_params

    if stacks_dir is None or not (Path(stacks_dir) / "reference_mgnet").is_dir():
        return {}
    items = fetal_slices(stacks_dir)
    if not items:
        return {}
    out = {"slices": len(items), "slice_shape": list(items[0]["image"].shape), "repeats": repeats,
           "strokes": "simulated against the official segmentation moved by 4 px (see fetal_slices)"}
    for preset in presets:
        params = preset_params(preset, "idrlse")
        first = items[0]
        idrlse(first["prob"], first["scribbles"], init=first["init"], image=first["image"], **params)  # compile
        ms, iters, changed, reach = [], [], [], []
        for it in items:
            runs = [idrlse(it["prob"], it["scribbles"], init=it["init"], image=it["image"],
                           spacing=it["spacing"], **params) for _ in range(repeats)]
            mask, info = runs[0]
            ms.append(1000 * min(r[1]["seconds"] for r in runs))  # best of `repeats`: the cores are shared
            iters.append(info["iterations"])
            reach.append(info["D_pixels"])
            changed.append(int(np.count_nonzero(mask != paint(it["init"], it["scribbles"]))))
        out[preset] = {"ms_median": statistics.median(ms), "ms_p95": float(np.percentile(ms, 95)),
                       "ms_max": max(ms), "iterations_median": statistics.median(iters),
                       "D_pixels_median": statistics.median(reach),
                       "pixels_changed_beyond_painting_median": statistics.median(changed)}
    sub = items[:numpy_slices]
    params = preset_params(presets[0], "idrlse")
    fast = [idrlse(it["prob"], it["scribbles"], init=it["init"], image=it["image"], **params)[1]["seconds"]
            for it in sub]
    slow = [idrlse_numpy(it["prob"], it["scribbles"], init=it["init"], image=it["image"], **params)[1]["seconds"]
            for it in sub]
    seeds = sub[0]["scribbles"] > 0

    def timed(fn, n):
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1000)
        return statistics.median(ts)

    g_fast = timed(lambda: geodesic_distance(sub[0]["image"], seeds, gradient_weight=0.5), 5)
    g_slow = timed(lambda: geodesic_distance_numpy(sub[0]["image"], seeds, gradient_weight=0.5), 2)
    out.update(idrlse_numba_ms=1000 * statistics.median(fast), idrlse_numpy_ms=1000 * statistics.median(slow),
               idrlse_speedup=statistics.median(slow) / statistics.median(fast), speedup_slices=len(sub),
               geodesic_ms=g_fast, geodesic_numpy_ms=g_slow, geodesic_speedup=g_slow / g_fast)
    return out


def summarise(results: dict, log=None) -> dict:
    summary = {}
    for m, recs in results.items():
        ms = [r["ms"] for r in recs]
        summary[m] = {k: float(np.nanmean([r[k] for r in recs])) for k in
                      ("dice_before", "dice_after", "dice_paint", "assd_before", "assd_after")}
        violated = [r["scribbles_violated_before_overwrite"] for r in recs]
        measured = [v for v in violated if v is not None]
        summary[m].update(dice_after_sd=float(np.nanstd([r["dice_after"] for r in recs])),
                          ms_median=statistics.median(ms), ms_p95=float(np.percentile(ms, 95)),
                          **versus_painting(recs),
                          scribbles_respected_before_overwrite=(
                              float(np.mean([v == 0 for v in measured])) if measured else None),
                          scribble_pixels_violated_before_overwrite=(
                              float(sum(measured) / max(1, sum(r["scribble_pixels"] for r in recs)))
                              if measured else None))
        if log is not None:
            log(f"{NAMES.get(m, m)}: Dice {summary[m]['dice_before']:.4f} -> {summary[m]['dice_after']:.4f} "
                f"({summary[m]['gain_vs_paint']:+.2f} points vs painting, better on "
                f"{summary[m]['better_than_paint']}, worse on {summary[m]['worse_than_paint']}), "
                f"{summary[m]['ms_median']:.1f} ms median")
    return summary


def run(images: Path, labels: Path, out_json: Path, *, split: str | None = "test",
        splits_file: Path | None = None, max_slices: int = 100, max_cases: int | None = None,
        methods=METHODS, fetal: Path | None = None, levelset_dir: Path | None = None,
        preset: str = DEFAULT_PRESET, styles=("few", "brush"), log=print) -> dict:
    import torch

    cases = cases_for(images, labels, split, splits_file)[:max_cases]
    items, skipped = select_slices(cases, max_slices=max_slices, log=log)
    # R-Net runs one small slice at a time: with 2 threads on shared cores its timing swung from
    # 12 ms to 1.9 s per slice (threads waiting on each other); one thread is steady (~15-30 ms)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_methods(items, methods, preset)
        other = {}
        for style in styles:
            restroked = restroke(items, style)
            log(f"stroke style {style}: {len(restroked)} slices")
            other[style] = {"slices": len(restroked), "description": STROKE_STYLES[style],
                            "summary": summarise(run_methods(restroked, methods, preset))}
    finally:
        torch.set_num_threads(threads)
    summary = summarise(results, log)
    stacks = Path(fetal).parent.parent if fetal is not None else None
    data = {"benchmark": "refine", "command": command_line(), "machine": machine(), "images": str(images),
            "split": split, "preset": preset, "slices": len(items), "skipped_thin_error": skipped,
            "torch_threads_during_refinement": 1,
            "selection_rule": "slice Dice < 0.85 and an error component >= 4 px; seeded subset of 100",
            "strokes": STROKE_STYLES["standard"], "summary": summary, "stroke_styles": other,
            "fetal_timing": fetal_timing(stacks), "results": results}
    write_json(out_json, data)
    write_text(Path(out_json).with_suffix(".md"), table_markdown(data))
    boxplot(Path(out_json).with_suffix(".png"), data)
    pictures(Path(out_json).parent, items, levelset_dir, [m for m in methods if "@" not in m], fetal, preset)
    return data


def _respected(s: dict) -> str:
    v = s.get("scribbles_respected_before_overwrite")
    return "by construction" if v is None else f"{100 * v:.0f}%"


def table_markdown(data: dict) -> str:
    rows = []
    for m, recs in data["results"].items():
        s = data["summary"][m]
        rows.append([NAMES.get(m, m), mean_sd([r["dice_before"] * 100 for r in recs]),
                     mean_sd([r["dice_after"] * 100 for r in recs]), f"{s['gain_vs_paint']:+.2f}",
                     f"{s['better_than_paint']} / {s['worse_than_paint']}",
                     mean_sd([r["assd_after"] for r in recs]), f"{s['ms_median']:.1f}", f"{s['ms_p95']:.1f}",
                     _respected(s)])
    text = markdown_table(["method", "Dice before (%)", "Dice after (%)", "gain vs painting (points)",
                           "slices better / worse than painting", "ASSD after (mm)", "ms / slice (median)",
                           "ms / slice (p95)", "strokes respected before the overwrite"], rows)
    if data.get("stroke_styles"):
        text += "\nThe same slices with other stroke styles (gain over painting in points, better / worse):\n\n"
        names = list(data["summary"])
        header = ["stroke style", "slices", "painting Dice (%)"] + [NAMES.get(m, m) for m in names if m != "paint"]
        rows = []
        for style, block in [("standard", {"slices": data["slices"], "summary": data["summary"]})] + list(
                data["stroke_styles"].items()):
            s = block["summary"]
            first = next(iter(s.values()))
            rows.append([style, str(block["slices"]), f"{100 * first['dice_paint']:.2f}"]
                        + [f"{s[m]['gain_vs_paint']:+.2f} ({s[m]['better_than_paint']} / {s[m]['worse_than_paint']})"
                           for m in names if m != "paint"])
        text += markdown_table(header, rows)
        text += "".join(f"\n- {k}: {v}" for k, v in STROKE_STYLES.items()) + "\n"
    ft = data.get("fetal_timing") or {}
    if ft:
        text += (f"\nI-DRLSE on {ft['slices']} real {ft['slice_shape'][0]}x{ft['slice_shape'][1]} fetal slices "
                 f"(official MG-Net masks, strokes that move them by 4 px; best of {ft.get('repeats', 1)} "
                 f"runs per slice): ")
        text += "; ".join(f"preset `{p}` {v['ms_median']:.1f} ms median ({v['ms_p95']:.1f} p95, "
                          f"{v['iterations_median']:.0f} iterations, D {v['D_pixels_median']:.1f} px, "
                          f"{v['pixels_changed_beyond_painting_median']:.0f} pixels changed beyond painting)"
                          for p, v in ft.items() if isinstance(v, dict))
        text += (f". Numba vs NumPy on {ft['speedup_slices']} of them: I-DRLSE {ft['idrlse_numba_ms']:.1f} vs "
                 f"{ft['idrlse_numpy_ms']:.0f} ms ({ft['idrlse_speedup']:.0f}x); geodesic distance "
                 f"{ft['geodesic_ms']:.2f} vs {ft['geodesic_numpy_ms']:.1f} ms ({ft['geodesic_speedup']:.0f}x).\n")
    m = data["machine"]
    return text + (f"\n{data['slices']} slices ({data['selection_rule']}); preset `{data['preset']}`. "
                   f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}. Command: `{data['command']}`\n")


def boxplot(path: Path, data: dict) -> Path:
    """Slice Dice per method (left) and each slice's Dice minus painting's (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    names = list(data["results"])
    labels = [NAMES.get(m, m).replace(" (", "\n(") for m in names]
    before = [r["dice_before"] for r in data["results"][names[0]]]
    axes[0].boxplot([before] + [[r["dice_after"] for r in data["results"][m]] for m in names])
    axes[0].set_xticks(range(1, len(names) + 2), ["initial"] + labels, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("slice Dice")
    gains = [[100 * (r["dice_after"] - r["dice_paint"]) for r in data["results"][m]] for m in names]
    axes[1].boxplot(gains)
    axes[1].axhline(0.0, color="grey", linewidth=0.8)
    axes[1].set_xticks(range(1, len(names) + 1), labels, rotation=30, ha="right", fontsize=8)
    axes[1].set_ylabel("slice Dice minus painting's (points)")
    for i, m in enumerate(names, start=1):
        s = data["summary"][m]
        axes[1].annotate(f"{s['better_than_paint']}+ / {s['worse_than_paint']}-", (i, 1.01),
                         xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7)
    save_figure(fig, path)
    return path


# Hand-placed strokes for the fetal stack picture (no ground truth exists for the
# stacks): a foreground stroke in the tissue below the official contour on slice 10
# of a26_12, where the official heads disagree, and a background stroke beside it.
# (first index, second index) end points of each straight stroke, label 1 or 2.
FETAL_PICTURE = {"stack": "a26_12", "slice": 10,
                 "strokes": [((88, 66), (104, 67), 1), ((118, 62), (130, 62), 2)]}


def _fetal_slice(fetal: Path | None, preset: str):
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
    return (f"fetal {FETAL_PICTURE['stack']} slice {k}", img, prob, seg, scr, preset)


def _demo_slices(levelset_dir: Path | None, items, fetal: Path | None = None, preset: str = DEFAULT_PRESET):
    """(title, image, prob, initial mask, scribbles, preset) rows of the pictures, every row with
    the benchmark's preset (one default for the fetal and the hippocampus slices)."""
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
            out.append((f"levelset_2d {stem}", (img - img.mean()) / (img.std() + 1e-6), prob, seg, scr, preset))
    fetal_slice = _fetal_slice(fetal, preset)
    if fetal_slice is not None:
        out.append(fetal_slice)
    if items:  # the benchmark's hippocampus slice with the largest structure (the most visible)
        it = max(items, key=lambda it: int(np.asarray(it["gt"]).sum()))
        out.append((f"{it['case']} slice {it['slice']}", it["image"], it["prob"], it["init"], it["scribbles"], preset))
    return out


def pictures(out_dir: Path, items, levelset_dir, methods, fetal: Path | None = None,
             preset: str = DEFAULT_PRESET) -> Path:
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
