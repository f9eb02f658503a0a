"""ONNX Runtime execution of a network (dropout off), exported once and cached.

The export is keyed by a hash of the weights and configuration and stored in
``$SEGREFINE_CACHE`` (default ``~/.cache/segrefine``); the session is kept on
the network object. Inputs ``(B, 1, H, W)`` float32, outputs the same logits
``(B, heads, classes, H, W)`` as the torch module.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
from pathlib import Path

import numpy as np
import torch

from segrefine.io import atomic_path
from segrefine.nets.segnet import SegNet


def cache_dir() -> Path:
    root = os.environ.get("SEGREFINE_CACHE") or Path.home() / ".cache" / "segrefine"
    path = Path(root) / "onnx"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fingerprint(net: SegNet) -> str:
    h = hashlib.sha256(json.dumps(net.config.to_dict(), sort_keys=True).encode())
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def export(net: SegNet) -> Path:
    path = cache_dir() / f"{net.config.arch}-{_fingerprint(net)}.onnx"
    if path.exists():
        return path
    net.eval()
    dummy = torch.zeros(1, 1, net.multiple * 2, net.multiple * 2)
    buf = _io.BytesIO()
    torch.onnx.export(net, dummy, buf, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b", 3: "h", 4: "w"}},
                      opset_version=17, dynamo=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def session(net: SegNet):
    sess = getattr(net, "_ort_session", None)
    if sess is None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(export(net)), opts, providers=["CPUExecutionProvider"])
        net._ort_session = sess
    return sess


def run_onnx(net: SegNet, x: np.ndarray) -> np.ndarray:
    """Logits for ``x`` ``(B, 1, H, W)`` float32."""
    return session(net).run(None, {"x": x})[0]
