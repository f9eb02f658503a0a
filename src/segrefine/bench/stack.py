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
from segrefine.guidance import STOP_DICE
from segrefine.metrics import assd
from segrefine.refine.slice import DEFAULT_PRESET
from segrefine.simulate import STRATEGIES, TimeModel, UserModel, run_case, settings

KEYS = ("dice_before", "dice_after", "assd_after", "slices_inspected", "scribbles", "user_seconds",
        "machine_seconds")


def simulate_cases(cases: list[Case], strategy: str, *, out_dir: Path | None = None,
                   budget: float = 0.6, user: UserModel | None = None, times: TimeModel | None = None,
                   predictions: dict | None = None, on_case=None, preset: str = DEFAULT_PRESET,
                   order: str = "gain", patience: int | None = None,
                   stop_remaining: float | None = None, stop_dice: float | None = None,
                   follow: bool | None = None, end_weight: float | None = None) -> dict:
    """Run ``strategy`` on every case; ``predictions`` caches MG-Net outputs across strategies."""
    user, times = user or UserModel(), times or TimeModel()
    predictions = {} if predictions is None else predictions
    records = []
    for case in cases:
        vol = io.load(case.image)
        gt = np.asarray(io.load(case.label, finite=False).array) > 0
        kw = {}
        if strategy != "graphcut":
            cached = predict_cases([case], predictions)[case.name]
            kw = dict(prob=cached["prob"], uncertainty=cached["uncertainty"], label=cached["label"],
                      predict_seconds=cached["seconds"])
        rec = run_case(vol.array, gt, strategy, spacing=vol.spacing, budget=budget, user=user,
                       times=times, preset=preset, order=order, patience=patience,
                       stop_remaining=stop_remaining, stop_dice=stop_dice, follow=follow,
                       end_weight=end_weight, **kw)
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
    return {"strategy": strategy, "preset": preset, "order": order, "patience": patience,
            "stop_remaining": stop_remaining, "stop_dice": stop_dice, "follow": follow,
            "end_weight": end_weight, "cases": records, "mean": mean, **settings(user, times)}


def predict_cases(cases: list[Case], predictions: dict) -> dict:
    """MG-Net's probability, uncertainty and label of every case, cached in ``predictions``."""
    from segrefine.uncertainty import Predictor

    predictor = None
    for case in cases:
        if case.name not in predictions:
            predictor = predictor or Predictor("mgnet")
            pred = predictor(io.load(case.image).array)
            predictions[case.name] = {"prob": pred.prob, "uncertainty": pred.uncertainty,
                                      "label": pred.label, "seconds": pred.seconds}
    return predictions


def fix_gain(label: np.ndarray, gt: np.ndarray, slices, axis: int = 2) -> float:
    """Volume Dice gained by setting ``slices`` (indices along ``axis``) to the ground truth."""
    from segrefine.metrics import dice

    fixed = np.moveaxis(np.array(label > 0), axis, 0)
    fixed[list(slices)] = np.moveaxis(gt > 0, axis, 0)[list(slices)]
    return dice(np.moveaxis(fixed, 0, axis), gt > 0) - dice(label > 0, gt > 0)


def suggestion_gain(cases: list[Case], predictions: dict, *, fractions=(0.1, 0.2, 0.3),
                    orders=("gain", "nu", "nu-naive"), draws: int = 50, axis: int = 2) -> dict:
    """What checking the suggested slices pays: the volume Dice gained by fixing (setting to
    the label) the top ``fraction`` of slices of each order, against the best possible
    slices (most error voxels) and a random choice (mean of ``draws`` draws, seeded).

    Returns ``{fraction: {name: {"gain": mean Dice gained, "of_best": mean gain / mean best
    gain}}}`` with names ``orders`` + ``best`` + ``random``.
    """
    from segrefine.guidance import order_scores, rank_slices, slice_uncertainty

    rng = np.random.default_rng(0)
    gains: dict = {f: {} for f in fractions}
    for case in cases:
        pred = predictions[case.name]
        gt = np.asarray(io.load(case.label, finite=False).array) > 0
        label = pred["label"] > 0
        n = gt.shape[axis]
        scores = slice_uncertainty(pred["uncertainty"], label, axis=axis, prob=pred["prob"])
        other = tuple(a for a in range(3) if a != axis)
        rankings = {o: rank_slices(order_scores(scores, o)) for o in orders}
        rankings["best"] = rank_slices((label != gt).sum(axis=other))
        for f in fractions:
            m = max(1, int(np.ceil(f * n)))
            for name, ranking in rankings.items():
                gains[f].setdefault(name, []).append(fix_gain(label, gt, ranking[:m], axis))
            gains[f].setdefault("random", []).append(
                float(np.mean([fix_gain(label, gt, rng.permutation(n)[:m], axis) for _ in range(draws)])))
    out = {}
    for f, by_name in gains.items():
        best = float(np.mean(by_name["best"]))
        out[str(f)] = {name: {"gain": float(np.mean(v)), "of_best": float(np.mean(v)) / best if best > 0 else None}
                       for name, v in by_name.items()}
    return out


def suggestion_gain_markdown(data: dict) -> str:
    names = {"gain": "expected wrong voxels (`gain`, default)", "nu": "ν (`nu`, the paper's)",
             "nu-naive": "ν* (`nu-naive`, the paper's UGIR(*))", "random": "random slices",
             "best": "best possible (most error voxels)"}
    fractions = list(data)
    rows = []
    for name in data[fractions[0]]:
        rows.append([names.get(name, name)] + [
            f"{data[f][name]['gain'] * 100:.2f} ({data[f][name]['of_best'] * 100:.0f} %)" for f in fractions])
    header = ["slice order"] + [f"top {float(f) * 100:.0f} % fixed: Dice gained, points (of best)"
                                for f in fractions]
    return markdown_table(header, rows)


def stop_rule_name(value: float) -> str:
    return f"stop below {value * 100:g} Dice points left"


# ablations beside the stop sweep: the default rule without one of its parts, and the earlier rule
STOP_ABLATIONS = ((f"{stop_rule_name(STOP_DICE)}, no following", {"stop_dice": STOP_DICE, "follow": False}),
                  (f"{stop_rule_name(STOP_DICE)}, no end prior", {"stop_dice": STOP_DICE, "end_weight": 0.0}),
                  ("earlier rule: no following, no end prior, stop below 20 % of the expected errors left",
                   {"follow": False, "end_weight": 0.0, "stop_remaining": 0.2}))


def stop_sweep(cases: list[Case], values=(0.01, 0.015, 0.02, 0.0225, 0.025, 0.03), *, predictions: dict,
               budget: float, preset: str, log=print) -> dict:
    """UGIR with the default order, following, at several expected-remaining-Dice stops, the
    default rule without each part, and sequential inspection, on ``cases`` (the ``val``
    split: the stop is chosen there)."""
    keys = ("dice_before", "dice_after", "user_seconds", "slices_inspected", "scribbles")
    seq = simulate_cases(cases, "sequential", predictions=predictions, preset=preset)["mean"]
    out = {"cases": len(cases), "sequential": {k: seq[k] for k in keys}, "ugir": {}}
    for name, kw in [(stop_rule_name(v), {"stop_dice": v}) for v in values] + list(STOP_ABLATIONS):
        res = simulate_cases(cases, "ugir", budget=budget, predictions=predictions, preset=preset, **kw)
        out["ugir"][name] = {**{k: res["mean"][k] for k in keys}, "rule": kw}
        log(f"{name}: UGIR Dice {res['mean']['dice_after']:.4f} with {res['mean']['user_seconds']:.1f} s "
            f"(sequential {seq['dice_after']:.4f}, {seq['user_seconds']:.1f} s)")
    return out


def stop_markdown(sweep: dict) -> str:
    seq = sweep["sequential"]
    rows = [["sequential (all slices)", f"{seq['dice_after'] * 100:.2f}", "–", f"{seq['user_seconds']:.1f}",
             "100 %", f"{seq['slices_inspected']:.1f}"]]
    for name, r in sweep["ugir"].items():
        rows.append([f"UGIR, {name}",
                     f"{r['dice_after'] * 100:.2f}", f"{(r['dice_after'] - seq['dice_after']) * 100:+.2f}",
                     f"{r['user_seconds']:.1f}", f"{r['user_seconds'] / seq['user_seconds'] * 100:.0f} %",
                     f"{r['slices_inspected']:.1f}"])
    return markdown_table(["strategy", "Dice after (%)", "vs sequential (points)", "user time (s)",
                           "of sequential's time", "slices inspected"], rows) + (
        f"\n{sweep['cases']} cases of the tuning split (initial Dice {seq['dice_before'] * 100:.2f} %).\n")


def budget_sweep(cases: list[Case], budgets=(0.2, 0.4, 0.6, 0.8, 1.0), *, preset: str = DEFAULT_PRESET,
                 predictions: dict | None = None, log=print) -> dict:
    """UGIR and UGIR(*) at several budgets M', and sequential inspection, on ``cases`` (the
    ``val`` split: M' is chosen there, as in the paper); ``predictions`` caches MG-Net's maps."""
    predictions = {} if predictions is None else predictions
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
        budget: float = 0.6, fetal_dir: Path | None = None, preset: str = DEFAULT_PRESET,
        tune_split: str | None = None, patiences=(), stops=(0.01, 0.015, 0.02, 0.0225, 0.025, 0.03),
        log=print) -> dict:
    cases = cases_for(images, labels, split, splits_file)[:max_cases]
    sweep = stops_val = gain_val = None
    if tune_split:
        tune_cases = cases_for(images, labels, tune_split, splits_file)[:max_cases]
        tune_predictions = predict_cases(tune_cases, {})
        gain_val = suggestion_gain(tune_cases, tune_predictions)
        log(f"stop-rule sweep on the {tune_split} split")
        stops_val = stop_sweep(tune_cases, stops, predictions=tune_predictions, budget=budget, preset=preset,
                               log=log)
        if patiences:
            log(f"budget sweep on the {tune_split} split")
            sweep = budget_sweep(tune_cases, preset=preset, predictions=tune_predictions, log=log)
    predictions = predict_cases(cases, {})
    gain = suggestion_gain(cases, predictions)
    results = {}
    for s in strategies:
        t = time.perf_counter()
        results[s] = simulate_cases(cases, s, budget=budget, predictions=predictions, preset=preset)
        log(f"{s}: Dice {results[s]['mean']['dice_after']:.4f}, user "
            f"{results[s]['mean']['user_seconds']:.1f} s ({time.perf_counter() - t:.0f} s)")
    for pat in patiences:  # sensitivity of UGIR to its early-stop patience (the paper: 3)
        if pat != 3:
            results[f"ugir-patience{pat}"] = simulate_cases(cases, "ugir-nu", budget=budget,
                                                           predictions=predictions, preset=preset, patience=pat)
    data = {"benchmark": "stack", "command": command_line(), "machine": machine(),
            "images": str(images), "split": split, "budget": budget, "preset": preset, "cases": len(cases),
            "suggestion_gain": gain, "results": results}
    if gain_val is not None:
        data["suggestion_gain_tuning"] = {"split": tune_split, **gain_val}
        data["stop_sweep"] = {"split": tune_split, **stops_val}
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
    names = {"ugir": "UGIR, gain order + following + expected-Dice stop (default)", "ugir-nu": "UGIR, ν + 3 clean (paper)",
             "ugir-naive": "UGIR(*), ν* + 3 clean (paper)", "ugir-paint": "UGIR order, painting only",
             "ugir-oracle": "best possible order (true errors), same stop", "ugir-random": "random order, same stop",
             "sequential": "UGIR(-U) (sequential)", "graphcut": "Graph Cut (scratch)",
             "deepigeos": "DeepIGeoS (R-Net)"}
    names.update({s: f"UGIR ν, early stop after {s[len('ugir-patience'):]}" for s in data["results"]
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
    text += ("\nWhat checking the suggested slices pays (fix the top slices of each order, "
             f"{data['cases']} cases):\n\n" + suggestion_gain_markdown(data["suggestion_gain"]))
    if "stop_sweep" in data:
        text += ("\nStop rule on the tuning split:\n\n" + stop_markdown(data["stop_sweep"])
                 + "\nSlice orders on the tuning split:\n\n"
                 + suggestion_gain_markdown({k: v for k, v in data["suggestion_gain_tuning"].items()
                                             if k != "split"}))
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
        sug = suggest(var, seg, budget=budget, order="nu")  # no probability map: the paper's ν
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
