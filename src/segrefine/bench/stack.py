"""Stack-level simulated user study (UGIR Table 2) and the fetal-stack suggestions.

``simulate_cases`` runs one strategy over cases (used by ``segrefine simulate``);
``run`` runs every strategy, writes the JSON, a Markdown table, a plot of Dice
against cumulative user time, and for the fetal stacks (no ground truth) the
ranking from the official MG-Net maps with a picture of the top slices.
"""

from __future__ import annotations

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
from segrefine.datasets import Case
from segrefine.figures import save_figure
from segrefine.metrics import assd
from segrefine.simulate import STRATEGIES, TimeModel, UserModel, run_case, settings

KEYS = ("dice_before", "dice_after", "assd_after", "slices_inspected", "scribbles", "user_seconds",
        "machine_seconds")


def simulate_cases(cases: list[Case], strategy: str, *, out_dir: Path | None = None,
                   budget: float = 0.6, user: UserModel | None = None, times: TimeModel | None = None,
                   predictions: dict | None = None, on_case=None, preset: str = "paper",
                   patience: int = 3) -> dict:
    """Run ``strategy`` on every case; ``predictions`` caches MG-Net outputs across strategies."""
    from segrefine.uncertainty import Predictor

    user, times = user or UserModel(), times or TimeModel()
    predictor = None
    records = []
    for case in cases:
        vol = io.load(case.image)
        gt = np.asarray(io.load(case.label, finite=False).array) > 0
        kw = {}
        if strategy != "graphcut":
            cached = (predictions or {}).get(case.name)
            if cached is None:
                predictor = predictor or Predictor("mgnet")
                pred = predictor(vol.array)
                cached = {"prob": pred.prob, "uncertainty": pred.uncertainty, "label": pred.label,
                          "seconds": pred.seconds}
                if predictions is not None:
                    predictions[case.name] = cached
            kw = dict(prob=cached["prob"], uncertainty=cached["uncertainty"], label=cached["label"],
                      predict_seconds=cached["seconds"])
        rec = run_case(vol.array, gt, strategy, spacing=vol.spacing, budget=budget, user=user,
                       times=times, preset=preset, patience=patience, **kw)
        mask = rec.pop("mask")
        rec["assd_after"] = assd(mask, gt, vol.spacing)
        if out_dir is not None:
            io.save(vol.with_array(mask.astype(np.uint8)), Path(out_dir) / f"{case.name}.nii.gz",
                    dtype=np.uint8)
        records.append({"case": case.name, **rec})
        if on_case:
            on_case(case.name, rec)
    mean = {}
    for k in KEYS:
        vals = np.asarray([r[k] for r in records], float)
        mean[k] = float(np.nanmean(vals))
        mean[f"{k}_sd"] = float(np.nanstd(vals))
    pooled = [ms for r in records for ms in r["refine_ms"]]
    mean["refine_steps"] = len(pooled)
    mean["refine_ms_median"] = float(np.median(pooled)) if pooled else None
    mean["refine_ms_p95"] = float(np.percentile(pooled, 95)) if pooled else None
    return {"strategy": strategy, "preset": preset, "patience": patience, "cases": records, "mean": mean,
            **settings(user, times)}


def budget_sweep(cases: list[Case], budgets=(0.2, 0.4, 0.6, 0.8, 1.0), *, preset: str = "paper",
                 log=print) -> dict:
    """UGIR and UGIR(*) at several budgets M', and sequential inspection, on ``cases`` (the
    ``val`` split: M' is chosen there, as in the paper)."""
    predictions: dict = {}
    keys = ("dice_before", "dice_after", "user_seconds", "slices_inspected", "scribbles")
    seq = simulate_cases(cases, "sequential", predictions=predictions, preset=preset)["mean"]
    out = {"cases": len(cases), "sequential": {k: seq[k] for k in keys}, "ugir": {}, "ugir-naive": {}}
    for b in budgets:
        for s in ("ugir", "ugir-naive"):
            res = simulate_cases(cases, s, budget=b, predictions=predictions, preset=preset)
            out[s][str(b)] = {k: res["mean"][k] for k in keys}
            out[s][str(b)]["stopped_early"] = int(sum(c["stopped_early"] for c in res["cases"]))
        log(f"budget {b}: UGIR Dice {out['ugir'][str(b)]['dice_after']:.4f} "
            f"(sequential {seq['dice_after']:.4f})")
    return out


def budget_markdown(sweep: dict) -> str:
    seq = sweep["sequential"]
    rows = [["sequential (all slices)", f"{seq['dice_after'] * 100:.2f}", f"{seq['user_seconds']:.1f}",
             f"{seq['slices_inspected']:.1f}", "–"]]
    for s, name in (("ugir", "UGIR"), ("ugir-naive", "UGIR(*)")):
        for b, r in sweep[s].items():
            rows.append([f"{name}, M' = {b}", f"{r['dice_after'] * 100:.2f}", f"{r['user_seconds']:.1f}",
                         f"{r['slices_inspected']:.1f}", f"{r['stopped_early']} / {sweep['cases']}"])
    return markdown_table(["strategy", "Dice after (%)", "user time (s)", "slices inspected",
                           "stopped early"], rows) + (
        f"\n{sweep['cases']} `val` cases (initial Dice {seq['dice_before'] * 100:.2f} %).\n")


def run(images: Path, labels: Path, out_json: Path, *, split: str | None = "test",
        splits_file: Path | None = None, strategies=STRATEGIES, max_cases: int | None = None,
        budget: float = 0.6, fetal_dir: Path | None = None, preset: str = "paper",
        tune_split: str | None = None, patiences=(), log=print) -> dict:
    cases = cases_for(images, labels, split, splits_file)[:max_cases]
    sweep = None
    if tune_split:
        log(f"budget sweep on the {tune_split} split")
        sweep = budget_sweep(cases_for(images, labels, tune_split, splits_file), preset=preset, log=log)
    predictions: dict = {}
    results = {}
    for s in strategies:
        t = time.perf_counter()
        results[s] = simulate_cases(cases, s, budget=budget, predictions=predictions, preset=preset)
        log(f"{s}: Dice {results[s]['mean']['dice_after']:.4f}, user "
            f"{results[s]['mean']['user_seconds']:.1f} s ({time.perf_counter() - t:.0f} s)")
    for pat in patiences:  # sensitivity of UGIR to its early-stop patience (the paper: 3)
        if pat != 3:
            results[f"ugir-patience{pat}"] = simulate_cases(cases, "ugir", budget=budget, predictions=predictions,
                                                           preset=preset, patience=pat)
    data = {"benchmark": "stack", "command": command_line(), "machine": machine(),
            "images": str(images), "split": split, "budget": budget, "preset": preset, "cases": len(cases),
            "results": results}
    if sweep is not None:
        data["budget_sweep"] = {"split": tune_split, **sweep}
    if fetal_dir is not None and Path(fetal_dir).is_dir():
        data["fetal"] = fetal_suggestions(Path(fetal_dir), Path(out_json).parent, budget=budget)
    write_json(out_json, data)
    write_text(Path(out_json).with_suffix(".md"), table_markdown(data))
    plot_dice_vs_time(Path(out_json).with_suffix(".png"), data)
    return data


def _ms(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def table_markdown(data: dict) -> str:
    rows = []
    names = {"ugir": "UGIR", "ugir-naive": "UGIR(*) (ν*)", "sequential": "UGIR(-U) (sequential)",
             "graphcut": "Graph Cut (scratch)", "deepigeos": "DeepIGeoS (R-Net)"}
    names.update({s: f"UGIR, early stop after {s[len('ugir-patience'):]}" for s in data["results"]
                  if s.startswith("ugir-patience")})
    for s, res in data["results"].items():
        col = lambda k, scale=1.0: mean_sd([c[k] * scale for c in res["cases"]])
        rows.append([names.get(s, s), col("dice_before", 100), col("dice_after", 100), col("assd_after"),
                     col("slices_inspected"), col("scribbles"), col("user_seconds"), col("machine_seconds"),
                     _ms(res["mean"].get("refine_ms_median")), _ms(res["mean"].get("refine_ms_p95"))])
    header = ["strategy", "Dice before (%)", "Dice after (%)", "ASSD after (mm)", "slices inspected",
              "scribbles", "user time (s)", "machine time (s)", "ms / refinement (median)", "(p95)"]
    m = data["machine"]
    text = (markdown_table(header, rows) + f"\n{data['cases']} cases, budget {data['budget']}. "
            f"Machine: {m['cpu']}, {m['cores']} cores. Command: `{data['command']}`\n")
    if "budget_sweep" in data:
        text += "\nBudget M' on the tuning split:\n\n" + budget_markdown(data["budget_sweep"])
    return text


def plot_dice_vs_time(path: Path, data: dict) -> Path:
    """Left: mean Dice of the cases done against cumulative user time, one curve per strategy
    (a strategy that starts from nothing starts off the axis). Right: final mean Dice against
    mean user time per volume, one point per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    shown = []
    for s, res in data["results"].items():
        t = np.cumsum([c["user_seconds"] for c in res["cases"]])
        d = np.cumsum([c["dice_after"] for c in res["cases"]]) / np.arange(1, len(t) + 1)
        start = float(np.mean([c["dice_before"] for c in res["cases"]]))
        ax.plot(np.concatenate([[0], t]), np.concatenate([[start], d]), marker=".", markersize=3, label=s)
        shown += list(d) + ([start] if start > 0 else [])
        m = res["mean"]
        ax2.scatter(m["user_seconds"], m["dice_after"] * 100, s=30)
        ax2.annotate(s, (m["user_seconds"], m["dice_after"] * 100), textcoords="offset points", xytext=(4, 4),
                     fontsize=8)
    if shown:
        ax.set_ylim(min(shown) - 0.01, max(shown) + 0.01)
    ax.set_xlabel("cumulative simulated user time (s)")
    ax.set_ylabel("mean Dice of the cases done")
    ax.legend(fontsize=8)
    ax2.set_xlabel("simulated user time per volume (s)")
    ax2.set_ylabel("final Dice (%)")
    ax2.grid(alpha=0.3)
    save_figure(fig, path)
    return path


def fetal_suggestions(fetal_dir: Path, out_dir: Path, *, budget: float = 0.6) -> dict:
    """Ranking of the fetal stacks from the official MG-Net maps (an external model), with a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segrefine.guidance import suggest

    out = {}
    for img_path in sorted((fetal_dir / "images").glob("*.nii.gz")):
        name = io.case_name(img_path)
        vol = io.load(img_path)
        seg = io.load(fetal_dir / "reference_mgnet" / f"{name}_seg.nii.gz").array
        var = io.load(fetal_dir / "reference_mgnet" / f"{name}_var.nii.gz").array
        sug = suggest(var, seg, budget=budget)
        out[name] = sug
        top = sug["slices"][:4]
        fig, axes = plt.subplots(2, len(top), figsize=(3 * len(top), 6), squeeze=False)
        for c, s in enumerate(top):
            k = s["index"]
            axes[0, c].imshow(vol.array[:, :, k].T, cmap="gray", origin="lower")
            axes[0, c].contour(seg[:, :, k].T > 0, levels=[0.5], colors="r", linewidths=1)
            axes[0, c].set_title(f"#{c + 1}: slice {k}, ν={s['nu']:.3f}")
            axes[1, c].imshow(var[:, :, k].T, cmap="hot", origin="lower", vmin=0, vmax=0.25)
            for a in axes[:, c]:
                a.axis("off")
        fig.suptitle(f"{name}: top suggested slices (official MG-Net seg in red, variance below)")
        png = Path(out_dir) / f"fetal_{name}_suggestions.png"
        save_figure(fig, png, dpi=90)
        sug["png"] = str(png)
    return out
