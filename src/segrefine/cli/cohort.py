"""The cohort mode shared by ``predict``, ``refine-gcn`` and ``suggest`` (``--workers`` / ``--scheduler``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from segrefine.cli import console
from segrefine.errors import InputError

WORKERS_HELP = ("Run over the cohort on a local Dask cluster of N worker processes (one thread each, "
                "the model loaded once per worker); writes OUT/manifest.json and skips finished cases.")
SCHEDULER_HELP = "Run on an existing Dask cluster (tcp://HOST:PORT); its workers need segrefine installed."
OVERWRITE_HELP = "Cohort mode: redo every case, even those whose outputs are complete and valid."
SPLIT_HELP = "Cohort mode on a Decathlon dataset: only the cases of this split of its splits.json."


def cohort_mode(workers: int | None, scheduler: str | None, *, overwrite: bool = False,
                split: str | None = None) -> bool:
    """Whether the command runs in cohort mode; the cohort-only options need it."""
    if workers is not None and scheduler is not None:
        raise InputError("--workers and --scheduler exclude each other: a local cluster or an existing one")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    on = workers is not None or scheduler is not None
    if not on and (overwrite or split is not None):
        raise InputError("--overwrite and --split go with --workers or --scheduler (cohort mode)")
    return on


def run_cohort_cli(kind: str, input: Path, output: Path, options: dict, *, workers: int | None,
                   scheduler: str | None, overwrite: bool, split: str | None) -> dict:
    """Run ``kind`` over the cohort ``input`` with a progress bar (done, failed, rate); exit 1 when a
    case failed (its one-line error is printed and kept in OUT/manifest.json)."""
    from segrefine.cohort.engine import run_cohort
    from segrefine.cohort.tasks import cohort_inputs

    cases = cohort_inputs(input, split=split)
    counts = {"done": 0, "failed": 0}
    start = time.perf_counter()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[done]} done, {task.fields[failed]} failed, {task.fields[rate]}"),
                   TimeElapsedColumn(), console=console, transient=False,
                   disable=not console.is_terminal)  # as progress_bar(): a log file gets the lines at once
    with bar:
        task = bar.add_task(f"{kind} (starting workers)", total=len(cases), done=0, failed=0, rate="–")

        def on_record(rec):
            counts[rec["status"]] += 1
            if rec["status"] == "failed":
                bar.console.print(f"[red]failed[/red] {rec['case']}: {rec['error']}", highlight=False)
            minutes = (time.perf_counter() - start) / 60
            bar.update(task, advance=1, description=kind, done=counts["done"], failed=counts["failed"],
                       rate=f"{(counts['done'] + counts['failed']) / minutes:.1f} vol/min")

        manifest = run_cohort(kind, cases, output, options, workers=workers, scheduler=scheduler,
                              overwrite=overwrite, on_record=on_record)
    this = [manifest["cases"][c.name] for c in cases]
    resumed = sum(bool(r.get("resumed")) for r in this)
    console.print(f"{counts['done']} done ({resumed} already complete), {counts['failed']} failed, on "
                  f"{manifest['workers']} workers in {manifest['run_seconds']:.1f} s; manifest: "
                  f"{Path(output) / 'manifest.json'}")
    if counts["failed"]:
        raise typer.Exit(1)
    return manifest
