"""ONNX Runtime execution of a network, exported once and cached.

The export is keyed by a hash of the weights and configuration and stored in
``$SEGREFINE_CACHE`` (default ``~/.cache/segrefine``); the sessions are kept on
the network object. Inputs ``(B, 1, H, W)`` float32, outputs the same logits
``(B, heads, classes, H, W)`` as the torch module.

Two graphs per network (each the training graph, or with ``rewrites`` the rewritten
inference graph of :mod:`segrefine.nets.inference`): dropout off (``dropout=False``: MG-Net, U-Net, ensemble
members) and dropout kept on (``dropout=True``: MC dropout), where every dropout
layer becomes ``x * (U(0, 1) >= p) / (1 - p)`` with a fresh uniform draw at every
run (ONNX ``RandomUniformLike``), so MC dropout runs on the same runtime as the
methods it is compared with. With ``precision="int8"`` the training graph with dropout off
has its deeper convolutions quantised (:mod:`segrefine.nets.quantize`, from the ranges in
the checkpoint).
"""

from __future__ import annotations

import copy
import hashlib
import io as _io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from segrefine.errors import InputError
from segrefine.io import atomic_path
from segrefine.nets.inference import InferenceGraph
from segrefine.nets.quantize import calibration_key, quantized_model
from segrefine.nets.segnet import GroupedUNet


def cache_dir() -> Path:
    root = os.environ.get("SEGREFINE_CACHE") or Path.home() / ".cache" / "segrefine"
    path = Path(root) / "onnx"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fingerprint(net: GroupedUNet) -> str:
    h = hashlib.sha256(json.dumps(net.config.to_dict(), sort_keys=True).encode())
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


class _SampledDropout(torch.nn.Module):
    """Dropout that stays on in the exported graph (a fresh mask at every run)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


def _with_dropout_on(net: GroupedUNet) -> GroupedUNet:
    """A copy of ``net`` whose dropout layers sample a mask in eval mode."""
    clone = copy.deepcopy(net).eval()
    for module in list(clone.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Dropout) and child.p > 0:
                setattr(module, name, _SampledDropout(child.p))
    return clone


def _graph_tag(rewrites: tuple[str, ...]) -> str:
    """'' for the training graph (the default, as cached before the rewrites existed)."""
    return "-" + "+".join(rewrites) if rewrites else ""


PRECISIONS = ("fp32", "int8")


def export(net: GroupedUNet, *, dropout: bool = False, rewrites: tuple[str, ...] = (),
           precision: str = "fp32") -> Path:
    """The ONNX file of ``net``'s inference graph with ``rewrites`` (() = the training graph as
    it is), exported once per weights, graph, dropout mode and precision (``int8``: the
    training graph with dropout off, quantised with the checkpoint's calibration)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        return _export_int8(net, dropout=dropout, rewrites=rewrites)
    tag = "-mc" if dropout else ""
    path = cache_dir() / f"{net.config.arch}-{_fingerprint(net)}{_graph_tag(rewrites)}{tag}.onnx"
    if path.exists():
        return path
    net.eval()
    model = _with_dropout_on(net) if dropout else net
    if rewrites:
        model = InferenceGraph(model, tuple(rewrites)).eval()
    dummy = torch.zeros(1, 1, net.multiple * 2, net.multiple * 2)
    buf = _io.BytesIO()
    torch.onnx.export(model, dummy, buf, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b", 3: "h", 4: "w"}},
                      opset_version=17, dynamo=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def _export_int8(net: GroupedUNet, *, dropout: bool, rewrites: tuple[str, ...]) -> Path:
    calibration = getattr(net, "int8", None)
    if not calibration:
        raise InputError(f"{getattr(net, 'source', 'this model')}: no int8 calibration in the checkpoint "
                         "(segrefine calibrate adds one); use precision fp32")
    if dropout or rewrites:
        raise InputError("int8 runs the training graph with dropout off only (no rewrites, no MC dropout)")
    path = cache_dir() / f"{net.config.arch}-{_fingerprint(net)}-int8-{calibration_key(calibration)}.onnx"
    if not path.exists():
        with atomic_path(path) as tmp:
            quantized_model(export(net), calibration, tmp)
    return path


_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}


def session(net: GroupedUNet, *, dropout: bool = False, rewrites: tuple[str, ...] = (),
            threads: int | None = None, index: int = 0, precision: str = "fp32"):
    """The ONNX Runtime session for ``net`` (made once): ``threads`` intra-op threads (default
    torch's); ``index`` tells apart the one-thread sessions that run in parallel."""
    threads = torch.get_num_threads() if threads is None else threads
    sessions = net.__dict__.setdefault("_ort_sessions", {})
    key = (dropout, tuple(rewrites), threads, index, precision)
    with _LOCK:
        sess = sessions.get(key)
        if sess is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            path = export(net, dropout=dropout, rewrites=rewrites, precision=precision)
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            sessions[key] = sess
    return sess


def run_onnx(net: GroupedUNet, x: np.ndarray, *, dropout: bool = False, rewrites: tuple[str, ...] = (),
             threads: int | None = None, index: int = 0, precision: str = "fp32") -> np.ndarray:
    """Logits for ``x`` ``(B, 1, H, W)`` float32 (``dropout``: one MC dropout sample)."""
    sess = session(net, dropout=dropout, rewrites=rewrites, threads=threads, index=index, precision=precision)
    return sess.run(None, {"x": x})[0]


def run_onnx_runs(net: GroupedUNet, runs: list[np.ndarray], *, dropout: bool = False,
                  rewrites: tuple[str, ...] = (), workers: int = 1, precision: str = "fp32") -> list[np.ndarray]:
    """Logits for each of ``runs``, in order. ``workers`` > 1: that many one-thread sessions
    run in parallel, each taking the next run (ONNX Runtime runs some kernels, instance
    normalisation among them, on one thread; docs/benchmarks.md); the runs past the last
    multiple of ``workers`` (19 one-slice runs on 2 workers: the last one) then run on one
    session with torch's threads instead of on one worker while the others wait. 1: one
    session with torch's threads, run after run."""
    shared = len(runs) - len(runs) % workers if workers > 1 else 0
    out: list = [None] * len(runs)
    if shared:
        for index in range(workers):  # made here, not in the pool's threads
            session(net, dropout=dropout, rewrites=rewrites, threads=1, index=index, precision=precision)
        todo = iter(range(shared))
        take = threading.Lock()

        def work(index: int) -> None:
            while True:
                with take:
                    i = next(todo, None)
                if i is None:
                    return
                out[i] = run_onnx(net, runs[i], dropout=dropout, rewrites=rewrites, threads=1, index=index,
                                  precision=precision)

        with _LOCK:
            if workers not in _POOLS:
                _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="segrefine-onnx")
            pool = _POOLS[workers]
        for future in [pool.submit(work, index) for index in range(workers)]:
            future.result()
    for i in range(shared, len(runs)):
        out[i] = run_onnx(net, runs[i], dropout=dropout, rewrites=rewrites, precision=precision)
    return out
