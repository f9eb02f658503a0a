"""Commands around the network: train, predict, evaluate, demo, serve."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from segrefine.cli import _five, app, console, friendly, progress_bar
from segrefine.cli.cohort import (OVERWRITE_HELP, SCHEDULER_HELP, SPLIT_HELP, WORKERS_HELP, cohort_mode,
                                  run_cohort_cli)
from segrefine.errors import InputError


@app.command()
@friendly
def train(
    dataset: Path = typer.Option(..., "--dataset", help="Decathlon-layout folder (imagesTr, labelsTr)."),
    arch: str = typer.Option("mgnet", help="mgnet, unet, or rnet (the refinement network, trained on the shipped MG-Net's errors)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (best validation Dice)."),
    splits: Path | None = typer.Option(None, help="Split file; default DATASET/splits.json."),
    train_split: str = typer.Option("train", help="Split used for training."),
    val_split: str = typer.Option("val", help="Split used for validation."),
    epochs: int = typer.Option(12),
    iterations: int = typer.Option(150, help="Iterations per epoch."),
    batch_size: int = typer.Option(24),
    lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    multiclass: bool = typer.Option(False, help="Keep label values as classes (default: foreground = label > 0)."),
    threads: int = typer.Option(0, help="Torch threads (0 = torch default)."),
    dropout_at: str | None = typer.Option(None, help="MG-Net ablation: 'block' puts dropout inside every "
                                                        "block (the first shipped layout) instead of after "
                                                        "the encoder blocks (published)."),
    dropout: str | None = typer.Option(None, help="MG-Net ablation: dropout rate per level, e.g. "
                                                     "'0.1,0.2,0.3,0.3,0.3' (published: 0.1,...,0.5)."),
    norm: str | None = typer.Option(None, help="MG-Net: 'group' for the published group normalisation "
                                                  "(default: instance, the shipped network; docs/models.md)."),
    head_kernel: int | None = typer.Option(None, help="MG-Net ablation: output kernel 1 (published: 3)."),
    channels: str | None = typer.Option(None, help="MG-Net ablation: channels per level, e.g. "
                                                      "'64,128,256,512,256' (published: 64,128,256,512,512)."),
    up_activation: bool | None = typer.Option(None, "--up-activation/--no-up-activation",
                                                 help="MG-Net ablation: leaky ReLU after the transposed "
                                                      "convolutions (published: on)."),
    preset: str = typer.Option("default", help="Refinement preset recorded in the model card "
                                                  "(default, paper or hippocampus)."),
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
    from segrefine.refine.slice import PRESETS

    if preset not in PRESETS:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    tr = split_cases(dataset, train_split, splits)
    va = split_cases(dataset, val_split, splits)
    card = _train_card(dataset, tr, arch=arch, preset=preset, multiclass=multiclass, val_split=val_split)
    if arch == "rnet":
        from segrefine.refine.rnet import train_rnet

        summary = train_rnet(tr, va, out, epochs=epochs, iterations=iterations, batch_size=batch_size,
                             lr=lr, seed=seed, log=console.print, card=card)
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

        summary = run_train(tr, va, out, cfg, progress=on_progress, card=card)
    console.print(f"best val Dice {summary['best_val_dice']:.4f} at epoch {summary['best_epoch']} -> {out}")


def _train_card(dataset: Path, cases, *, arch: str, preset: str, multiclass: bool, val_split: str) -> dict:
    """The model card of a training run: dataset.json, the training cases' profile, this command."""
    import shlex
    import sys

    from segrefine.nets.card import build_card

    metric = ("slice Dice of the refined error slices" if arch == "rnet"
              else "whole-volume Dice (mean of the heads > 0.5)")
    return build_card(dataset, cases, axis=2, arch=arch, preset=preset, multiclass=multiclass,
                      command=shlex.join(["segrefine", *sys.argv[1:]]), val_split=val_split,
                      val_metric=metric)


@app.command()
@friendly
def predict(
    input: Path = typer.Option(..., "-i", "--input", help="Image file or folder of images."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    method: str = typer.Option("mgnet", help="mgnet | unet | mcdropout | ensemble."),
    model: list[Path] | None = typer.Option(None, "--model", help="Checkpoint(s) or a shipped model's name "
                                                                 "(segrefine models); default: the shipped model."),
    passes: int = typer.Option(10, "--passes", "--samples", help="MC dropout passes T (10 or 20; --samples is the old name)."),
    axis: int = typer.Option(2, help="Slice axis (0, 1 or 2)."),
    uncertainty: str = typer.Option("variance", help="variance | entropy (bits)."),
    format: str = typer.Option("nifti", "--format", help="nifti | dicom-seg (input: a DICOM series folder)."),
    precision: str = typer.Option("auto", "--precision", help="auto | fp32 | int8: auto runs a calibrated "
                                                               "model's deeper convolutions in int8 on a CPU "
                                                               "with VNNI, fp32 otherwise (docs/models.md)."),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    split: str | None = typer.Option(None, "--split", help=SPLIT_HELP),
):
    """Segment with uncertainty: writes <case>.nii.gz, <case>_prob.nii.gz, <case>_uncertainty.nii.gz,
    or with --format dicom-seg a DICOM SEG <case>_seg.dcm referencing the input series.

    With --workers or --scheduler, -i may also be a list file (.txt) or a Decathlon dataset (docs/cohort.md).
    Example: segrefine predict -i ../shared/data/fetal_stacks/images -o out --method mgnet
    """
    from segrefine.uncertainty import check_precision

    check_precision(precision)  # here too: cohort mode builds its predictors in the workers
    if cohort_mode(workers, scheduler, overwrite=overwrite, split=split):
        from segrefine.nets.checkpoint import model_path

        if format != "nifti":
            raise InputError("--format dicom-seg writes one series; it does not go with --workers / --scheduler")
        options = {"method": method, "models": [str(model_path(m)) for m in model or []], "passes": passes,
                   "axis": axis, "uncertainty": uncertainty, "precision": precision}
        run_cohort_cli("predict", input, output, options, workers=workers, scheduler=scheduler,
                       overwrite=overwrite, split=split)
        return
    from segrefine.dicomseg import is_dicom_series
    from segrefine.io import check_writable_dir, list_images
    from segrefine.predict import load_inputs, predict_files
    from segrefine.uncertainty import OnnxOptions, Predictor

    if format not in ("nifti", "dicom-seg"):
        raise InputError(f"--format must be nifti or dicom-seg, got {format!r}")
    if format == "dicom-seg" and not is_dicom_series(input):
        raise InputError(f"{input}: --format dicom-seg needs a DICOM series folder as --input")
    volumes = load_inputs([input] if is_dicom_series(input) else list_images(input))
    from segrefine.cli.cards import warn_if_unlike
    from segrefine.nets.checkpoint import model_path

    predictor = Predictor(method, models=[model_path(m) for m in model] if model else None, passes=passes,
                          axis=axis, uncertainty=uncertainty, onnx=OnnxOptions(precision=precision))
    warn_if_unlike(predictor, volumes, axis)
    check_writable_dir(output)
    if format == "dicom-seg":
        from segrefine.dicomseg import model_labels, write_seg

        (path, volume), = volumes
        pred = predictor(volume.array)
        seg = write_seg(pred.label, path, output / f"{path.name}_seg.dcm", label_names=model_labels(
            model[0] if model else None), algorithm=f"segrefine {method}")
        console.print(f"{path.name}: {pred.seconds:.2f} s, {int((pred.label > 0).sum())} foreground "
                      f"voxels -> {seg}")
        return
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
    json_out: Path | None = typer.Option(None, "--json", help="Write per-case and mean figures here."),
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
def calibrate(
    model: str = typer.Option(..., "--model", help="Checkpoint or shipped model name (e.g. mgnet)."),
    dataset: Path = typer.Option(..., "--dataset", help="Decathlon-layout folder (imagesTr) with its splits.json."),
    split: str = typer.Option("train", help="Split whose images calibrate (never the reported one)."),
    cases: int = typer.Option(12, help="How many of the split's cases (its first ones)."),
    out: Path | None = typer.Option(None, "--out", help="Checkpoint to write (default: MODEL itself, in place)."),
):
    """Store int8 activation ranges in a checkpoint: with them, ONNX Runtime runs the deeper
    convolutions in int8 on CPUs with VNNI (docs/models.md).

    Example: segrefine calibrate --model mgnet.pt --dataset ../shared/data/hippocampus
    """
    from segrefine import io
    from segrefine.datasets import split_cases
    from segrefine.nets.checkpoint import load_network, model_path, write_calibration
    from segrefine.nets.quantize import calibrate as run_calibration

    if cases < 1:
        raise InputError(f"--cases must be at least 1, got {cases}")
    source = model_path(model)
    net = load_network(source)
    chosen = split_cases(dataset, split)[:cases]
    calibration = run_calibration(net, [io.load(c.image).array for c in chosen],
                                  source=f"{dataset.name} {split} split, first {len(chosen)} cases")
    target = write_calibration(source, calibration, out)
    console.print(f"{target}: int8 ranges for {len(calibration['nodes'])} convolutions "
                  f"from {len(chosen)} {split} cases")


@app.command()
@friendly
def demo(
    input: Path | None = typer.Option(None, "--input", help="Your own image file or folder."),
    labels: Path | None = typer.Option(None, "--labels", help="Reference labels for --input (optional)."),
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output folder."),
    cases: int = typer.Option(4, help="Number of shared hippocampus test cases."),
    model: str | None = typer.Option(None, "--model", help="Checkpoint or shipped model name (default: "
                                                           "mgnet with the shared data or --input, "
                                                           "phantom without)."),
):
    """Predict with a shipped MG-Net, print Dice where labels exist, write outputs and a PNG."""
    from segrefine.demo import run_demo

    run_demo(input=input, labels=labels, out=out, n_cases=cases, console=Console(), model=model)




@app.command()
@friendly
def serve(
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder whose images the app may open (default: the shared data)."),
    workspace: Path = typer.Option(Path("workspace"), "--workspace", help="Where sessions are persisted."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port."),
    model: str | None = typer.Option(None, "--model", help="MG-Net checkpoint that 'Run MG-Net' uses: a "
                                                           "path or a shipped model's name (segrefine "
                                                           "models), e.g. phantom; default: mgnet."),
    cohort: Path | None = typer.Option(None, "--cohort", help="A cohort output folder (predict | refine-gcn "
                                                              "| suggest): GET /api/cohort lists its cases "
                                                              "by expected gain from review."),
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
    if cohort is not None:
        from segrefine.cohort.queue import review_queue

        n = len(review_queue(cohort)["cases"])  # refuses a folder with nothing to rank, before starting
        console.print(f"cohort {cohort}: {n} cases in review order at /api/cohort")
    console.print(f"segrefine web app: open http://{host}:{port}/  (model: {model or 'mgnet'}, "
                  f"data root: {data_root}, sessions in {workspace}; Ctrl+C to stop)")
    run_server(data_root=Path(data_root) if data_root else None, workspace=workspace, host=host, port=port,
               model=model, cohort=cohort)

