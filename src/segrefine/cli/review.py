"""Commands that review a segmentation: refine, refine-gcn, suggest, simulate."""

from __future__ import annotations

from pathlib import Path

import typer

from segrefine.cli import app, console, friendly, progress_bar
from segrefine.cli.cohort import OVERWRITE_HELP, SCHEDULER_HELP, SPLIT_HELP, WORKERS_HELP, cohort_mode, run_cohort_cli
from segrefine.errors import InputError


@app.command()
@friendly
def refine(
    input: Path = typer.Option(..., "-i", "--input", help="Image (3D)."),
    prob: Path = typer.Option(..., "--prob", help="Foreground probability map (any model)."),
    scribbles: Path = typer.Option(..., "--scribbles", help="Label volume: 1 foreground, 2 background, 0 none."),
    output: Path = typer.Option(..., "-o", "--output", help="Refined segmentation (.nii.gz)."),
    seg: Path | None = typer.Option(None, "--seg", help="Initial segmentation (default: prob > 0.5)."),
    method: str = typer.Option("idrlse", help="idrlse | graphcut | rnet | paint (strokes only)."),
    axis: int = typer.Option(2, help="Slice axis."),
    preset: str | None = typer.Option(None, help="Refinement parameters (default: the val-chosen "
                                                    "segrefine.refine.slice.DEFAULT_PRESET)."),
):
    """Refine every slice that holds scribbles; other slices are copied from the initial segmentation.

    Example: segrefine refine -i case.nii.gz --prob case_prob.nii.gz --scribbles scr.nii.gz -o refined.nii.gz
    """
    import numpy as np

    from segrefine import io
    from segrefine.refine.slice import DEFAULT_PRESET, PRESETS, REFINE_METHODS
    from segrefine.refine.volume import refine_volume

    if method not in REFINE_METHODS:
        raise InputError(f"--method must be one of {', '.join(REFINE_METHODS)}, got {method!r}")
    preset = DEFAULT_PRESET if preset is None else preset
    if preset not in PRESETS:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    vol = io.load(input)
    p = _load_like(prob, vol, "--prob", unit_interval=True)
    s = io.load(scribbles, finite=False)
    if s.shape != vol.shape:
        raise InputError(f"--scribbles {scribbles}: shape {s.shape} differs from the image's {vol.shape}")
    values = np.unique(np.asarray(s.array))
    other = values[~np.isin(values, (0, 1, 2))]
    if other.size:
        raise InputError(f"--scribbles {scribbles}: values must be 0 (none), 1 (foreground) or 2 "
                         f"(background); it holds {other.size} other values, e.g. "
                         f"{', '.join(f'{v:g}' for v in other[:5].tolist())}")
    init = _load_like(seg, vol, "--seg") if seg is not None else None
    out, refined = refine_volume(vol.array, p, np.asarray(s.array), init=init, method=method, axis=axis,
                                 spacing=vol.spacing, preset=preset)
    if not str(output).endswith((".nii", ".nii.gz")):
        raise InputError(f"-o {output}: the output must be a .nii or .nii.gz file")
    io.check_writable_dir(Path(output).parent)
    io.save(vol.with_array(out), output, dtype=np.uint8)
    console.print(f"refined {len(refined)} slices ({', '.join(map(str, refined))}) with {method} "
                  f"(preset {preset}) -> {output}")


@app.command("refine-gcn")
@friendly
def refine_gcn_cmd(
    input: Path = typer.Option(..., "-i", "--input", help="Image file or folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    model: Path | None = typer.Option(None, "--model", help="Dropout U-Net checkpoint (default: shipped)."),
    tau: float = typer.Option(0.8, help="Entropy threshold τ (bits) of the uncertain voxels."),
    passes: int = typer.Option(20, "--passes", "--samples", help="MC dropout passes T (--samples is the old name)."),
    prob: Path | None = typer.Option(None, "--prob", help="Another model's probability map (single image)."),
    uncertainty: Path | None = typer.Option(None, "--uncertainty", help="Its entropy map in bits (with --prob)."),
    samples_file: Path | None = typer.Option(None, "--samples-file", help="4D NIfTI of MC samples (single image)."),
    margin: int = typer.Option(0, help="Voxels added around the box of the prediction's largest component "
                                       "(0 was best on the hippocampus val split)."),
    nodes: str = typer.Option("roi", help="Graph nodes: roi (every ROI voxel) | reduced (the authors' set) | band."),
    max_nodes: int = typer.Option(2_000_000, help="Most nodes per graph; larger ROIs use the band, then slabs."),
    graph: str = typer.Option("ours", help="Graph scheme: ours | authors (the authors' code's weights, "
                                           "features, training subset and relabelling)."),
    relabel: str | None = typer.Option(None, help="Nodes the GCN relabels: uncertain | all "
                                                     "(default: the scheme's, ours: uncertain, authors: all)."),
    crf: bool = typer.Option(False, "--crf", help="Then run the dense CRF (its defaults) on the GCN's "
                                                  "probability (relabelled voxels) and E (elsewhere)."),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    split: str | None = typer.Option(None, "--split", help=SPLIT_HELP),
):
    """Automatic refinement: a GCN trained on the confident voxels relabels the uncertain ones.

    Writes <case>.nii.gz (refined labels) and <case>_entropy.nii.gz. With --workers / --scheduler the
    MC dropout passes are seeded from the case name (the same result on any worker; docs/cohort.md).
    Example: segrefine refine-gcn -i case.nii.gz -o out --tau 0.8 --passes 20
    """
    import numpy as np

    from segrefine import io
    from segrefine.cohort.tasks import refine_gcn_maps
    from segrefine.refine.gcn import NODE_SETS, RELABEL, SCHEMES
    from segrefine.uncertainty import Predictor

    if not 0 < tau <= 1:
        raise InputError(f"--tau must be in (0, 1], got {tau}")
    if nodes not in NODE_SETS:
        raise InputError(f"--nodes must be one of {', '.join(NODE_SETS)}, got {nodes!r}")
    if max_nodes < 1:
        raise InputError(f"--max-nodes must be at least 1, got {max_nodes}")
    if graph not in SCHEMES:
        raise InputError(f"--graph must be one of {', '.join(SCHEMES)}, got {graph!r}")
    if relabel is not None and relabel not in RELABEL:
        raise InputError(f"--relabel must be one of {', '.join(RELABEL)}, got {relabel!r}")
    if margin < 0:
        raise InputError(f"--margin must be 0 or more voxels, got {margin}")
    if cohort_mode(workers, scheduler, overwrite=overwrite, split=split):
        if prob is not None or samples_file is not None or uncertainty is not None:
            raise InputError("--prob / --uncertainty / --samples-file go with a single image, not with "
                             "--workers / --scheduler")
        options = {"models": [str(model)] if model else [], "passes": passes, "tau": tau, "margin": margin,
                   "nodes": nodes, "max_nodes": max_nodes, "graph": graph, "relabel": relabel, "crf": crf}
        run_cohort_cli("refine-gcn", input, output, options, workers=workers, scheduler=scheduler,
                       overwrite=overwrite, split=split)
        return
    files = io.list_images(input)
    external = prob is not None or samples_file is not None
    if external and len(files) != 1:
        raise InputError("--prob / --samples-file go with a single image, not a folder")
    if uncertainty is not None and prob is None:
        raise InputError("--uncertainty needs --prob")
    volumes = [(f, io.load(f)) for f in files]
    out_dir = io.check_writable_dir(output)
    predictor = None if external else Predictor("mcdropout", models=[model] if model else None, passes=passes)
    if predictor is not None:
        from segrefine.cli.cards import warn_if_unlike

        warn_if_unlike(predictor, volumes, predictor.axis)
    for path, vol in volumes:
        kw = {}
        if samples_file is not None:
            s = io.load(samples_file, ndim=4)
            arr = np.moveaxis(np.asarray(s.array, np.float32), 3, 0)
            if arr.shape[1:] != vol.shape:
                raise InputError(f"--samples-file {samples_file}: spatial shape {arr.shape[1:]} differs from "
                                 f"the image's {vol.shape}")
            kw["samples"] = arr
        elif prob is not None:
            kw["prob"] = _load_like(prob, vol, "--prob", unit_interval=True)
            if uncertainty is not None:
                kw["entropy"] = _load_like(uncertainty, vol, "--uncertainty")
        else:
            kw["samples"] = predictor(vol.array, keep_samples=True).samples
        refined, entropy, info, caught = refine_gcn_maps(vol, crf=crf, tau=tau, margin=margin, nodes=nodes,
                                                         max_nodes=max_nodes, graph=graph, relabel=relabel,
                                                         **kw)
        for message in caught:
            console.print(f"[yellow]warning:[/yellow] {path}: {message}")
        case = io.case_name(path)
        io.save(vol.with_array(refined), out_dir / f"{case}.nii.gz", dtype=np.uint8)
        io.save(vol.with_array(entropy), out_dir / f"{case}_entropy.nii.gz", dtype=np.float32)
        crf_note = f", then {info['n_changed_crf']} by the CRF" if crf else ""
        console.print(f"{case}: {info.get('n_nodes', 0)} nodes, {info.get('n_uncertain', 0)} uncertain, "
                      f"{info.get('n_changed', 0)} voxels changed{crf_note}, {info.get('seconds_total', 0):.2f} s")


@app.command()
@friendly
def suggest(
    input: Path = typer.Option(..., "-i", "--input", help="Image (3D); with --workers / --scheduler a "
                                                          "folder, list file or Decathlon dataset."),
    json_out: Path | None = typer.Option(None, "--json", help="Ranked slices (JSON) of the one image."),
    prob: Path | None = typer.Option(None, "--prob", help="Foreground probability map of any model."),
    uncertainty: Path | None = typer.Option(None, "--uncertainty", help="Voxel uncertainty map."),
    seg: Path | None = typer.Option(None, "--seg", help="Segmentation (default: prob > 0.5)."),
    axis: int = typer.Option(2, help="Slice axis."),
    budget: float = typer.Option(0.6, help="Fraction of slices to suggest (M'/M)."),
    order: str = typer.Option("gain", help="gain (expected wrong voxels Σ min(p, 1-p), the default) | "
                                           "nu (the paper's ν = ΣU / (ΣY + ζ)) | nu-naive (ν* = ΣU)."),
    naive: bool = typer.Option(False, help="Deprecated: the same as --order nu-naive."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Cohort mode: the folder of the "
                                                                    "<case>.json files and manifest.json."),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    split: str | None = typer.Option(None, "--split", help=SPLIT_HELP),
):
    """Rank slices by uncertainty: the slices a person should check first.

    Without --prob/--uncertainty the shipped MG-Net is run on the image.
    Example: segrefine suggest -i case.nii.gz --json suggestions.json
    """
    import numpy as np

    from segrefine import io
    from segrefine.bench.common import write_json
    from segrefine.guidance import ORDERS, budget_count
    from segrefine.guidance import suggest as rank

    if order not in ORDERS:
        raise InputError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    if cohort_mode(workers, scheduler, overwrite=overwrite, split=split):
        if output is None or json_out is not None or prob is not None or uncertainty is not None:
            raise InputError("with --workers / --scheduler give -o OUT (a folder; MG-Net runs on each case), "
                             "not --json, --prob or --uncertainty")
        budget_count(1, budget)
        options = {"axis": axis, "budget": budget, "order": "nu-naive" if naive else order}
        run_cohort_cli("suggest", input, output, options, workers=workers, scheduler=scheduler,
                       overwrite=overwrite, split=split)
        return
    if json_out is None or output is not None:
        raise InputError("give --json FILE for one image (-o OUT goes with --workers / --scheduler)")
    if Path(json_out).is_dir():
        raise InputError(f"--json {json_out}: is a folder; give the JSON file's name")
    io.check_writable_dir(Path(json_out).parent)  # before the model runs
    vol = io.load(input)
    if (prob is None) != (uncertainty is None):
        raise InputError("--prob and --uncertainty go together (or neither, to run MG-Net)")
    if prob is None:
        from segrefine.uncertainty import Predictor

        from segrefine.cli.cards import warn_if_unlike

        predictor = Predictor("mgnet", axis=axis)
        warn_if_unlike(predictor, [(input, vol)], axis)
        pred = predictor(vol.array)
        p, u, y = pred.prob, pred.uncertainty, pred.label
    else:
        p = _load_like(prob, vol, "--prob", unit_interval=True)
        u = _load_like(uncertainty, vol, "--uncertainty")
        y = _load_like(seg, vol, "--seg") if seg is not None else (p > 0.5)
    if naive:
        order = "nu-naive"
    out = rank(u, np.asarray(y), prob=p, order=order, axis=axis, budget=budget)
    out["image"] = str(input)
    write_json(json_out, out)
    top = ", ".join(f"{s['index']} (score={s['score']:.3g})" for s in out["slices"][:5])
    console.print(f"{out['budget_slices']} of {len(out['slices'])} slices in the budget "
                  f"(order {out['order']}); top: {top}")


def _load_like(path: Path, ref, what: str, *, unit_interval: bool = False):
    """A map file checked against the image ``ref`` (shape, finite, optionally [0, 1]) as float32."""
    from segrefine import io
    from segrefine.validate import image_map

    return image_map(io.load(path).array, f"{what} {path}:", ref.shape, unit_interval=unit_interval)


@app.command()
@friendly
def simulate(
    images: Path = typer.Option(..., "--images", help="Image folder."),
    labels: Path = typer.Option(..., "--labels", help="Ground-truth label folder."),
    strategy: str = typer.Option("ugir", help="ugir | ugir-nu | ugir-naive | ugir-paint | sequential | "
                                              "graphcut | deepigeos."),
    json_out: Path = typer.Option(..., "--json", help="Per-case and mean figures."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write each case's final mask here."),
    split: str | None = typer.Option(None, help="Only the cases of this split (split file beside IMAGES)."),
    splits: Path | None = typer.Option(None, help="Split file."),
    budget: float = typer.Option(0.6, help="M'/M for the ugir strategies."),
    max_cases: int | None = typer.Option(None, help="Only the first N cases."),
    preset: str = typer.Option("default", help="Refinement parameters: default (chosen on val) | paper | "
                                                "hippocampus."),
    order: str = typer.Option("gain", help="Slice order of ugir and ugir-paint: gain | nu | nu-naive."),
    patience: int | None = typer.Option(None, help="Guided strategies: stop after this many consecutive "
                                                      "slices that needed nothing (the paper: 3)."),
    stop_remaining: float | None = typer.Option(None, help="Guided strategies: stop when the slices not yet "
                                                              "shown hold less than this fraction of the "
                                                              "expected wrong voxels (the earlier rule)."),
    stop_dice: float | None = typer.Option(None, help="Guided strategies: stop when the slices not yet shown "
                                                         "are expected to hold less than this much Dice (0.0225 "
                                                         "= 2.25 points). No stop given: the order's own (gain: "
                                                         "0.0225; nu, nu-naive: patience 3)."),
    follow: bool | None = typer.Option(None, "--follow/--no-follow",
                                       help="Guided strategies: show the neighbours of a slice that needed "
                                            "refinement next (default: with the gain order)."),
):
    """Simulated user study of one strategy (see segrefine.simulate for the user and time model).

    Example: segrefine simulate --images ../shared/data/hippocampus/imagesTr
             --labels ../shared/data/hippocampus/labelsTr --split test --strategy ugir --json ugir.json
    """
    from segrefine.bench.common import cases_for, write_json
    from segrefine.bench.stack import simulate_cases
    from segrefine.io import check_writable_dir
    from segrefine.simulate import STRATEGIES

    if strategy not in STRATEGIES:
        raise InputError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    from segrefine.guidance import ORDERS

    if patience is not None and patience < 1:
        raise InputError(f"--patience must be at least 1, got {patience}")
    if stop_remaining is not None and not 0 <= stop_remaining < 1:
        raise InputError(f"--stop-remaining must be in [0, 1), got {stop_remaining}")
    if stop_dice is not None and not 0 <= stop_dice < 1:
        raise InputError(f"--stop-dice must be in [0, 1), got {stop_dice}")
    if order not in ORDERS:
        raise InputError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    cases = cases_for(images, labels, split, splits)[:max_cases]
    if output is not None:
        check_writable_dir(output)
    with progress_bar() as bar:
        task = bar.add_task(f"simulate {strategy}", total=len(cases))
        data = simulate_cases(cases, strategy, out_dir=output, budget=budget, preset=preset, order=order,
                              patience=patience, stop_remaining=stop_remaining, stop_dice=stop_dice,
                              follow=follow, on_case=lambda c, r: bar.advance(task))
    write_json(json_out, data)
    m = data["mean"]
    console.print(f"{strategy}: Dice {m['dice_before']:.4f} -> {m['dice_after']:.4f}, "
                  f"{m['slices_inspected']:.1f} slices inspected, {m['scribbles']:.1f} scribbles, "
                  f"{m['user_seconds']:.1f} s user, {m['machine_seconds']:.2f} s machine")




@app.command()
@friendly
def queue(
    output: Path = typer.Argument(..., help="A cohort output folder (predict | refine-gcn | suggest)."),
    top: int = typer.Option(20, help="Rows printed (queue.json holds every case)."),
):
    """Rank a cohort's volumes by expected gain from review (expected wrong voxels, Σ min(p, 1-p)),
    each with its slices in review order; writes OUT/queue.json (`segrefine serve --cohort OUT` lists it).

    Example: segrefine queue out
    """
    import json

    from rich.table import Table

    from segrefine.cohort.queue import QUEUE, review_queue
    from segrefine.io import atomic_path

    if top < 0:
        raise InputError(f"--top must be 0 or more, got {top}")
    data = review_queue(output)
    with atomic_path(Path(output) / QUEUE) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    table = Table("rank", "case", "expected gain (voxels)", "uncertainty ν", "first slices")
    for c in data["cases"][:top]:
        table.add_row(str(c["rank"]), c["case"], f"{c['expected_gain']:.1f}", f"{c['uncertainty']:.4g}",
                      ", ".join(str(k) for k, _ in c["slices"][:5]))
    console.print(table)
    console.print(f"{len(data['cases'])} cases ranked, {len(data['failed'])} failed; "
                  f"-> {Path(output) / QUEUE}")
