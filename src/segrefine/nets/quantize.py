"""int8 inference for a :class:`GroupedUNet` on ONNX Runtime: the deep convolutions only.

ONNX Runtime runs an int8 convolution (``QLinearConv``, u8 activations and per-channel
s8 weights) about 3x faster than the fp32 one on a CPU with VNNI instructions for the
convolutions below the first level (32 or more channels per group), but slower for the
first level's 16 channels per group and for MG-Net's grouped output head
(docs/benchmarks.md). So only the convolutions of levels 1 and deeper, encoder and
decoder, are quantised; the first level, the head, the transposed convolutions and
instance normalisation stay fp32.

The activation ranges come from a calibration on training images (:func:`calibrate`,
min / max over the slices) and travel in the checkpoint (``int8`` entry,
:func:`segrefine.nets.checkpoint.write_calibration`), so quantising needs no data at
run time. :func:`quantized_model` turns the fp32 ONNX graph into the QDQ graph that
ONNX Runtime fuses into ``QLinearConv``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import tempfile
from pathlib import Path

import numpy as np

from segrefine.errors import InputError
from segrefine.nets.segnet import GroupedUNet
from segrefine.preprocess import normalise, pad_to_multiple, to_slices

FORMAT = 1
_NODE = re.compile(r"^/(down|dec)\.(\d+)/.*Conv$")


@functools.lru_cache(maxsize=1)
def cpu_has_vnni() -> bool:
    """Whether this CPU reports VNNI (AVX-512 VNNI or AVX-VNNI), read from /proc/cpuinfo
    (False where that file is missing)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_vnni|avx_vnni)\b", flags))


def quantized_nodes(net: GroupedUNet, node_names: list[str]) -> list[str]:
    """The ``Conv`` nodes of ``net``'s exported training graph at level 1 and deeper:
    ``down.k`` for k >= 1, ``dec.i`` for the decoder levels ``levels - 2 - i`` >= 1."""
    out = []
    for name in node_names:
        m = _NODE.match(name)
        if not m:
            continue
        part, index = m.group(1), int(m.group(2))
        level = index if part == "down" else net.levels - 2 - index
        if level >= 1:
            out.append(name)
    return out


def _node_names(model_path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(model_path)).graph.node]


class _Slices:
    """ONNX Runtime's calibration data reader: one slice at a time."""

    def __init__(self, x: np.ndarray):
        self._it = iter(range(len(x)))
        self._x = x

    def get_next(self) -> dict | None:
        i = next(self._it, None)
        return None if i is None else {"x": self._x[i:i + 1]}


def calibrate(net: GroupedUNet, volumes: list[np.ndarray], *, axis: int = 2, every: int = 2,
              source: str = "") -> dict:
    """Activation ranges for :func:`quantized_model`: the min and max of every input and
    output of the quantised convolutions over every ``every``-th slice of ``volumes``
    (each normalised as for prediction). Returns the checkpoint's ``int8`` entry."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from segrefine.nets.onnx import export

    if not volumes:
        raise InputError("calibration needs at least one volume")
    import onnx

    fp32 = export(net)
    graph = onnx.load(str(fp32)).graph
    nodes = quantized_nodes(net, [n.name for n in graph.node])
    with tempfile.TemporaryDirectory(prefix="segrefine-calib-") as tmp:
        calibrator = create_calibrator(fp32, ["Conv"], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        for vol in volumes:
            slices = np.ascontiguousarray(to_slices(normalise(np.asarray(vol, np.float32)), axis)[::every])
            x = np.ascontiguousarray(pad_to_multiple(slices, net.multiple)[0][:, None], dtype=np.float32)
            calibrator.collect_data(_Slices(x))
        data = calibrator.compute_data()
    wanted = {t for n in graph.node if n.name in nodes for t in (n.input[0], n.output[0])}
    ranges = {k: [float(np.min(v.lowest)), float(np.max(v.highest))]
              for k, v in data.items() if k in wanted}
    missing = wanted - set(ranges)
    if missing:
        raise RuntimeError(f"calibration gave no range for {sorted(missing)[:3]}")
    return {"format": FORMAT, "method": "minmax", "nodes": nodes, "ranges": ranges, "slices_every": every,
            "volumes": len(volumes), "source": source}


def quantized_model(fp32: Path, calibration: dict, out: Path) -> Path:
    """Write to ``out`` the QDQ graph of ``fp32`` with ``calibration``'s nodes in int8
    (u8 activations, per-channel s8 weights, MinMax ranges from the checkpoint)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    if calibration.get("format") != FORMAT:
        raise InputError(f"int8 calibration format {FORMAT} expected, got {calibration.get('format')!r}")
    names = set(_node_names(fp32))
    unknown = [n for n in calibration["nodes"] if n not in names]
    if unknown:
        raise InputError(f"the int8 calibration names nodes the exported graph lacks ({unknown[0]}): "
                         "calibrate this model again")
    ranges = TensorsData(CalibrationMethod.MinMax,
                         {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in calibration["ranges"].items()})
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(prefix="segrefine-int8-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        root.setLevel(logging.ERROR)  # quiets its advice to pre-process the graph first
        try:
            quantize_static(str(fp32), str(out), None, calibration_cache_path=str(cache),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_quantize=list(calibration["nodes"]))
        finally:
            root.setLevel(level)
    return out


def calibration_key(calibration: dict) -> str:
    """A short hash of ``calibration`` for the cached int8 graph's name."""
    import hashlib

    return hashlib.sha256(json.dumps(calibration, sort_keys=True).encode()).hexdigest()[:12]
