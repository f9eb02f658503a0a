"""``segrefine bench graph``: what the inference-graph rewrites and the slices per run buy.

MG-Net and the U-Net on ONNX Runtime, each with the training graph exported as it is
and 32 slices per run (the earlier default), each rewrite of :mod:`segrefine.nets.inference`
alone and all of them, all of them with one 192x192 slice per run, and the default (the
training graph, at most 2^20 pixels per run).
(2^20 pixels: the 19 slices of the fetal stack in one run, 4 slices of a 512x512 CT.)
The variants run in turns (round robin, ``repeats`` rounds) so that a slow spell of
the machine hits them all; medians on the fetal stack and on hippocampus volumes,
with the ratio to the earlier default measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.bench.common import command_line, machine, write_json, write_text
from segrefine.errors import InputError
from segrefine.nets.inference import REWRITES
from segrefine.uncertainty import OnnxOptions, Predictor

BEFORE = "training graph, 32 slices per run"
DEFAULT = "training graph, 2^20 pixels per run (default)"


def variants(method: str) -> dict[str, OnnxOptions]:
    out = {BEFORE: OnnxOptions((), 10**9)}
    if method == "mgnet":
        out.update({f"only '{r}', 2^20 pixels per run": OnnxOptions((r,)) for r in REWRITES})
    out["all rewrites, 2^20 pixels per run"] = OnnxOptions(REWRITES)
    out["all rewrites, one 192x192 slice per run"] = OnnxOptions(REWRITES, 192 * 192)
    out[DEFAULT] = OnnxOptions()
    return out


def _timed(pred: Predictor, image: np.ndarray) -> float:
    t = time.perf_counter()
    pred(image)
    return time.perf_counter() - t


def run(fetal: Path, volumes: list[Path], out_json: Path, *, methods=("mgnet", "unet"),
        repeats: int = 5, log=print) -> dict:
    if not volumes:
        raise InputError("bench graph needs at least one hippocampus volume")
    stack = io.load(fetal).array
    hippo = [io.load(p).array for p in volumes]
    results = {}
    for method in methods:
        preds = {name: Predictor(method, backend="onnx", onnx=opt) for name, opt in variants(method).items()}
        first = {name: _timed(p, stack) for name, p in preds.items()}  # export + session + new shape
        for p in preds.values():
            for v in hippo:
                p(v)
        fetal_t = {name: [] for name in preds}
        hippo_t = {name: [] for name in preds}
        for _ in range(repeats):
            for name, p in preds.items():
                fetal_t[name].append(_timed(p, stack))
                hippo_t[name].append(sum(_timed(p, v) for v in hippo) / len(hippo))
        rows = {}
        for name in preds:
            rows[name] = {"fetal_median_s": statistics.median(fetal_t[name]), "fetal_s": fetal_t[name],
                          "hippocampus_median_s": statistics.median(hippo_t[name]),
                          "first_fetal_call_s": first[name]}
        base = rows[BEFORE]
        for row in rows.values():
            row["fetal_speedup"] = base["fetal_median_s"] / row["fetal_median_s"]
            row["hippocampus_speedup"] = base["hippocampus_median_s"] / row["hippocampus_median_s"]
        results[method] = rows
        log(f"{method}: {rows[DEFAULT]['fetal_median_s']:.2f} s on the fetal stack "
            f"({rows[DEFAULT]['fetal_speedup']:.2f}x the earlier default)")
    data = {"benchmark": "graph", "command": command_line(), "machine": machine(),
            "fetal_stack": str(fetal), "fetal_shape": list(stack.shape),
            "hippocampus_volumes": [str(p) for p in volumes], "repeats": repeats, "results": results}
    write_json(out_json, data)
    write_text(Path(out_json).with_suffix(".md"), table_markdown(data))
    return data


def table_markdown(data: dict) -> str:
    m = data["machine"]
    lines = [f"ONNX Runtime on {m['cpu']} ({m['cores']} cores), {data['repeats']} rounds, medians; "
             f"ratios against '{BEFORE}' in the same run.", "",
             "| network | graph and slices per run | fetal stack (s) | ratio | hippocampus volume (s) | ratio "
             "| first fetal call (s) |", "|---|---|---|---|---|---|---|"]
    for method, rows in data["results"].items():
        for name, r in rows.items():
            lines.append(f"| {method} | {name} | {r['fetal_median_s']:.2f} | {r['fetal_speedup']:.2f}x | "
                         f"{r['hippocampus_median_s']:.3f} | {r['hippocampus_speedup']:.2f}x | "
                         f"{r['first_fetal_call_s']:.2f} |")
    return "\n".join(lines) + "\n"
