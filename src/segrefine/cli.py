"""The ``segrefine`` command line: thin commands that parse, call and print."""

from __future__ import annotations

import json
import logging
import sys
from functools import wraps
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from segrefine.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Uncertainty-guided segmentation refinement (UGIR, GCN refinement).")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that write JSON and a table.")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)
DEFAULT_SHARED = Path("../shared/data")


@app.callback()
def _global_options(
    max_voxels: Optional[int] = typer.Option(
        None, "--max-voxels", min=1,
        help="Largest image any command reads, checked from its header before loading (default "
             "512x512x1024 voxels, at most 4 bytes a voxel of it; see docs/web.md)."),
):
    """Options for every command."""
    if max_voxels is not None:
        from segrefine import io

        io.MAX_VOXELS = max_voxels


def friendly(func):
    """Turn an InputError into a one-line message and exit status 2."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


def _five(text: str, option: str, kind, ok, what: str) -> list:
    """Five comma-separated numbers of ``kind`` (one per resolution level), each passing ``ok``."""
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 5 or not all(ok(v) for v in values):
        raise InputError(f"{option} must be 5 comma-separated {what}, got {text!r}")
    return values


@app.command()
@friendly
def train(
    dataset: Path = typer.Option(..., "--dataset", help="Decathlon-layout folder (imagesTr, labelsTr)."),
    arch: str = typer.Option("mgnet", help="mgnet, unet, or rnet (the refinement network, trained on the shipped MG-Net's errors)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (best validation Dice)."),
    splits: Optional[Path] = typer.Option(None, help="Split file; default DATASET/splits.json."),
    train_split: str = typer.Option("train", help="Split used for training."),
    val_split: str = typer.Option("val", help="Split used for validation."),
    epochs: int = typer.Option(12),
    iterations: int = typer.Option(150, help="Iterations per epoch."),
    batch_size: int = typer.Option(24),
    lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    multiclass: bool = typer.Option(False, help="Keep label values as classes (default: foreground = label > 0)."),
    threads: int = typer.Option(0, help="Torch threads (0 = torch default)."),
    dropout_at: Optional[str] = typer.Option(None, help="MG-Net ablation: 'block' puts dropout inside every "
                                                        "block (the first shipped layout) instead of after "
                                                        "the encoder blocks (published)."),
    dropout: Optional[str] = typer.Option(None, help="MG-Net ablation: dropout rate per level, e.g. "
                                                     "'0.1,0.2,0.3,0.3,0.3' (published: 0.1,...,0.5)."),
    norm: Optional[str] = typer.Option(None, help="MG-Net ablation: 'instance' instead of the published "
                                                  "group normalisation."),
    head_kernel: Optional[int] = typer.Option(None, help="MG-Net ablation: output kernel 1 (published: 3)."),
    channels: Optional[str] = typer.Option(None, help="MG-Net ablation: channels per level, e.g. "
                                                      "'64,128,256,512,256' (published: 64,128,256,512,512)."),
    up_activation: Optional[bool] = typer.Option(None, "--up-activation/--no-up-activation",
                                                 help="MG-Net ablation: leaky ReLU after the transposed "
                                                      "convolutions (published: on)."),
):
    """Train a U-Net or MG-Net on CPU.

    Example: segrefine train --dataset ../shared/data/hippocampus --arch mgnet --out mgnet.pt
    """
    from segrefine.datasets import split_cases
    from segrefine.nets.train import TrainConfig
    from segrefine.nets.train import train as run_train

    if arch not in ("mgnet", "unet", "rnet"):
        raise InputError(f"--arch must be mgnet, unet or rnet, got {arch!r}")
    net_options = {}
    if dropout_at is not None:
        if dropout_at not in ("block", "encoder"):
            raise InputError(f"--dropout-at must be block or encoder, got {dropout_at!r}")
        net_options["dropout_at"] = dropout_at
    if dropout is not None:
        net_options["dropout"] = _five(dropout, "--dropout", float, lambda r: 0 <= r < 1, "rates in [0, 1)")
    if norm is not None:
        if norm not in ("instance", "group"):
            raise InputError(f"--norm must be instance or group, got {norm!r}")
        net_options["norm"] = norm
    if head_kernel is not None:
        if head_kernel not in (1, 3):
            raise InputError(f"--head-kernel must be 1 or 3, got {head_kernel}")
        net_options["head_kernel"] = head_kernel
    if up_activation is not None:
        net_options["up_activation"] = up_activation
    if channels is not None:
        net_options["channels"] = _five(channels, "--channels", int, lambda w: w > 0 and w % 4 == 0,
                                        "widths, multiples of 4")
    if net_options and arch != "mgnet":
        raise InputError("--dropout-at, --dropout, --norm, --head-kernel, --channels and --up-activation "
                         "apply to --arch mgnet only")
    tr = split_cases(dataset, train_split, splits)
    va = split_cases(dataset, val_split, splits)
    if arch == "rnet":
        from segrefine.refine.rnet import train_rnet

        summary = train_rnet(tr, va, out, epochs=epochs, iterations=iterations, batch_size=batch_size,
                             lr=lr, seed=seed, log=console.print)
        console.print(f"best val slice Dice {summary['best_val_slice_dice']:.4f} -> {out}")
        return
    cfg = TrainConfig(arch=arch, epochs=epochs, iterations_per_epoch=iterations, batch_size=batch_size,
                      lr=lr, seed=seed, multiclass=multiclass, threads=threads, net_options=net_options,
                      splits={"file": str(splits or Path(dataset) / "splits.json"),
                              "train": train_split, "val": val_split})
    with progress_bar() as bar:
        task = bar.add_task(f"train {arch}", total=epochs * iterations)

        def on_progress(step, total, record):
            bar.advance(task, step)
            if record:
                bar.console.print(f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  "
                                  f"val Dice {record['val_dice']:.4f}  {record['seconds']:.0f} s")

        summary = run_train(tr, va, out, cfg, progress=on_progress)
    console.print(f"best val Dice {summary['best_val_dice']:.4f} at epoch {summary['best_epoch']} -> {out}")


@app.command()
@friendly
def predict(
    input: Path = typer.Option(..., "-i", "--input", help="Image file or folder of images."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    method: str = typer.Option("mgnet", help="mgnet | unet | mcdropout | ensemble."),
    model: Optional[list[Path]] = typer.Option(None, "--model", help="Checkpoint(s); default: the shipped model."),
    samples: int = typer.Option(10, "--samples", help="MC dropout passes T (10 or 20)."),
    axis: int = typer.Option(2, help="Slice axis (0, 1 or 2)."),
    uncertainty: str = typer.Option("variance", help="variance | entropy (bits)."),
):
    """Segment with uncertainty: writes <case>.nii.gz, <case>_prob.nii.gz, <case>_uncertainty.nii.gz.

    Example: segrefine predict -i ../shared/data/fetal_stacks/images -o out --method mgnet
    """
    from segrefine.io import check_writable_dir, list_images
    from segrefine.predict import load_inputs, predict_files
    from segrefine.uncertainty import Predictor

    volumes = load_inputs(list_images(input))
    predictor = Predictor(method, models=model, passes=samples, axis=axis, uncertainty=uncertainty)
    check_writable_dir(output)
    with progress_bar() as bar:
        task = bar.add_task(f"predict ({method})", total=len(volumes))
        records = predict_files(volumes, output, predictor, on_case=lambda c, p: bar.advance(task))
    for r in records:
        console.print(f"{r['case']}: {r['seconds']:.2f} s, {r['foreground_voxels']} foreground voxels")
    console.print(f"wrote {len(records)} cases to {output}")


@app.command()
@friendly
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted <case>.nii.gz."),
    ref: Path = typer.Option(..., "--ref", help="Folder of reference labels."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write per-case and mean figures here."),
):
    """Dice, ASSD and HD95 (mm) of predictions against references.

    Example: segrefine evaluate --pred out --ref ../shared/data/hippocampus/labelsTr --json scores.json
    """
    from rich.table import Table

    from segrefine.evaluate import KEYS, evaluate_folders
    from segrefine.io import atomic_path

    result = evaluate_folders(pred, ref)
    table = Table("case", *KEYS)
    for c in result["cases"]:
        table.add_row(c["case"], *(f"{c[k]:.4f}" for k in KEYS))
    m = result["mean"]
    table.add_row("mean ± sd", *(f"{m[k]:.4f} ± {m[k + '_sd']:.4f}" for k in KEYS))
    Console().print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=1))


@app.command()
@friendly
def demo(
    input: Optional[Path] = typer.Option(None, "--input", help="Your own image file or folder."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Reference labels for --input (optional)."),
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output folder."),
    cases: int = typer.Option(4, help="Number of shared hippocampus test cases."),
):
    """Predict with the shipped MG-Net, print Dice where labels exist, write outputs and a PNG."""
    from segrefine.demo import run_demo

    run_demo(input=input, labels=labels, out=out, n_cases=cases, console=Console())


@app.command()
@friendly
def refine(
    input: Path = typer.Option(..., "-i", "--input", help="Image (3D)."),
    prob: Path = typer.Option(..., "--prob", help="Foreground probability map (any model)."),
    scribbles: Path = typer.Option(..., "--scribbles", help="Label volume: 1 foreground, 2 background, 0 none."),
    output: Path = typer.Option(..., "-o", "--output", help="Refined segmentation (.nii.gz)."),
    seg: Optional[Path] = typer.Option(None, "--seg", help="Initial segmentation (default: prob > 0.5)."),
    method: str = typer.Option("idrlse", help="idrlse | graphcut | rnet | paint (strokes only)."),
    axis: int = typer.Option(2, help="Slice axis."),
    preset: Optional[str] = typer.Option(None, help="Refinement parameters (default: the val-chosen "
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
    model: Optional[Path] = typer.Option(None, "--model", help="Dropout U-Net checkpoint (default: shipped)."),
    tau: float = typer.Option(0.8, help="Entropy threshold τ (bits) of the uncertain voxels."),
    samples: int = typer.Option(20, "--samples", help="MC dropout passes T."),
    prob: Optional[Path] = typer.Option(None, "--prob", help="Another model's probability map (single image)."),
    uncertainty: Optional[Path] = typer.Option(None, "--uncertainty", help="Its entropy map in bits (with --prob)."),
    samples_file: Optional[Path] = typer.Option(None, "--samples-file", help="4D NIfTI of MC samples (single image)."),
    margin: int = typer.Option(0, help="Voxels added around the box of the prediction's largest component "
                                       "(0 was best on the hippocampus val split)."),
    nodes: str = typer.Option("roi", help="Graph nodes: roi (every ROI voxel) | reduced (the authors' set) | band."),
    max_nodes: int = typer.Option(2_000_000, help="Most nodes per graph; larger ROIs use the band, then slabs."),
    graph: str = typer.Option("ours", help="Graph scheme: ours | authors (the authors' code's weights, "
                                           "features, training subset and relabelling)."),
    relabel: Optional[str] = typer.Option(None, help="Nodes the GCN relabels: uncertain | all "
                                                     "(default: the scheme's, ours: uncertain, authors: all)."),
    crf: bool = typer.Option(False, "--crf", help="Then run the dense CRF (its defaults) on the GCN's "
                                                  "probability (relabelled voxels) and E (elsewhere)."),
):
    """Automatic refinement: a GCN trained on the confident voxels relabels the uncertain ones.

    Writes <case>.nii.gz (refined labels) and <case>_entropy.nii.gz.
    Example: segrefine refine-gcn -i case.nii.gz -o out --tau 0.8 --samples 20
    """
    import warnings

    import numpy as np

    from segrefine import io
    from segrefine.refine.gcn import NODE_SETS, RELABEL, SCHEMES, mc_statistics, refine_gcn
    from segrefine.uncertainty import Predictor, binary_entropy

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
    files = io.list_images(input)
    external = prob is not None or samples_file is not None
    if external and len(files) != 1:
        raise InputError("--prob / --samples-file go with a single image, not a folder")
    if uncertainty is not None and prob is None:
        raise InputError("--uncertainty needs --prob")
    volumes = [(f, io.load(f)) for f in files]
    out_dir = io.check_writable_dir(output)
    predictor = None if external else Predictor("mcdropout", models=[model] if model else None, passes=samples)
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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            refined, info = refine_gcn(vol.array, tau=tau, spacing=vol.spacing, margin=margin, nodes=nodes,
                                       max_nodes=max_nodes, graph=graph, relabel=relabel, return_prob=crf,
                                       **kw)
            if crf:
                from segrefine.refine.crf import dense_crf

                before = refined
                refined = dense_crf(vol.array, info["prob"], spacing=vol.spacing)
                info["n_changed_crf"] = int((refined != before).sum())
        for w in caught:
            console.print(f"[yellow]warning:[/yellow] {path}: {w.message}")
        if "samples" in kw:
            entropy = mc_statistics(kw["samples"])[1]
        else:
            entropy = kw.get("entropy", binary_entropy(kw["prob"]))
        case = io.case_name(path)
        io.save(vol.with_array(refined.astype(np.uint8)), out_dir / f"{case}.nii.gz", dtype=np.uint8)
        io.save(vol.with_array(np.asarray(entropy, np.float32)), out_dir / f"{case}_entropy.nii.gz",
                dtype=np.float32)
        crf_note = f", then {info['n_changed_crf']} by the CRF" if crf else ""
        console.print(f"{case}: {info.get('n_nodes', 0)} nodes, {info.get('n_uncertain', 0)} uncertain, "
                      f"{info.get('n_changed', 0)} voxels changed{crf_note}, {info.get('seconds_total', 0):.2f} s")


@app.command()
@friendly
def suggest(
    input: Path = typer.Option(..., "-i", "--input", help="Image (3D)."),
    json_out: Path = typer.Option(..., "--json", help="Ranked slices (JSON)."),
    prob: Optional[Path] = typer.Option(None, "--prob", help="Foreground probability map of any model."),
    uncertainty: Optional[Path] = typer.Option(None, "--uncertainty", help="Voxel uncertainty map."),
    seg: Optional[Path] = typer.Option(None, "--seg", help="Segmentation (default: prob > 0.5)."),
    axis: int = typer.Option(2, help="Slice axis."),
    budget: float = typer.Option(0.6, help="Fraction of slices to suggest (M'/M)."),
    order: str = typer.Option("gain", help="gain (expected wrong voxels Σ min(p, 1-p), the default) | "
                                           "nu (the paper's ν = ΣU / (ΣY + ζ)) | nu-naive (ν* = ΣU)."),
    naive: bool = typer.Option(False, help="Deprecated: the same as --order nu-naive."),
):
    """Rank slices by uncertainty: the slices a person should check first.

    Without --prob/--uncertainty the shipped MG-Net is run on the image.
    Example: segrefine suggest -i case.nii.gz --json suggestions.json
    """
    import numpy as np

    from segrefine import io
    from segrefine.bench.common import write_json
    from segrefine.guidance import ORDERS
    from segrefine.guidance import suggest as rank

    if order not in ORDERS:
        raise InputError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    if Path(json_out).is_dir():
        raise InputError(f"--json {json_out}: is a folder; give the JSON file's name")
    io.check_writable_dir(Path(json_out).parent)  # before the model runs
    vol = io.load(input)
    if (prob is None) != (uncertainty is None):
        raise InputError("--prob and --uncertainty go together (or neither, to run MG-Net)")
    if prob is None:
        from segrefine.uncertainty import Predictor

        pred = Predictor("mgnet", axis=axis)(vol.array)
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
    key = {"gain": "expected_errors", "nu": "nu", "nu-naive": "nu_naive"}[out["order"]]
    top = ", ".join(f"{s['index']} ({key}={s[key]:.3g})" for s in out["slices"][:5])
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
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write each case's final mask here."),
    split: Optional[str] = typer.Option(None, help="Only the cases of this split (split file beside IMAGES)."),
    splits: Optional[Path] = typer.Option(None, help="Split file."),
    budget: float = typer.Option(0.6, help="M'/M for the ugir strategies."),
    max_cases: Optional[int] = typer.Option(None, help="Only the first N cases."),
    preset: str = typer.Option("default", help="Refinement parameters: default (chosen on val) | paper | "
                                                "hippocampus."),
    order: str = typer.Option("gain", help="Slice order of ugir and ugir-paint: gain | nu | nu-naive."),
    patience: Optional[int] = typer.Option(None, help="Guided strategies: stop after this many consecutive "
                                                      "slices that needed nothing (the paper: 3)."),
    stop_remaining: Optional[float] = typer.Option(None, help="Guided strategies: stop when the slices not yet "
                                                              "shown hold less than this fraction of the "
                                                              "expected wrong voxels. Neither stop given: the "
                                                              "order's own (gain: 0.1; nu, nu-naive: patience 3)."),
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
    if order not in ORDERS:
        raise InputError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    cases = cases_for(images, labels, split, splits)[:max_cases]
    if output is not None:
        check_writable_dir(output)
    with progress_bar() as bar:
        task = bar.add_task(f"simulate {strategy}", total=len(cases))
        data = simulate_cases(cases, strategy, out_dir=output, budget=budget, preset=preset, order=order,
                              patience=patience, stop_remaining=stop_remaining,
                              on_case=lambda c, r: bar.advance(task))
    write_json(json_out, data)
    m = data["mean"]
    console.print(f"{strategy}: Dice {m['dice_before']:.4f} -> {m['dice_after']:.4f}, "
                  f"{m['slices_inspected']:.1f} slices inspected, {m['scribbles']:.1f} scribbles, "
                  f"{m['user_seconds']:.1f} s user, {m['machine_seconds']:.2f} s machine")


@bench_app.command("refine")
@friendly
def bench_refine(
    images: Path = typer.Option(..., "--images"),
    labels: Path = typer.Option(..., "--labels"),
    json_out: Path = typer.Option(..., "--json"),
    split: Optional[str] = typer.Option("test", help="Split of the reported figures ('' = all)."),
    splits: Optional[Path] = typer.Option(None),
    methods: str = typer.Option("paint,idrlse,graphcut,rnet",
                                help="Methods (paint = strokes only, the baseline); NAME@PRESET runs NAME "
                                     "with another preset."),
    max_slices: int = typer.Option(100),
    max_cases: Optional[int] = typer.Option(None),
    preset: Optional[str] = typer.Option(None, help="Refinement parameters (default: the val-chosen "
                                                    "segrefine.refine.slice.DEFAULT_PRESET)."),
):
    """Fig. 4: painting, I-DRLSE, Graph Cut and R-Net on the same mis-segmented slices and scribbles."""
    from segrefine.bench.refine import run
    from segrefine.paths import shared_data_dir
    from segrefine.refine.slice import DEFAULT_PRESET, PRESETS, REFINE_METHODS

    preset = DEFAULT_PRESET if preset is None else preset
    names = [m.strip() for m in methods.split(",") if m.strip()]
    for name in [preset] + [n.partition("@")[2] for n in names if "@" in n]:
        if name not in PRESETS:
            raise InputError(f"--preset / --methods: preset must be one of {', '.join(PRESETS)}, got {name!r}")
    for name in names:
        if name.partition("@")[0] not in REFINE_METHODS:
            raise InputError(f"--methods: each method must be one of {', '.join(REFINE_METHODS)}, "
                             f"got {name.partition('@')[0]!r}")
    shared = shared_data_dir()
    fetal = shared / "fetal_stacks" / "images" / "a26_12.nii.gz" if shared else None
    levelset = shared / "levelset_2d" if shared else None
    run(images, labels, json_out, split=split or None, splits_file=splits, max_slices=max_slices,
        max_cases=max_cases, methods=names, fetal=fetal, levelset_dir=levelset, preset=preset,
        log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text())


@bench_app.command("gcn")
@friendly
def bench_gcn(
    images: Path = typer.Option(..., "--images"),
    labels: Path = typer.Option(..., "--labels"),
    json_out: Path = typer.Option(..., "--json"),
    split: Optional[str] = typer.Option("test", help="Split of the reported figures ('' = all)."),
    splits: Optional[Path] = typer.Option(None),
    samples: int = typer.Option(20, help="MC dropout passes T."),
    tau: float = typer.Option(0.8),
    max_cases: Optional[int] = typer.Option(None),
    sweep_cases: int = typer.Option(8, help="Cases of the τ sweep (low-data regime; 0 = skip)."),
    cache: Path = typer.Option(Path("bench_out/gcn"),
                               help="Where the train_small U-Net and each case's U-Net maps are cached."),
    regimes: str = typer.Option("full,small"),
    tune_split: str = typer.Option("val", help="Split that picks the CRF parameters ('' = defaults)."),
    memory_shape: str = typer.Option("512x512x300", help="Volume of the peak-memory probe ('' = skip)."),
):
    """GCN refinement (both graph schemes, and followed by the dense CRF) vs CNN, E > 0.5 and dense CRF,
    full and low-data regimes; GCN settings compared on val; τ sweep; speed."""
    from segrefine.bench.gcn import run

    try:
        shape = tuple(int(v) for v in memory_shape.lower().split("x")) if memory_shape else None
    except ValueError:
        shape = ()
    if shape is not None and (len(shape) != 3 or min(shape) < 8):
        raise InputError(f"--memory-shape must look like 512x512x300 (3 sizes >= 8), got {memory_shape!r}")
    run(images, labels, json_out, split=split or None, splits_file=splits, samples=samples, tau=tau,
        max_cases=max_cases, sweep_cases=sweep_cases, cache=cache,
        regimes=[r.strip() for r in regimes.split(",") if r.strip()], tune_split=tune_split or None,
        memory_shape=shape, log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text())


@bench_app.command("stack")
@friendly
def bench_stack(
    images: Path = typer.Option(..., "--images"),
    labels: Path = typer.Option(..., "--labels"),
    json_out: Path = typer.Option(..., "--json"),
    split: Optional[str] = typer.Option("test", help="Split of the reported figures ('' = all)."),
    splits: Optional[Path] = typer.Option(None),
    strategies: str = typer.Option("ugir,ugir-nu,ugir-naive,ugir-paint,ugir-oracle,ugir-random,sequential,"
                                   "graphcut,deepigeos"),
    budget: float = typer.Option(0.6),
    max_cases: Optional[int] = typer.Option(None),
    fetal: Optional[Path] = typer.Option(None, help="Fetal stacks folder (default: shared fetal_stacks)."),
    preset: str = typer.Option("default", help="Refinement parameters: default (chosen on val) | paper | "
                                                "hippocampus."),
    tune_split: Optional[str] = typer.Option(None, help="Also sweep the budget M' on this split (e.g. val)."),
    patience: str = typer.Option("", help="Extra UGIR ν rows with these early-stop patiences, e.g. '5' "
                                          "(UGIR: 3); with --tune-split also the budget sweep."),
    stops: str = typer.Option("0.05,0.1,0.2,0.3", help="Expected-remaining-gain stops swept on --tune-split."),
):
    """Table 2: every strategy on the same cases; Dice vs user time plot; fetal-stack suggestions."""
    from segrefine.bench.stack import run
    from segrefine.paths import shared_data_dir

    if fetal is None and shared_data_dir() is not None:
        fetal = shared_data_dir() / "fetal_stacks"
    run(images, labels, json_out, split=split or None, splits_file=splits,
        strategies=[s.strip() for s in strategies.split(",") if s.strip()], budget=budget,
        max_cases=max_cases, fetal_dir=fetal, preset=preset, tune_split=tune_split,
        patiences=[int(v) for v in patience.split(",") if v.strip()],
        stops=[float(v) for v in stops.split(",") if v.strip()], log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text())


@bench_app.command("uncertainty")
@friendly
def bench_uncertainty(
    images: Path = typer.Option(..., "--images", help="Image folder (Decathlon layout)."),
    labels: Path = typer.Option(..., "--labels", help="Label folder."),
    json_out: Path = typer.Option(..., "--json", help="Output JSON (a .md table and .png figure beside it)."),
    split: Optional[str] = typer.Option("test", help="Split of the reported figures ('' = every case but --val-split's)."),
    val_split: str = typer.Option("val", help="Split used to choose the UEO threshold."),
    splits: Optional[Path] = typer.Option(None, help="Split file; default IMAGES/../splits.json."),
    samples: int = typer.Option(10, help="MC dropout passes T."),
    ensemble: Optional[list[Path]] = typer.Option(None, "--ensemble-model", help="Ensemble members (default: shipped U-Net + 4 trained and cached)."),
    cache: Path = typer.Option(Path("bench_out/ensemble"), help="Where trained ensemble members are cached."),
    fetal: Optional[Path] = typer.Option(None, help="Fetal stack for the speed column (default: the shared a26_12)."),
    max_cases: Optional[int] = typer.Option(None, help="Use only the first N cases of each split (quick runs)."),
    methods: str = typer.Option("unet,mcdropout,ensemble,mgnet", help="Rows to run (mcdropout and mgnet always)."),
):
    """Table 1: U-Net, MC dropout, ensemble and MG-Net (parameters, time, Dice, ASSD, UEO, RVE, AUROC).

    Example: segrefine bench uncertainty --images ../shared/data/hippocampus/imagesTr
             --labels ../shared/data/hippocampus/labelsTr --json bench_out/uncertainty.json
    """
    from segrefine.bench.uncertainty import run
    from segrefine.paths import shared_data_dir

    if fetal is None and shared_data_dir() is not None:
        fetal = shared_data_dir() / "fetal_stacks" / "images" / "a26_12.nii.gz"
    data = run(images, labels, json_out, split=split or None, val_split=val_split, splits_file=splits,
               samples=samples, ensemble_models=ensemble or None, cache=cache, fetal=fetal,
               max_cases=max_cases, methods=[m.strip() for m in methods.split(",") if m.strip()],
               log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text())
    console.print(f"MC dropout / MG-Net time: {data['ratios']}")


@app.command()
@friendly
def serve(
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder whose images the app may open (default: the shared data)."),
    workspace: Path = typer.Option(Path("workspace"), "--workspace", help="Where sessions are persisted."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port."),
):
    """Start the web app (FastAPI + NiiVue viewer) and print the address to open.

    Example: segrefine serve --data-root ../shared/data --port 8000
    """
    from segrefine.io import check_writable_dir
    from segrefine.paths import shared_data_dir
    from segrefine.server.app import serve as run_server

    if data_root is None:
        data_root = shared_data_dir()
    if data_root is not None and not Path(data_root).is_dir():
        raise InputError(f"--data-root {data_root}: not a folder")
    check_writable_dir(workspace)
    console.print(f"segrefine web app: open http://{host}:{port}/  (data root: {data_root}, "
                  f"sessions in {workspace}; Ctrl+C to stop)")
    run_server(data_root=Path(data_root) if data_root else None, workspace=workspace, host=host, port=port)


def main():  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
