"""Automatic refinement benchmark (GCN refinement paper): deterministic CNN, MC expectation,
dense CRF and GCN, in the full and the low-data regime.

Regimes: ``full`` = the shipped dropout U-Net (trained on ``train``); ``small`` =
the same network trained on ``train_small`` (10 volumes), trained here with the
shipped model's settings if missing and cached. For each test case: one
deterministic pass (dropout off), ``passes`` MC-dropout passes (expectation
E, entropy H), E > 0.5, the dense CRF on E, the GCN refining E > 0.5 with
``refine_gcn``'s defaults, the other graph scheme (:data:`OTHER_GCN`), and the
dense CRF run on the GCN's output. Gains are given against the CNN and against
E > 0.5, the segmentation the GCN refines. A τ sweep on the first cases of the
low-data regime, the speed of graph build + 200 epochs on a ~70k-node graph
against the per-node reference build, and a picture like the paper's.

The U-Net label and MC passes of each case are cached in ``cache/maps`` (see
:func:`case_maps`), so the tuning, the τ sweep and a rerun reuse them.
"""

from __future__ import annotations

import time
import warnings
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
from segrefine.figures import save_figure
from segrefine.metrics import assd, dice

VARIANTS = ("cnn", "mc_mean", "crf", "gcn", "gcn_other", "gcn_crf")
#: The graph options of the ``gcn_other`` row: the scheme that is not the default.
OTHER_GCN = {"ours": {"graph": "authors", "nodes": "reduced"}, "authors": {"graph": "ours", "nodes": "roi"}}
#: GCN settings compared on the tuning split (τ = the run's τ unless given).
GCN_CONFIGS = {
    "ours, roi": {"graph": "ours", "nodes": "roi"},
    "ours, reduced": {"graph": "ours", "nodes": "reduced"},
    "authors, reduced": {"graph": "authors", "nodes": "reduced"},
    "authors, roi": {"graph": "authors", "nodes": "roi"},
    "authors, roi, uncertain only": {"graph": "authors", "nodes": "roi", "relabel": "uncertain"},
    "authors, reduced, uncertain only": {"graph": "authors", "nodes": "reduced", "relabel": "uncertain"},
}


def _default_graph() -> str:
    import inspect

    from segrefine.refine.gcn import refine_gcn

    return inspect.signature(refine_gcn).parameters["graph"].default


def _names() -> dict:
    other = "ours" if _default_graph() == "authors" else "authors"
    return {"cnn": "CNN (deterministic)", "mc_mean": "MC expectation > 0.5", "crf": "dense CRF",
            "gcn": f"GCN (default: {_default_graph()} graph)",
            "gcn_other": f"GCN ({other} graph, {OTHER_GCN[_default_graph()]['nodes']} nodes)",
            "gcn_crf": "GCN, then dense CRF"}


def small_model(dataset: Path, cache: Path, log=print) -> Path:
    """The dropout U-Net trained on ``train_small`` with the shipped model's settings (cached)."""
    path = Path(cache) / "unet_train_small.pt"
    if not path.exists():
        log(f"training the low-data U-Net on train_small -> {path}")
        train_like_shipped_unet(dataset, "train_small", path)
    return path


def _model_key(model: Path) -> str:
    import hashlib

    return hashlib.sha1(Path(model).read_bytes()).hexdigest()[:12]


def case_maps(case, model: Path, passes: int, cache: Path | None, *, unet=None, mc=None) -> dict:
    """Image, ground truth, the deterministic U-Net label and ``passes`` MC-dropout passes of one case.

    With ``cache``, the label and the passes are stored under
    ``cache/maps/<model sha1>_T<passes>/<case>.npz`` and read back on the next call
    (the τ sweep, the tuning and the test cases then share them across runs). The
    passes are seeded from the case name, so a recomputation gives the same maps.
    """
    import zlib

    import torch

    from segrefine.uncertainty import Predictor

    vol = io.load(case.image)
    gt = np.asarray(io.load(case.label, finite=False).array) > 0
    path = None if cache is None else Path(cache) / "maps" / f"{_model_key(model)}_T{passes}" / f"{case.name}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            return {"image": vol.array, "spacing": vol.spacing, "gt": gt, "label": z["label"],
                    "samples": z["samples"], "seconds_mc": float(z["seconds_mc"])}
    unet = unet or Predictor("unet", models=[model], backend="torch")
    mc = mc or Predictor("mcdropout", models=[model], passes=passes)
    label = unet(vol.array).label
    state = torch.get_rng_state()
    torch.manual_seed(zlib.crc32(case.name.encode()))
    t = time.perf_counter()
    s = mc(vol.array, keep_samples=True).samples
    t_mc = time.perf_counter() - t
    torch.set_rng_state(state)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, label=label, samples=s.astype(np.float32), seconds_mc=t_mc)
        tmp.replace(path)
    return {"image": vol.array, "spacing": vol.spacing, "gt": gt, "label": label,
            "samples": np.asarray(s, np.float32), "seconds_mc": t_mc}


def _scores(mask, gt, spacing):
    return {"dice": dice(mask, gt), "assd": assd(mask, gt, spacing)}


def evaluate_case(maps: dict, *, tau: float, crf_params: dict | None = None,
                  margin: int | None = None) -> dict:
    """One test case from :func:`case_maps`; ``crf_params`` / ``margin`` None = the library defaults."""
    from segrefine.refine.crf import dense_crf
    from segrefine.refine.gcn import DEFAULT_MARGIN, mc_statistics, refine_gcn

    image, gt, spacing = maps["image"], maps["gt"], maps["spacing"]
    margin = DEFAULT_MARGIN if margin is None else margin
    rec = {"cnn": _scores(maps["label"] > 0, gt, spacing)}
    e, h = mc_statistics(maps["samples"])
    rec["mc_mean"] = _scores(e > 0.5, gt, spacing)
    t = time.perf_counter()
    crf = dense_crf(image, e, spacing=spacing, **(crf_params or {}))
    t_crf = time.perf_counter() - t
    rec["crf"] = _scores(crf > 0, gt, spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined, info = refine_gcn(image, maps["samples"], tau=tau, spacing=spacing, margin=margin,
                                   return_prob=True)
        t = time.perf_counter()
        other, _ = refine_gcn(image, maps["samples"], tau=tau, spacing=spacing, margin=margin,
                              **OTHER_GCN[info["graph"]])
        t_other = time.perf_counter() - t
    rec["gcn"] = _scores(refined > 0, gt, spacing)
    rec["gcn_other"] = _scores(other > 0, gt, spacing)
    rec["gcn_crf"] = _scores(dense_crf(image, info["prob"], spacing=spacing, **(crf_params or {})) > 0, gt,
                             spacing)
    rec["seconds"] = {"mc_sampling": maps["seconds_mc"], "crf": t_crf,
                      "graph_build": info.get("seconds_graph", 0.0),
                      "gcn_training": info.get("seconds_train", 0.0), "gcn_other_total": t_other}
    rec["graph"] = {"nodes": info.get("n_nodes", 0), "edges": info.get("n_edges", 0),
                    "uncertain": info.get("n_uncertain", 0), "reason": info.get("reason")}
    rec["_maps"] = (maps["label"], e, h, refined)
    return rec


def speed(n_side: int = 42, seed: int = 0) -> dict:
    """Graph build (vectorised vs per-node reference) + 200 epochs on a ~n_side^3-node ROI."""
    from segrefine.refine.gcn import build_graph, train_gcn
    from segrefine.uncertainty import binary_entropy

    rng = np.random.default_rng(seed)
    shape = (n_side + 8,) * 3
    grid = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grid))
    truth = r < n_side / 2 - 3
    img = (truth + rng.normal(0, 0.3, shape)).astype(np.float32)
    e = np.clip(1 / (1 + np.exp((r - (n_side / 2 - 3)) * 1.5)) + rng.normal(0, 0.05, shape), 0, 1).astype(np.float32)
    h = binary_entropy(e)
    pred = e > 0.5
    train_gcn(build_graph(img[:16, :16, :16], e[:16, :16, :16], h[:16, :16, :16],
                          np.ones((16, 16, 16), bool)), epochs=1)  # compile / load numba kernels
    t = time.perf_counter()
    g = build_graph(img, e, h, pred, margin=3)  # the (n_side + 6)^3 box: ~70k nodes at n_side 42
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    train_gcn(g)
    t_train = time.perf_counter() - t
    t_ref = None
    reference = _reference_build()
    if reference is not None:
        t = time.perf_counter()
        reference(img, e, h, pred, margin=3)
        t_ref = time.perf_counter() - t
    return {"nodes": int(g.n_nodes), "edges": int(g.n_edges), "build_s": t_build, "train_200_epochs_s": t_train,
            "total_s": t_build + t_train, "reference_build_s": t_ref,
            "build_speedup": None if t_ref is None else t_ref / t_build}


def _reference_build():
    """``build_graph_reference`` of ``tests/gcn_reference.py`` (the per-node loops, as the authors'
    code builds its graph): the speed baseline. None outside a source checkout."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "tests" / "gcn_reference.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("gcn_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_graph_reference


#: Dense-CRF settings tried on the tuning split (every combination).
CRF_GRID = {"w_bilateral": (0.5, 1.0, 2.0, 5.0), "sxyz": (2.0, 5.0), "srgb": (0.25, 0.5, 1.0),
            "w_gauss": (1.0, 3.0)}
#: ROI margins (voxels) tried on the tuning split.
MARGINS = (0, 1, 3, 6, 10)


def tune(cases, model: Path, passes: int, tau: float, cache: Path | None = None, log=print) -> dict:
    """On ``cases`` (``val``): choose the dense CRF's parameters (every setting of :data:`CRF_GRID`),
    look at the GCN's ROI margin (:data:`MARGINS`) and compare the GCN settings of
    :data:`GCN_CONFIGS`, each also scored against E > 0.5."""
    import itertools

    from segrefine.refine.crf import dense_crf
    from segrefine.refine.gcn import mc_statistics, refine_gcn

    names = list(CRF_GRID)
    settings = [dict(zip(names, values)) for values in itertools.product(*CRF_GRID.values())]
    crf_dice = np.zeros((len(settings), len(cases)))
    margin_dice = np.zeros((len(MARGINS), len(cases)))
    config_dice = np.zeros((len(GCN_CONFIGS), len(cases)))
    cnn, base = [], []
    for c, case in enumerate(cases):
        m = case_maps(case, model, passes, cache)
        image, gt, spacing, s = m["image"], m["gt"], m["spacing"], m["samples"]
        cnn.append(dice(m["label"] > 0, gt))
        e, _ = mc_statistics(s)
        base.append(dice(e > 0.5, gt))
        for i, params in enumerate(settings):
            crf_dice[i, c] = dice(dense_crf(image, e, spacing=spacing, **params) > 0, gt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, mg in enumerate(MARGINS):
                refined, _ = refine_gcn(image, s, tau=tau, spacing=spacing, margin=mg)
                margin_dice[i, c] = dice(refined > 0, gt)
            for i, kw in enumerate(GCN_CONFIGS.values()):
                refined, _ = refine_gcn(image, s, spacing=spacing, **{"tau": tau, **kw})
                config_dice[i, c] = dice(refined > 0, gt)
    best = int(np.argmax(crf_dice.mean(1)))
    cnn, base = np.array(cnn), np.array(base)
    out = {"cases": len(cases), "cnn_dice": float(cnn.mean()), "mc_mean_dice": float(base.mean()),
           "crf": [{**p, "dice": float(d)} for p, d in zip(settings, crf_dice.mean(1))],
           "crf_best": settings[best], "crf_best_dice": float(crf_dice[best].mean()),
           "margin": {str(mg): float(d) for mg, d in zip(MARGINS, margin_dice.mean(1))},
           "margin_best": int(MARGINS[int(np.argmax(margin_dice.mean(1)))]),
           "gcn_configs": {name: {**kw, "dice": float(d.mean()), "gain_vs_cnn": float((d - cnn).mean()),
                                  "gain_vs_mc_mean": float((d - base).mean()),
                                  "improved_vs_mc_mean": int((d > base + 1e-6).sum()),
                                  "worsened_vs_mc_mean": int((d < base - 1e-6).sum())}
                           for (name, kw), d in zip(GCN_CONFIGS.items(), config_dice)}}
    log(f"tuning on {len(cases)} cases: CNN {out['cnn_dice']:.4f}, E>0.5 {out['mc_mean_dice']:.4f}, best CRF "
        f"{settings[best]} {out['crf_best_dice']:.4f}; GCN by margin "
        + ", ".join(f"{mg}: {d:.4f}" for mg, d in out["margin"].items()) + "; GCN settings "
        + ", ".join(f"{k}: {v['dice']:.4f}" for k, v in out["gcn_configs"].items()))
    return out


#: Steps from our GCN to the authors' recipe, for :func:`authors_ablation`: (weights and
#: features of which scheme, the authors' training, which nodes are relabelled).
ABLATION_STEPS = {
    "ours": ("ours", "ours", False, "uncertain"),
    "authors weights, our features": ("authors", "ours", False, "uncertain"),
    "our weights, authors features": ("ours", "authors", False, "uncertain"),
    "authors weights + features": ("authors", "authors", False, "uncertain"),
    "+ authors training (80 %, 0.5 BCE)": ("authors", "authors", True, "uncertain"),
    "+ every node relabelled (= authors)": ("authors", "authors", True, "all"),
    "ours + every node relabelled": ("ours", "ours", False, "all"),
    "ours + authors training": ("ours", "ours", True, "uncertain"),
}


def authors_ablation(cases, model: Path, passes: int = 20, *, tau: float = 0.8, nodes: str = "roi",
                     cache: Path | None = Path("bench_out/gcn"), log=print) -> dict:
    """What each part of the authors' recipe costs: mean Dice gain over E > 0.5 of every step of
    :data:`ABLATION_STEPS` on ``cases`` (use ``val``), plus how often the default GCN's changes
    of E > 0.5 are right and what relabelling every uncertain voxel correctly would give
    (the oracle bound). Not part of :func:`run`; docs/benchmarks.md quotes it."""
    from dataclasses import replace

    from segrefine.refine.gcn import (
        AUTHORS_LOSS_WEIGHT,
        AUTHORS_TRAIN_FRACTION,
        mc_statistics,
        train_gcn,
    )
    from segrefine.refine.gcn.graph import _build, _prepare

    gains = {name: [] for name in ABLATION_STEPS}
    counts = {"uncertain": 0, "uncertain_wrong": 0, "changed": 0, "changed_right": 0}
    oracle = []
    for case in cases:
        m = case_maps(case, model, passes, cache)
        image, gt = m["image"], m["gt"]
        e, h = mc_statistics(m["samples"])
        pred = e > 0.5
        base = dice(pred, gt)
        kw = {"tau": tau, "margin": 0, "spacing": m["spacing"], "k": 16, "seed": 0, "sigmas": None, "nodes": nodes}
        graphs = {g: _build(_prepare(image, e, h, pred, graph=g, **kw)) for g in ("ours", "authors")}
        for name, (weights, features, training, relabel) in ABLATION_STEPS.items():
            g = graphs[weights]
            if features != weights:
                g = replace(g, features=graphs[features].features)
            fit = train_gcn(g, seed=0, train_fraction=AUTHORS_TRAIN_FRACTION if training else 1.0,
                            loss_weight=AUTHORS_LOSS_WEIGHT if training else 1.0)
            chosen = g.labels < 0 if relabel == "uncertain" else np.ones(g.n_nodes, bool)
            out = pred.copy()
            out[tuple(v[chosen] for v in g.voxels())] = fit.prob[chosen] > 0.5
            gains[name].append(dice(out, gt) - base)
            if name == "ours":
                changed = out != pred
                counts["changed"] += int(changed.sum())
                counts["changed_right"] += int((changed & (out == gt)).sum())
        uncertain = h > tau
        counts["uncertain"] += int(uncertain.sum())
        counts["uncertain_wrong"] += int((uncertain & (pred != gt)).sum())
        oracle.append(dice(np.where(uncertain, gt, pred), gt) - base)
    out = {"cases": len(cases), "tau": tau, "nodes": nodes,
           "gain_vs_mc_mean": {k: float(np.mean(v)) for k, v in gains.items()},
           "oracle_gain_vs_mc_mean": float(np.mean(oracle)), **counts}
    log("ablation (gain vs E > 0.5): " + ", ".join(f"{k} {v * 100:+.2f}" for k, v in out["gain_vs_mc_mean"].items())
        + f"; oracle {out['oracle_gain_vs_mc_mean'] * 100:+.2f}; changed {counts['changed']} "
        f"({counts['changed_right']} right) of {counts['uncertain']} uncertain voxels")
    return out


def memory(shape=(512, 512, 300), *, log=print) -> dict:
    """Peak memory of :func:`refine_gcn` with its defaults on a synthetic CT-sized volume whose
    structure spans the whole volume (so the ROI is the whole ``shape``), run in a fresh process."""
    import json
    import subprocess
    import sys

    code = f"from segrefine.bench.gcn import _memory_probe; _memory_probe({tuple(int(v) for v in shape)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"memory: {shape} ROI -> {result['n_nodes']} nodes in {result['n_graphs']} graphs, peak "
        f"{result['peak_mb']:.0f} MB (inputs {result['inputs_mb']:.0f} MB), {result['seconds']:.0f} s")
    return result


def _memory_probe(shape) -> None:
    """Child process of :func:`memory`: prints one JSON line."""
    import json
    import resource

    from segrefine.refine.gcn import refine_gcn
    from segrefine.uncertainty import binary_entropy

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB

    rng = np.random.default_rng(0)
    c = [(s - 1) / 2 for s in shape]
    e = np.empty(shape, np.float32)
    h = np.empty(shape, np.float32)
    image = np.empty(shape, np.float32)
    ii, jj = np.ogrid[:shape[0], :shape[1]]
    for k in range(shape[2]):  # plane by plane, so the probe's own temporaries stay small
        r = np.sqrt(((ii - c[0]) / c[0]) ** 2 + ((jj - c[1]) / c[1]) ** 2 + ((k - c[2]) / c[2]) ** 2)
        e[:, :, k] = 1 / (1 + np.exp(-(1 - r) * min(c)))  # ~1 voxel wide sigmoid at the surface
        h[:, :, k] = binary_entropy(e[:, :, k])
        image[:, :, k] = 100 * e[:, :, k] + rng.normal(0, 20, shape[:2])
    inputs = rss_mb()
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = refine_gcn(image, prob=e, entropy=h)
    print(json.dumps({"shape": list(shape), "inputs_mb": inputs, "peak_mb": rss_mb(),
                      "seconds": time.perf_counter() - t,
                      **{k: info[k] for k in ("n_nodes", "n_edges", "n_uncertain", "n_graphs", "node_set",
                                              "seconds_graph", "seconds_train", "roi")},
                      "warnings": [str(w.message) for w in caught]}))


def run(images: Path, labels: Path, out_json: Path, *, split: str | None = "test",
        splits_file: Path | None = None, passes: int = 20, tau: float = 0.8,
        max_cases: int | None = None, sweep_cases: int = 8, cache: Path = Path("bench_out/gcn"),
        regimes=("full", "small"), tune_split: str | None = "val", memory_shape=(512, 512, 300),
        log=print) -> dict:
    from segrefine.nets.checkpoint import shipped_model
    from segrefine.uncertainty import Predictor

    cases = cases_for(images, labels, split, splits_file)[:max_cases]
    models = {"full": shipped_model("unet")}
    if "small" in regimes:
        models["small"] = small_model(Path(images).parent, cache, log=log)
    results, picture, tuning = {}, None, {}
    for regime in regimes:
        unet = Predictor("unet", models=[models[regime]], backend="torch")
        mc = Predictor("mcdropout", models=[models[regime]], passes=passes)
        crf_params = margin = None
        if tune_split:  # the CRF's parameters and the GCN's ROI margin come from the tuning split
            tuning[regime] = tune(cases_for(images, labels, tune_split, splits_file), models[regime], passes,
                                  tau, cache=cache, log=log)
            crf_params, margin = tuning[regime]["crf_best"], tuning[regime]["margin_best"]
        recs = []
        for case in cases:
            m = case_maps(case, models[regime], passes, cache, unet=unet, mc=mc)
            rec = evaluate_case(m, tau=tau, crf_params=crf_params, margin=margin)
            maps = rec.pop("_maps")
            if picture is None or (regime == "small" and picture[0] != "small"):
                picture = (regime, case.name, m["image"], m["gt"], maps)
            recs.append({"case": case.name, **rec})
        results[regime] = recs
        log(f"{regime}: " + ", ".join(f"{v} {np.mean([r[v]['dice'] for r in recs]):.4f}" for v in VARIANTS))
    sweep = None
    if sweep_cases > 0:
        sweep = tau_sweep(cases[:sweep_cases], models["small" if "small" in models else "full"], passes,
                          cache=cache, log=log)
    data = {"benchmark": "gcn", "command": command_line(), "machine": machine(), "images": str(images),
            "split": split, "samples": passes, "tau": tau, "models": {k: str(v) for k, v in models.items()},
            "default_graph": _default_graph(), "other_gcn": OTHER_GCN[_default_graph()],
            "summary": summarise(results), "tau_sweep": sweep, "speed": speed(), "tuning": tuning,
            "memory": memory(memory_shape, log=log) if memory_shape else None, "results": results}
    write_json(out_json, data)
    write_text(Path(out_json).with_suffix(".md"), table_markdown(data))
    if sweep:
        plot_sweep(Path(out_json).with_name(Path(out_json).stem + "_tau.png"), sweep)
    if picture:
        plot_example(Path(out_json).with_suffix(".png"), picture)
    return data


def summarise(results: dict) -> dict:
    out = {}
    for regime, recs in results.items():
        s = {}
        for v in VARIANTS:
            d = np.array([r[v]["dice"] for r in recs])
            a = np.array([r[v]["assd"] for r in recs], float)
            s[v] = {"dice": float(d.mean()), "dice_sd": float(d.std()), "assd": float(np.nanmean(a)),
                    "assd_sd": float(np.nanstd(a))}
        base = np.array([r["cnn"]["dice"] for r in recs])
        e_base = np.array([r["mc_mean"]["dice"] for r in recs])
        for v in VARIANTS[1:]:
            d = np.array([r[v]["dice"] for r in recs])
            s[v].update(gain_vs_cnn=float((d - base).mean()), improved=int((d > base + 1e-6).sum()),
                        worsened=int((d < base - 1e-6).sum()))
            if v != "mc_mean":
                s[v].update(gain_vs_mc_mean=float((d - e_base).mean()),
                            improved_vs_mc_mean=int((d > e_base + 1e-6).sum()),
                            worsened_vs_mc_mean=int((d < e_base - 1e-6).sum()))
        secs = {k: float(np.mean([r["seconds"][k] for r in recs])) for k in recs[0]["seconds"]}
        graph = {k: float(np.mean([r["graph"][k] for r in recs])) for k in ("nodes", "edges", "uncertain")}
        out[regime] = {"variants": s, "seconds": secs, "graph": graph, "cases": len(recs)}
    return out


def tau_sweep(cases, model: Path, passes: int, taus=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
              cache: Path | None = None, log=print) -> dict:
    """Dice gain of the default GCN over the CNN and over E > 0.5 at each τ on ``cases``."""
    from segrefine.refine.gcn import mc_statistics, refine_gcn

    gains = {t: [] for t in taus}
    gains_e = {t: [] for t in taus}
    for case in cases:
        m = case_maps(case, model, passes, cache)
        base = dice(m["label"] > 0, m["gt"])
        e_base = dice(mc_statistics(m["samples"])[0] > 0.5, m["gt"])
        for t in taus:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                refined, _ = refine_gcn(m["image"], m["samples"], tau=t, spacing=m["spacing"])
            d = dice(refined > 0, m["gt"])
            gains[t].append(d - base)
            gains_e[t].append(d - e_base)
    out = {str(t): {"mean_gain": float(np.mean(g)), "sd": float(np.std(g)),
                    "mean_gain_vs_mc_mean": float(np.mean(gains_e[t]))} for t, g in gains.items()}
    log("τ sweep: " + ", ".join(f"{t}: {v['mean_gain'] * 100:+.2f}" for t, v in out.items()))
    return {"model": str(model), "cases": len(cases), "gain": out}


def table_markdown(data: dict) -> str:
    text = ""
    names = _names()
    for regime, recs in data["results"].items():
        s = data["summary"][regime]
        rows = []
        for v in VARIANTS:
            sv = s["variants"][v]
            vs_e = "gain_vs_mc_mean" in sv
            rows.append([names[v], mean_sd([r[v]["dice"] * 100 for r in recs]), mean_sd([r[v]["assd"] for r in recs]),
                         f"{sv.get('gain_vs_cnn', 0) * 100:+.2f}" if v != "cnn" else "–",
                         f"{sv.get('improved', '–')} / {sv.get('worsened', '–')}" if v != "cnn" else "–",
                         f"{sv['gain_vs_mc_mean'] * 100:+.2f}" if vs_e else "–",
                         f"{sv['improved_vs_mc_mean']} / {sv['worsened_vs_mc_mean']}" if vs_e else "–"])
        sec = s["seconds"]
        text += (f"\n**{regime} regime** ({'train' if regime == 'full' else 'train_small'}, {s['cases']} test cases)\n\n"
                 + markdown_table(["method", "Dice (%)", "ASSD (mm)", "gain vs CNN (points)", "improved / worsened",
                                   "gain vs E > 0.5 (points)", "improved / worsened"], rows)
                 + f"\nSeconds per volume: MC sampling ({data['samples']} passes) {sec['mc_sampling']:.2f}, "
                 f"graph build {sec['graph_build']:.2f}, GCN training {sec['gcn_training']:.2f}, CRF {sec['crf']:.2f}; "
                 f"graph {s['graph']['nodes']:.0f} nodes, {s['graph']['edges']:.0f} edges, "
                 f"{s['graph']['uncertain']:.0f} uncertain nodes (means).\n")
    for regime, t in (data.get("tuning") or {}).items():
        best = ", ".join(f"{k} {v:g}" for k, v in t["crf_best"].items())
        text += (f"\nTuning ({regime} regime, {t['cases']} `val` cases, CNN {t['cnn_dice'] * 100:.2f} %): dense CRF "
                 f"best of {len(t['crf'])} settings: {best} ({t['crf_best_dice'] * 100:.2f} %); GCN Dice by ROI "
                 "margin: " + ", ".join(f"{m}: {d * 100:.2f} %" for m, d in t["margin"].items())
                 + f" (the test cases use margin {t['margin_best']}).\n")
        if "gcn_configs" in t:
            text += (f"\nGCN settings on `val` ({regime} regime, τ {data['tau']:g}, E > 0.5 "
                     f"{t['mc_mean_dice'] * 100:.2f} %): "
                     + ", ".join(f"{k} {v['dice'] * 100:.2f} % ({v['gain_vs_mc_mean'] * 100:+.2f} vs E > 0.5, "
                                 f"{v['improved_vs_mc_mean']} / {v['worsened_vs_mc_mean']})"
                                 for k, v in t["gcn_configs"].items()) + ".\n")
    mem = data.get("memory")
    if mem:
        text += (f"\nMemory on a synthetic {'x'.join(map(str, mem['shape']))} volume whose structure spans it "
                 f"(ROI {'x'.join(str(b - a) for a, b in mem['roi'])}): {mem['node_set']} node set, "
                 f"{mem['n_nodes']} nodes / {mem['n_edges']} edges in {mem['n_graphs']} graph(s), peak "
                 f"{mem['peak_mb']:.0f} MB (of which the input volumes {mem['inputs_mb']:.0f} MB), "
                 f"{mem['seconds']:.0f} s.\n")
    sp = data["speed"]
    ref = ("no per-node reference build outside a source checkout" if sp["reference_build_s"] is None else
           f"per-node reference build {sp['reference_build_s']:.1f} s, {sp['build_speedup']:.0f}x")
    text += (f"\nSpeed on a synthetic ROI of {sp['nodes']} nodes / {sp['edges']} edges: graph build "
             f"{sp['build_s']:.2f} s ({ref}), 200 epochs {sp['train_200_epochs_s']:.2f} s, total {sp['total_s']:.2f} s.\n")
    m = data["machine"]
    return text + f"\nMachine: {m['cpu']}, {m['cores']} cores. Command: `{data['command']}`\n"


def plot_sweep(path: Path, sweep: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    taus = [float(t) for t in sweep["gain"]]
    g = [v["mean_gain"] * 100 for v in sweep["gain"].values()]
    sd = [v["sd"] * 100 for v in sweep["gain"].values()]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(taus, g, yerr=sd, marker="o", capsize=3, label="vs the CNN")
    if all("mean_gain_vs_mc_mean" in v for v in sweep["gain"].values()):
        ax.plot(taus, [v["mean_gain_vs_mc_mean"] * 100 for v in sweep["gain"].values()], marker="s",
                label="vs E > 0.5 (what it refines)")
        ax.legend(fontsize=8)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("entropy threshold τ (bits)")
    ax.set_ylabel("Dice gain (points)")
    ax.set_title(f"GCN τ sweep ({sweep['cases']} cases)")
    save_figure(fig, path)
    return path


def plot_example(path: Path, picture) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segrefine.figures import best_slice

    regime, name, image, gt, (label, e, h, refined) = picture
    k = best_slice(gt)
    panels = [("image + ground truth", image, gt), ("CNN prediction", label, None),
              ("MC expectation E", e, None), ("entropy H (bits)", h, None), ("GCN refined", refined, gt)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for a, (title, arr, cont) in zip(axes, panels):
        a.imshow(arr[:, :, k].T, cmap="gray" if title.startswith("image") else "viridis", origin="lower")
        if cont is not None:
            a.contour(cont[:, :, k].T, levels=[0.5], colors="r", linewidths=1)
        a.set_title(title)
        a.axis("off")
    fig.suptitle(f"{name} slice {k} ({regime} regime)")
    save_figure(fig, path)
    return path
