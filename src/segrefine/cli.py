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


@app.command()
@friendly
def train(
    dataset: Path = typer.Option(..., "--dataset", help="Decathlon-layout folder (imagesTr, labelsTr)."),
    arch: str = typer.Option("mgnet", help="mgnet or unet."),
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
):
    """Train a U-Net or MG-Net on CPU.

    Example: segrefine train --dataset ../shared/data/hippocampus --arch mgnet --out mgnet.pt
    """
    from segrefine.datasets import split_cases
    from segrefine.nets.train import TrainConfig, train as run_train

    if arch not in ("mgnet", "unet"):
        raise InputError(f"--arch must be mgnet or unet, got {arch!r}")
    tr = split_cases(dataset, train_split, splits)
    va = split_cases(dataset, val_split, splits)
    cfg = TrainConfig(arch=arch, epochs=epochs, iterations_per_epoch=iterations, batch_size=batch_size,
                      lr=lr, seed=seed, multiclass=multiclass, threads=threads,
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


def main():  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
