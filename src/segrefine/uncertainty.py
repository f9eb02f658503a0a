"""Segmentation with uncertainty: MG-Net (one pass), MC dropout, deep ensemble, plain U-Net.

Every method returns the same :class:`Prediction`. Volumes are ``(I, J, K)``
arrays; the 2D networks run slice by slice along ``axis`` (the last by default)
and any in-plane size is padded inside to the network's multiple.

Uncertainty maps
----------------
``variance``: the variance of the foreground probability over the samples (MG-Net
heads, MC passes or ensemble members), in [0, 0.25]. ``entropy``: the binary
entropy of the mean foreground probability, in bits, in [0, 1]. A single
deterministic network has no samples, so its uncertainty is its entropy.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segrefine.errors import InputError
from segrefine.nets.checkpoint import load_network, shipped_model
from segrefine.nets.onnx import PRECISIONS as ONNX_PRECISIONS
from segrefine.nets.quantize import cpu_has_vnni
from segrefine.nets.segnet import GroupedUNet
from segrefine.preprocess import from_slices, normalise, pad_to_multiple, to_slices
from segrefine.validate import as_axis, as_volume

METHODS = ("mgnet", "unet", "mcdropout", "ensemble")
PRECISIONS = ("auto", *ONNX_PRECISIONS)
UNCERTAINTY_KINDS = ("variance", "entropy")


@dataclass
class Prediction:
    """Result of any segmentation-with-uncertainty method.

    Attributes
    ----------
    prob : (I, J, K) float32
        Mean foreground probability (1 - P(background)).
    label : (I, J, K) uint8
        Argmax of the mean class probabilities (binary: ``prob > 0.5``).
    uncertainty : (I, J, K) float32
        Voxel-wise uncertainty of kind ``uncertainty_kind``.
    samples : (T, I, J, K) float32 or None
        Foreground probability of each head / pass / member.
    """

    prob: np.ndarray
    label: np.ndarray
    uncertainty: np.ndarray
    samples: np.ndarray | None = None
    method: str = ""
    uncertainty_kind: str = "variance"
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def variance(self) -> np.ndarray:
        if self.samples is None:
            return np.zeros_like(self.prob)
        return self.samples.var(axis=0).astype(np.float32)

    def entropy(self) -> np.ndarray:
        return binary_entropy(self.prob)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -p log2 p - (1-p) log2 (1-p), in bits (0 at p = 0 or 1)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where(h < 1e-9, 0.0, h).astype(np.float32)


def _check_volume(image: np.ndarray, axis: int) -> np.ndarray:
    as_axis(axis)
    return as_volume(image, "image")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line InputError."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class OnnxOptions:
    """How the ONNX Runtime backend runs a network.

    ``rewrites``: the inference-graph rewrites (:mod:`segrefine.nets.inference`); the
    default () exports the training graph as it is: the rewrites were not measurably
    faster end to end (``segrefine bench graph``, docs/benchmarks.md). ``pixels_per_run``:
    slices per run (at most the predictor's batch of 32), as many as fit in this many
    pixels, at least one: 2^16, one slice of the 192x192 fetal stack a run, one 512x512 CT
    slice, 21 hippocampus slices. Against 2^20 pixels (the 19 fetal slices in one run, an
    earlier default) it bounds the memory ONNX Runtime keeps (MG-Net's process after a
    fetal stack: about 0.8 instead of 2.6 GB at 2^17) and the first call on a new input
    shape, which pays for fresh memory (page faults) and took 2.0-2.6x the warm call in a
    process holding the other methods; against 2^17 (3 fetal slices, the previous default)
    it halves the first fetal call's page faults and ran the fetal stack 1.08-1.11x faster
    in int8 on the Intel host (``segrefine bench graph``, docs/benchmarks.md).
    ``workers``: how many one-thread sessions share the runs, in parallel (default: torch's
    threads; 1: one session with torch's threads, run after run). Some of ONNX Runtime's CPU
    kernels run on one thread (instance normalisation: 16 % of MG-Net's kernel time), so
    two one-thread sessions on 2 cores ran MG-Net on the fetal stack about 1.15x faster
    than one two-thread session (docs/benchmarks.md). The runs then come in a multiple of
    ``workers``, of about equal size; the runs past the last multiple run on one session
    with torch's threads. ``precision``: ``fp32``, ``int8`` (the convolutions of level 1
    and deeper in int8, from the calibration in the checkpoint:
    :mod:`segrefine.nets.quantize`) or ``auto``: int8 where the checkpoint carries a
    calibration, the CPU reports VNNI (where int8 was measured faster) and the graph is the
    training graph with dropout off; fp32 otherwise (MC dropout, a model without
    calibration, rewrites, a CPU without VNNI).
    """

    rewrites: tuple[str, ...] = ()
    pixels_per_run: int = 2**16
    workers: int | None = None
    precision: str = "auto"

    def precision_for(self, net: GroupedUNet, *, dropout: bool = False) -> str:
        """The precision ``net`` runs at under these options."""
        if self.precision != "auto":
            return self.precision
        usable = getattr(net, "int8", None) and not dropout and not self.rewrites
        return "int8" if usable and cpu_has_vnni() else "fp32"


@torch.inference_mode()
def _class_probs(nets: list[GroupedUNet], slices: np.ndarray, *, passes: int = 1, dropout: bool = False,
                 batch: int = 32, backend: str = "torch", onnx: OnnxOptions = OnnxOptions()) -> np.ndarray:
    """Softmax probabilities ``(samples, n, classes, H, W)`` for padded slices ``(n, H, W)``.

    Samples are the heads of each net, for each pass, for each net. ``backend``
    ``onnx`` runs the networks with ONNX Runtime (with ``dropout``, the graph that keeps
    dropout on: every pass draws new masks).
    """
    outs = []
    for net in nets:
        padded, crop = pad_to_multiple(slices, net.multiple)
        x = np.ascontiguousarray(padded[:, None], dtype=np.float32)
        step = batch
        if backend == "onnx":
            step = max(1, min(batch, onnx.pixels_per_run // (x.shape[2] * x.shape[3])))
            from segrefine.nets import onnx as ort_runner

            workers = torch.get_num_threads() if onnx.workers is None else onnx.workers

            def forward(x, net=net):
                count = -(-len(x) // step)  # runs of at most `step` slices, a multiple of the workers
                runs = np.array_split(x, min(len(x), -(-count // workers) * workers))
                logits = ort_runner.run_onnx_runs(net, runs, dropout=dropout, rewrites=onnx.rewrites,
                                                  workers=workers,
                                                  precision=onnx.precision_for(net, dropout=dropout))
                return torch.from_numpy(np.concatenate(logits, 0))
        else:
            net.eval()
            if dropout:
                for m in net.modules():
                    if isinstance(m, torch.nn.Dropout):
                        m.train()

            def forward(x, net=net):
                return torch.cat([net(torch.from_numpy(x[i:i + step])) for i in range(0, len(x), step)], 0)
        for _ in range(passes):
            logits = forward(x)
            p = torch.softmax(logits, dim=2)[..., crop[0], crop[1]]  # (n, heads, C, H, W)
            outs.append(p.permute(1, 0, 2, 3, 4).numpy())
        net.eval()
    return np.concatenate(outs, 0).astype(np.float32)


def predict_volume(image: np.ndarray, nets: list[GroupedUNet], *, method: str, axis: int = 2,
                   passes: int = 1, dropout: bool = False, uncertainty: str = "variance",
                   keep_samples: bool = False, backend: str = "torch",
                   onnx: OnnxOptions = OnnxOptions()) -> Prediction:
    """Run ``nets`` slice by slice and combine their samples into a :class:`Prediction`."""
    if uncertainty not in UNCERTAINTY_KINDS:
        raise InputError(f"uncertainty must be one of {UNCERTAINTY_KINDS}, got {uncertainty!r}")
    image = _check_volume(image, axis)
    start = time.perf_counter()
    slices = np.ascontiguousarray(to_slices(normalise(image), axis))
    probs = _class_probs(nets, slices, passes=passes, dropout=dropout, backend=backend, onnx=onnx)  # (T, n, C, H, W)
    mean = probs.mean(0)
    fg_samples = 1.0 - probs[:, :, 0]  # (T, n, H, W)
    prob = from_slices(1.0 - mean[:, 0], axis)
    label = from_slices(mean.argmax(1).astype(np.uint8), axis)
    samples = np.stack([from_slices(s, axis) for s in fg_samples]).astype(np.float32)
    pred = Prediction(prob=np.ascontiguousarray(prob, dtype=np.float32),
                      label=np.ascontiguousarray(label), uncertainty=np.empty(0),
                      samples=samples, method=method, uncertainty_kind=uncertainty)
    if uncertainty == "variance" and samples.shape[0] > 1:
        pred.uncertainty = pred.variance()
    else:
        pred.uncertainty = pred.entropy()
        pred.uncertainty_kind = "entropy"
    if not keep_samples:
        pred.samples = None if samples.shape[0] == 1 else pred.samples
    pred.seconds = time.perf_counter() - start
    return pred


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return True


class Predictor:
    """A segmentation method with its networks loaded once.

    ``method``: ``mgnet`` (one pass, heads as samples), ``unet`` (the dropout U-Net,
    one pass with dropout off), ``mcdropout`` (the U-Net, ``passes`` passes with
    dropout on), ``ensemble`` (several U-Nets, one pass each).

    ``backend``: ``torch``, ``onnx`` (ONNX Runtime; MC dropout runs a graph that keeps
    dropout on) or ``auto`` (ONNX Runtime where it is installed: it runs the grouped
    convolutions of MG-Net about 2x faster on CPU). Every method runs on the same
    backend, so their timings compare the methods, not the runtimes.
    """

    def __init__(self, method: str = "mgnet", *, models: list[str | Path] | None = None,
                 passes: int = 10, axis: int = 2, uncertainty: str = "variance",
                 backend: str = "auto", onnx: OnnxOptions = OnnxOptions()):
        if method not in METHODS:
            raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
        if passes < 1:
            raise InputError(f"--samples must be at least 1, got {passes}")
        arch = "mgnet" if method == "mgnet" else "unet"
        if not models:
            if method == "ensemble":
                raise InputError("--method ensemble needs --model for each member (e.g. from bench uncertainty)")
            models = [shipped_model(arch)]
        if method != "ensemble" and len(models) != 1:
            raise InputError(f"--method {method} takes one --model, got {len(models)}")
        self.nets = [load_network(m, arch=arch) for m in models]
        self.method, self.passes, self.axis, self.uncertainty = method, passes, axis, uncertainty
        if backend not in ("auto", "torch", "onnx"):
            raise InputError(f"--backend must be auto, torch or onnx, got {backend!r}")
        if backend == "auto":
            backend = "onnx" if _has_onnxruntime() else "torch"
        check_precision(onnx.precision)
        if onnx.precision == "int8":
            lacking = [n for n in self.nets if not getattr(n, "int8", None)]
            if backend != "onnx" or method == "mcdropout" or lacking:
                raise InputError("--precision int8 needs ONNX Runtime, a method other than mcdropout and a model "
                                 "with an int8 calibration (segrefine calibrate)"
                                 + (f"; {lacking[0].source} has none" if lacking else ""))
        self.backend, self.onnx = backend, onnx

    def __call__(self, image: np.ndarray, *, keep_samples: bool = False) -> Prediction:
        kw = dict(method=self.method, axis=self.axis, uncertainty=self.uncertainty,
                  keep_samples=keep_samples, backend=self.backend, onnx=self.onnx)
        if self.method == "mcdropout":
            return predict_volume(image, self.nets, passes=self.passes, dropout=True, **kw)
        return predict_volume(image, self.nets, **kw)

    @property
    def num_parameters(self) -> int:
        return sum(sum(p.numel() for p in n.parameters()) for n in self.nets)


@functools.lru_cache(maxsize=4)
def shared_predictor(method: str = "mgnet", model: str | None = None, axis: int = 2) -> Predictor:
    """One :class:`Predictor` per (method, model, axis) for a long-running process (the web
    app): the networks and their ONNX Runtime sessions are loaded once, not per request."""
    return Predictor(method, models=[model] if model else None, axis=axis)


def warm_up(method: str = "mgnet", shape=(64, 64, 2)) -> float:
    """Load the shared predictor and run it once on a blank volume (export, session set-up);
    returns the seconds taken."""
    t0 = time.perf_counter()
    shared_predictor(method)(np.zeros(shape, np.float32))
    return time.perf_counter() - t0
