"""Commands around the shipped models: models (list with cards), card (fill one in),
phantom-dataset (the generated training data of the phantom model)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from segrefine.cli import app, console, friendly
from segrefine.errors import InputError


@app.command("models")
@friendly
def models_cmd(
    model: list[Path] | None = typer.Option(None, "--model", help="Show these checkpoints' cards "
                                                                 "instead of the shipped models'."),
):
    """List the shipped models (or given checkpoints) with their model cards.

    Example: segrefine models
    """
    from segrefine.nets.card import card_lines
    from segrefine.nets.checkpoint import SHIPPED, read_checkpoint, shipped_model

    out = Console(soft_wrap=True, highlight=False)
    entries = [(str(p), p) for p in model] if model else [(name, shipped_model(name)) for name in SHIPPED]
    for name, path in entries:
        payload = read_checkpoint(path)
        cfg = payload["config"]
        size = Path(path).stat().st_size / 1e6
        out.print(f"[bold]{name}[/bold]  {path}  ({cfg['arch']}, {size:.1f} MB)")
        for label, text in card_lines(payload.get("card")):
            out.print(f"  {label}: {text}")
        out.print()


@app.command("card")
@friendly
def card_cmd(
    model: Path = typer.Argument(..., help="Checkpoint to give a card (rewritten in place, atomically)."),
    dataset: Path = typer.Option(..., "--dataset", help="The Decathlon-layout folder it was trained on."),
    command: str | None = typer.Option(None, "--command", help="The command that trained it (default: "
                                                                 "rebuilt from the stored settings)."),
    preset: str = typer.Option("default", help="Refinement preset to recommend with it."),
    splits: Path | None = typer.Option(None, help="Split file; default DATASET/splits.json."),
    train_split: str | None = typer.Option(None, help="Training split (default: the one stored in the "
                                                       "checkpoint, else 'train')."),
):
    """Fill in the model card of a checkpoint trained before cards existed (weights unchanged).

    Example: segrefine card src/segrefine/models/unet_hippocampus.pt --dataset ../shared/data/hippocampus
    """
    from segrefine.datasets import split_cases
    from segrefine.nets.card import build_card, card_lines, with_val_dice
    from segrefine.nets.checkpoint import read_checkpoint, write_card
    from segrefine.refine.slice import PRESETS

    if preset not in PRESETS:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    payload = read_checkpoint(model)
    summary = payload.get("summary") or {}
    settings = summary.get("train", {})
    arch = payload["config"]["arch"]
    stored = settings.get("splits", {})
    cases = split_cases(dataset, train_split or stored.get("train", "train"), splits)
    if command is None:
        command = "rebuilt from the stored settings: " + _rebuilt_command(dataset, model, arch, settings)
    val = summary.get("best_val_dice", summary.get("best_val_slice_dice"))
    metric = ("slice Dice of the refined error slices" if "best_val_slice_dice" in summary
              else "whole-volume Dice (mean of the heads > 0.5)")
    card = build_card(dataset, cases, axis=int(settings.get("axis", 2)), arch=arch, command=command,
                      preset=preset, multiclass=bool(settings.get("multiclass", False)),
                      val_split=stored.get("val", "val"), val_metric=metric)
    params = sum(v.numel() for v in payload["state_dict"].values() if v.is_floating_point())
    card = with_val_dice(card, val, params) if val is not None else {**card, "parameters": params}
    write_card(model, card)
    for label, text in card_lines(card):
        console.print(f"  {label}: {text}", highlight=False, soft_wrap=True)
    console.print(f"card written into {model}")


def _rebuilt_command(dataset: Path, model: Path, arch: str, settings: dict) -> str:
    parts = [f"segrefine train --dataset {dataset} --arch {arch} --out {model}"]
    for key, flag in (("epochs", "--epochs"), ("iterations_per_epoch", "--iterations"),
                      ("batch_size", "--batch-size"), ("threads", "--threads"), ("seed", "--seed")):
        if key in settings:
            parts.append(f"{flag} {settings[key]}")
    return " ".join(parts)


@app.command("phantom-dataset")
@friendly
def phantom_dataset(
    out: Path = typer.Option(..., "--out", help="New folder for imagesTr/, labelsTr/, dataset.json, splits.json."),
    cases: int = typer.Option(40, help="Number of generated cases."),
    val: int = typer.Option(8, help="Cases in the 'val' split."),
    test: int = typer.Option(8, help="Cases in the 'test' split."),
    seed: int = typer.Option(1, help="Seed of the whole dataset."),
):
    """Generate a Decathlon-layout dataset of random phantoms (the phantom model's training data).

    Example: segrefine phantom-dataset --out phantom_data
    """
    from segrefine.phantom import write_phantom_dataset

    splits = write_phantom_dataset(out, cases=cases, val=val, test=test, seed=seed)
    console.print(f"wrote {cases} phantoms to {out} (" +
                  ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + ")")


def warn_if_unlike(predictor, volumes, axis: int) -> None:
    """Print one warning line per input that is unlike the predictor's training data (its
    model card: spacing, in-plane size, intensity statistics, slice axis)."""
    from segrefine.nets.card import model_warning

    for path, volume in volumes:
        text = model_warning(predictor.nets[0], volume, axis, what=Path(path).name)
        if text:
            console.print(text, style="yellow", markup=False, highlight=False, soft_wrap=True)
