"""The ``segrefine`` command line: thin commands that parse, call and print.

This module holds the app and the helpers every command uses; the commands
live in ``model`` (train, predict, evaluate, demo, serve), ``review`` (refine,
refine-gcn, suggest, simulate), ``cards`` (models, card, phantom-dataset) and
``bench`` (the benchmarks), imported at the
end so that they register on ``app``.
"""

from __future__ import annotations

import logging
from functools import wraps
from pathlib import Path

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
    max_voxels: int | None = typer.Option(
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
    """A progress bar on stderr; off where stderr is not a terminal (a log file, nohup), so that
    the lines commands print while it runs reach the log at once instead of when it ends."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
                    disable=not console.is_terminal)


def _five(text: str, option: str, kind, ok, what: str) -> list:
    """Five comma-separated numbers of ``kind`` (one per resolution level), each passing ``ok``."""
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 5 or not all(ok(v) for v in values):
        raise InputError(f"{option} must be 5 comma-separated {what}, got {text!r}")
    return values


def main():  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    app()


# the commands register themselves on ``app`` when imported
from segrefine.cli import bench, cards, model, review  # noqa: F401
from segrefine.cli.review import refine_gcn_cmd  # noqa: F401
