"""The demo behind ``make demo``: a shipped MG-Net on real data, or on a generated phantom.

With the shared data, the hippocampus MG-Net (``mgnet``) on hippocampus test cases;
without it, the phantom MG-Net (``phantom``, trained by ``segrefine train`` on
generated phantoms, docs/models.md) on a generated phantom it never saw; on your
own images, the hippocampus model unless ``model`` says otherwise. The demo prints
which model it uses, and warns where the input is unlike that model's training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from segrefine import io
from segrefine.datasets import load_splits, pair_folders
from segrefine.figures import prediction_figure
from segrefine.metrics import dice
from segrefine.nets.card import model_warning
from segrefine.nets.checkpoint import model_path
from segrefine.paths import shared_data_dir
from segrefine.predict import write_prediction
from segrefine.uncertainty import Predictor


def _sources(input: Path | None, labels: Path | None, n_cases: int, out: Path, console: Console):
    """(name, image path, label path or None) triples, a note for the user, and the shipped
    model that fits them."""
    if input is not None:
        if Path(input).is_dir():
            cases = pair_folders(input, labels)
            return [(c.name, c.image, c.label) for c in cases], f"your images in {input}", "mgnet"
        lab = None
        if labels is not None:
            lab = Path(labels) / Path(input).name if Path(labels).is_dir() else Path(labels)
        return [(io.case_name(input), Path(input), lab)], f"your image {input}", "mgnet"
    shared = shared_data_dir()
    if shared is not None:
        hip = shared / "hippocampus"
        names = load_splits(hip / "splits.json")["test"][:n_cases]
        return ([(n, hip / "imagesTr" / f"{n}.nii.gz", hip / "labelsTr" / f"{n}.nii.gz") for n in names],
                f"{len(names)} hippocampus test cases from {hip}", "mgnet")
    from segrefine.phantom import make_phantom

    image, label = make_phantom()
    sample = out / "sample"
    sample.mkdir(parents=True, exist_ok=True)
    io.save(io.Volume(image), sample / "phantom.nii.gz")
    io.save(io.Volume(label), sample / "phantom_label.nii.gz", dtype=np.uint8)
    console.print("[yellow]../shared/data not found: running on a generated phantom with the phantom "
                  "model. Point the demo at your own images with: "
                  "make demo INPUT=path/to/image_or_folder[/yellow]")
    return ([("phantom", sample / "phantom.nii.gz", sample / "phantom_label.nii.gz")], "a generated phantom",
            "phantom")


def run_demo(*, input: Path | None, labels: Path | None, out: Path, n_cases: int, console: Console,
             model: str | None = None) -> dict:
    """Predict, score where labels exist, write the outputs and a PNG; ``model``: a checkpoint
    or shipped model name (default: the one that fits the data, see the module docstring)."""
    out = io.check_writable_dir(out)
    sources, what, fitting = _sources(input, labels, n_cases, out, console)
    model = model or fitting
    path = model_path(model)
    predictor = Predictor("mgnet", models=[path])
    card = predictor.nets[0].card or {}
    console.print(f"segrefine demo: model {model} ({path.name}: MG-Net trained on "
                  f"{card.get('dataset', 'data without a model card')}) on {what}")
    rows, scores = [], {}
    for name, image_path, label_path in sources:
        vol = io.load(image_path)
        warning = model_warning(predictor.nets[0], vol, predictor.axis, what=name)
        if warning:
            console.print(warning, style="yellow", markup=False, highlight=False)
        pred = predictor(vol.array)
        write_prediction(vol, pred, out, name)
        row = {"name": name, "image": vol.array, "label": pred.label, "uncertainty": pred.uncertainty}
        msg = f"  {name}: {pred.seconds:.2f} s"
        if label_path is not None and Path(label_path).exists():
            ref = io.load(label_path, finite=False).array
            scores[name] = dice(pred.label > 0, ref > 0)
            row["reference"] = ref
            msg += f", Dice {scores[name]:.3f}"
        console.print(msg)
        rows.append(row)
    if scores:
        console.print(f"mean Dice {np.mean(list(scores.values())):.3f} over {len(scores)} cases")
    png = prediction_figure(out / "demo.png", rows[:4],
                            title=f"MG-Net ({model}): prediction and uncertainty")
    console.print(f"outputs in {out}/, picture: {png}")
    return {"dice": scores, "png": str(png), "model": str(path)}
