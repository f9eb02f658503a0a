"""``segrefine bench ...``: benchmarks that write JSON and a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from segrefine.cli import bench_app, console, friendly
from segrefine.errors import InputError


@bench_app.command("cohort")
@friendly
def bench_cohort(
    json_out: Path = typer.Option(Path("docs/results/cohort.json"), "--json"),
    dataset: Path | None = typer.Option(None, help="Decathlon dataset (default: the shared hippocampus)."),
    split: str = typer.Option("test", help="Its split that forms the first cohort."),
    fetal: Path | None = typer.Option(None, help="The stack copied --copies times (default: the shared a26_12)."),
    copies: int = typer.Option(16, help="Copies of the fetal stack (made in a temporary folder)."),
    kill: bool = typer.Option(True, "--kill/--no-kill", help="Also the run where one of 2 workers is killed."),
):
    """Cohort throughput with 1 and 2 local Dask workers against today's single process; the kill -9 run."""
    from segrefine.bench.cohort import run
    from segrefine.paths import shared_data_dir

    shared = shared_data_dir()
    dataset = dataset or (shared / "hippocampus" if shared else None)
    fetal = fetal or (shared / "fetal_stacks" / "images" / "a26_12.nii.gz" if shared else None)
    if dataset is None or fetal is None:
        raise InputError("--dataset and --fetal are needed where ../shared/data is absent")
    if not Path(fetal).is_file():
        raise InputError(f"--fetal {fetal}: no such file")
    if copies < 2:
        raise InputError(f"--copies must be at least 2, got {copies}")
    run(dataset, fetal, json_out, split=split, copies=copies, kill=kill, log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text(encoding="utf-8"))


@bench_app.command("refine")
@friendly
def bench_refine(
    images: Path = typer.Option(..., "--images"),
    labels: Path = typer.Option(..., "--labels"),
    json_out: Path = typer.Option(..., "--json"),
    split: str | None = typer.Option("test", help="Split of the reported figures ('' = all)."),
    splits: Path | None = typer.Option(None),
    methods: str = typer.Option("paint,idrlse,graphcut,rnet",
                                help="Methods (paint = strokes only, the baseline); NAME@PRESET runs NAME "
                                     "with another preset."),
    max_slices: int = typer.Option(100),
    max_cases: int | None = typer.Option(None),
    preset: str | None = typer.Option(None, help="Refinement parameters (default: the val-chosen "
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
    split: str | None = typer.Option("test", help="Split of the reported figures ('' = all)."),
    splits: Path | None = typer.Option(None),
    passes: int = typer.Option(20, "--passes", "--samples", help="MC dropout passes T (--samples is the old name)."),
    tau: float = typer.Option(0.8),
    max_cases: int | None = typer.Option(None),
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
    run(images, labels, json_out, split=split or None, splits_file=splits, passes=passes, tau=tau,
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
    split: str | None = typer.Option("test", help="Split of the reported figures ('' = all)."),
    splits: Path | None = typer.Option(None),
    strategies: str = typer.Option("ugir,ugir-nu,ugir-naive,ugir-paint,ugir-oracle,ugir-random,sequential,"
                                   "graphcut,deepigeos"),
    budget: float = typer.Option(0.6),
    max_cases: int | None = typer.Option(None),
    fetal: Path | None = typer.Option(None, help="Fetal stacks folder (default: shared fetal_stacks)."),
    preset: str = typer.Option("default", help="Refinement parameters: default (chosen on val) | paper | "
                                                "hippocampus."),
    tune_split: str | None = typer.Option(None, help="Also sweep the budget M' on this split (e.g. val)."),
    patience: str = typer.Option("", help="Extra UGIR ν rows with these early-stop patiences, e.g. '5' "
                                          "(UGIR: 3); with --tune-split also the budget sweep."),
    stops: str = typer.Option("0.01,0.015,0.02,0.0225,0.025,0.03",
                              help="Expected-remaining-Dice stops (fractions of Dice) swept on --tune-split."),
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
    split: str | None = typer.Option("test", help="Split of the reported figures ('' = every case but --val-split's)."),
    val_split: str = typer.Option("val", help="Split used to choose the UEO threshold."),
    splits: Path | None = typer.Option(None, help="Split file; default IMAGES/../splits.json."),
    passes: int = typer.Option(10, "--passes", "--samples", help="MC dropout passes T (--samples is the old name)."),
    ensemble: list[Path] | None = typer.Option(None, "--ensemble-model", help="Ensemble members (default: shipped U-Net + 4 trained and cached)."),
    cache: Path = typer.Option(Path("bench_out/ensemble"), help="Where trained ensemble members are cached."),
    fetal: Path | None = typer.Option(None, help="Fetal stack for the speed column (default: the shared a26_12)."),
    max_cases: int | None = typer.Option(None, help="Use only the first N cases of each split (quick runs)."),
    methods: str = typer.Option("unet,mcdropout,ensemble,mgnet,mgnet_fp32",
                                help="Rows to run (mcdropout and mgnet always; mgnet_fp32: MG-Net in fp32, "
                                     "where its default is int8)."),
):
    """Table 1: U-Net, MC dropout, ensemble and MG-Net (int8 and fp32) (parameters, time, Dice, ASSD, UEO, RVE, AUROC).

    Example: segrefine bench uncertainty --images ../shared/data/hippocampus/imagesTr
             --labels ../shared/data/hippocampus/labelsTr --json bench_out/uncertainty.json
    """
    from segrefine.bench.uncertainty import run
    from segrefine.paths import shared_data_dir

    if fetal is None and shared_data_dir() is not None:
        fetal = shared_data_dir() / "fetal_stacks" / "images" / "a26_12.nii.gz"
    data = run(images, labels, json_out, split=split or None, val_split=val_split, splits_file=splits,
               passes=passes, ensemble_models=ensemble or None, cache=cache, fetal=fetal,
               max_cases=max_cases, methods=[m.strip() for m in methods.split(",") if m.strip()],
               log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text())
    console.print(f"MC dropout / MG-Net time: {data['ratios']}")


@bench_app.command("graph")
@friendly
def bench_graph(
    json_out: Path = typer.Option(Path("docs/results/graph.json"), "--json"),
    fetal: Path | None = typer.Option(None, help="Fetal stack (default: the shared a26_12)."),
    dataset: Path | None = typer.Option(None, help="Decathlon dataset (default: the shared hippocampus)."),
    volumes: int = typer.Option(10, help="Hippocampus volumes timed (the first of the test split)."),
    repeats: int = typer.Option(5, help="Rounds over the variants."),
    methods: str = typer.Option("mgnet,unet", help="Networks timed (mgnet, unet)."),
):
    """ONNX Runtime speed of the inference-graph rewrites and slices per run against the earlier default."""
    from segrefine.bench.graph import run
    from segrefine.datasets import split_cases
    from segrefine.paths import shared_data_dir

    shared = shared_data_dir()
    fetal = fetal or (shared / "fetal_stacks" / "images" / "a26_12.nii.gz" if shared else None)
    dataset = dataset or (shared / "hippocampus" if shared else None)
    if fetal is None or dataset is None:
        raise InputError("--fetal and --dataset are needed where ../shared/data is absent")
    if not Path(fetal).is_file():
        raise InputError(f"--fetal {fetal}: no such file")
    if repeats < 1 or volumes < 1:  # the hippocampus ratio divides by the volumes' time
        raise InputError(f"--repeats and --volumes must be at least 1, got {repeats}, {volumes}")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names or any(m not in ("mgnet", "unet") for m in names):
        raise InputError(f"--methods must list mgnet and/or unet, got {methods!r}")
    cases = split_cases(dataset, "test")[:volumes]
    run(Path(fetal), [c.image for c in cases], json_out, methods=tuple(names), repeats=repeats,
        log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text(encoding="utf-8"))




@bench_app.command("persistence")
@friendly
def bench_persistence(
    json_out: Path = typer.Option(Path("docs/results/persistence.json"), "--json",
                                  help="Output JSON (a .md table beside it)."),
    shape: str = typer.Option("512x512x300", help="Volume size (CT-like by default)."),
    pen_ups: int = typer.Option(20, help="Pen-ups (stroke + refinement) measured."),
    workdir: Path | None = typer.Option(None, help="Where the two sessions are written (a temporary "
                                                   "folder inside; default: the system's temp folder)."),
):
    """Bytes and time a session writes per pen-up: the journal of bbox patches (now) against
    the full rewrite of mask and scribbles (the first format, measured in the same run)."""
    from segrefine.bench.persistence import run

    try:
        size = tuple(int(v) for v in shape.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 32:
        raise InputError(f"--shape must look like 512x512x300 (3 sizes >= 32), got {shape!r}")
    if pen_ups < 1:
        raise InputError(f"--pen-ups must be at least 1, got {pen_ups}")
    run(json_out, shape=size, pen_ups=pen_ups, workdir=workdir, log=console.print)
    Console().print(Path(json_out).with_suffix(".md").read_text(encoding="utf-8"))
