"""``segrefine bench graph``: what the inference-graph rewrites and the slices per run buy.

MG-Net and the U-Net on ONNX Runtime, each with the training graph exported as it is
and 32 slices per run (the first default), each rewrite of :mod:`segrefine.nets.inference`
alone and all of them (2^20 pixels per run), all of them with one 192x192 slice per run,
the training graph at 2^20 pixels per run (an earlier default: the 19 slices of the fetal
stack in one run), at 2^18 and at 2^17 (the previous default: 3 fetal slices, one slice of a
512x512 CT), all on one session with torch's threads, in fp32; the runs shared by one
one-thread session per torch thread, in parallel (a run left over on one session with
torch's threads), at 2^17 pixels (the previous default) and at 2^16 (one fetal slice a run),
in fp32 and for MG-Net with its deeper convolutions in int8; and the default as it is (int8
for a calibrated model on a CPU with VNNI, :class:`segrefine.uncertainty.OnnxOptions`).
The first call on the fetal shape is timed after the variant has run the hippocampus
volumes (sessions made, warm on other shapes), with the minor page faults and the system
time it took: all variants live in one process, as the methods do in ``bench uncertainty``.
Then the variants run in turns (round robin, ``repeats`` rounds) so that a slow spell of
the machine hits them all; medians on the fetal stack and on hippocampus volumes,
with the ratio to the first default measured in the same run.
"""

from __future__ import annotations

import resource
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
DEFAULT = "the default (int8 where the CPU has VNNI and the model a calibration)"
PARALLEL = "a one-thread session per torch thread"


def variants(method: str) -> dict[str, OnnxOptions]:
    """The earlier variants run one session with torch's threads (``workers=1``) in fp32."""
    out = {BEFORE: OnnxOptions((), 10**9, workers=1, precision="fp32")}
    if method == "mgnet":
        out.update({f"only '{r}', 2^20 pixels per run": OnnxOptions((r,), 2**20, workers=1, precision="fp32")
                    for r in REWRITES})
    out["all rewrites, 2^20 pixels per run"] = OnnxOptions(REWRITES, 2**20, workers=1, precision="fp32")
    out["all rewrites, one 192x192 slice per run"] = OnnxOptions(REWRITES, 192 * 192, workers=1, precision="fp32")
    out["training graph, 2^20 pixels per run (an earlier default)"] = OnnxOptions((), 2**20, workers=1,
                                                                                  precision="fp32")
    out["training graph, 2^18 pixels per run"] = OnnxOptions((), 2**18, workers=1, precision="fp32")
    out["training graph, 2^17 pixels per run (an earlier default)"] = OnnxOptions((), 2**17, workers=1,
                                                                                  precision="fp32")
    out[f"training graph, 2^17 pixels per run, {PARALLEL}, fp32 (the previous default)"] = \
        OnnxOptions(pixels_per_run=2**17, precision="fp32")
    out[f"training graph, 2^16 pixels per run, {PARALLEL}, fp32"] = OnnxOptions(pixels_per_run=2**16,
                                                                                 precision="fp32")
    if method == "mgnet":
        for bits in (17, 16):
            out[f"training graph, 2^{bits} pixels per run, {PARALLEL}, int8 levels >= 1"] = \
                OnnxOptions(pixels_per_run=2**bits, precision="int8")
    out[DEFAULT] = OnnxOptions()
    return out


def _timed(pred: Predictor, image: np.ndarray) -> float:
    t = time.perf_counter()
    pred(image)
    return time.perf_counter() - t


def _first_call(pred: Predictor, image: np.ndarray) -> dict:
    """Seconds, minor page faults and system seconds of one call (the process's counters)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = _timed(pred, image)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"first_fetal_call_s": seconds, "first_fetal_call_minor_faults": after.ru_minflt - before.ru_minflt,
            "first_fetal_call_system_s": after.ru_stime - before.ru_stime}


def run(fetal: Path, volumes: list[Path], out_json: Path, *, methods=("mgnet", "unet"),
        repeats: int = 5, log=print) -> dict:
    if not volumes:
        raise InputError("bench graph needs at least one hippocampus volume")
    stack = io.load(fetal).array
    hippo = [io.load(p).array for p in volumes]
    results = {}
    for method in methods:
        preds = {name: Predictor(method, backend="onnx", onnx=opt) for name, opt in variants(method).items()}
        for p in preds.values():  # export, sessions, warm on the hippocampus shapes
            for v in hippo:
                p(v)
        first = {name: _first_call(p, stack) for name, p in preds.items()}  # a new shape
        fetal_t = {name: [] for name in preds}
        hippo_t = {name: [] for name in preds}
        for _ in range(repeats):
            for name, p in preds.items():
                fetal_t[name].append(_timed(p, stack))
                hippo_t[name].append(sum(_timed(p, v) for v in hippo) / len(hippo))
        rows = {}
        for name in preds:
            rows[name] = {"fetal_median_s": statistics.median(fetal_t[name]), "fetal_s": fetal_t[name],
                          "hippocampus_median_s": statistics.median(hippo_t[name]), **first[name]}
        base = rows[BEFORE]
        for row in rows.values():
            row["fetal_speedup"] = base["fetal_median_s"] / row["fetal_median_s"]
            row["hippocampus_speedup"] = base["hippocampus_median_s"] / row["hippocampus_median_s"]
            row["first_over_warm"] = row["first_fetal_call_s"] / row["fetal_median_s"]
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
             "| first fetal call (s) | first / warm | its minor page faults | its system time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, rows in data["results"].items():
        for name, r in rows.items():
            lines.append(f"| {method} | {name} | {r['fetal_median_s']:.2f} | {r['fetal_speedup']:.2f}x | "
                         f"{r['hippocampus_median_s']:.3f} | {r['hippocampus_speedup']:.2f}x | "
                         f"{r['first_fetal_call_s']:.2f} | {r['first_over_warm']:.2f}x | "
                         f"{r['first_fetal_call_minor_faults']:,} | {r['first_fetal_call_system_s']:.2f} |")
    return "\n".join(lines) + "\n"
