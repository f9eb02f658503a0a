"""R-Net: a DeepIGeoS-style refinement network (Wang et al., TPAMI 2019), our baseline.

A small U-Net (the dropout U-Net backbone, base 16 channels, 4 input channels)
takes, for one slice, the z-scored image, the CNN's foreground probability and
the geodesic distance maps of the foreground and background scribbles, and
predicts the refined segmentation. Geodesic maps use λ = 0.5 and are capped at
``D_CAP`` pixels and scaled to [0, 1] (an empty scribble set gives 1
everywhere). Scribbles are then enforced as hard constraints.

Training (:func:`train_rnet`): the shipped MG-Net's predictions on the ``train``
split, one set of simulated scribbles (:mod:`segrefine.interaction`) on the
error of every slice where MG-Net is wrong, Dice loss, the same sampler as the
segmentation networks.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from segrefine.errors import InputError
from segrefine.geodesic import geodesic_distance
from segrefine.nets.rnet import fit_rnet, pad_inputs, rnet_config  # noqa: F401 (rnet_config: public)
from segrefine.nets.segnet import GroupedUNet

D_CAP = 20.0
GEODESIC_GRADIENT_WEIGHT = 0.5


def rnet_inputs(image: np.ndarray, prob: np.ndarray, scribbles: np.ndarray, *, spacing=None) -> np.ndarray:
    """The 4 input channels ``(4, H, W)`` float32: image (z-scored), P, geodesic F, geodesic B."""
    img = np.asarray(image, np.float32)
    img = (img - img.mean()) / (img.std() + 1e-6)
    chans = [img, np.asarray(prob, np.float32)]
    for lab in (1, 2):
        seeds = scribbles == lab
        if seeds.any():
            g = geodesic_distance(img, seeds, spacing=spacing, gradient_weight=GEODESIC_GRADIENT_WEIGHT)
            chans.append(np.minimum(g, D_CAP).astype(np.float32) / D_CAP)
        else:
            chans.append(np.ones(img.shape, np.float32))
    return np.stack(chans)


@lru_cache(maxsize=4)
def _load(path: str) -> GroupedUNet:
    from segrefine.nets.checkpoint import load_network

    return load_network(path, arch="rnet")


def rnet_refine(image: np.ndarray, prob: np.ndarray, scribbles: np.ndarray, *, spacing=None,
                model: str | Path | None = None, keep_scribbles: bool = True) -> np.ndarray:
    """Refined bool mask ``(H, W)`` of one slice; the scribbled pixels are set to their
    label at the end unless ``keep_scribbles`` is False (the network's own output)."""
    from segrefine.nets.checkpoint import shipped_model
    from segrefine.validate import as_probability, as_scribbles

    prob = as_probability(prob)
    scr = as_scribbles(scribbles, prob.shape, ref="prob")
    if np.shape(image) != prob.shape:
        raise InputError(f"image shape {np.shape(image)} differs from prob shape {prob.shape}")
    net = _load(str(model or shipped_model("rnet")))
    x = rnet_inputs(image, prob, scr, spacing=spacing)
    padded, crop = pad_inputs(x, net.multiple)
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(padded[None])))
    mask = logits[0, 0].argmax(0).numpy()[crop[0], crop[1]] > 0
    if keep_scribbles:
        mask[scr == 1] = True
        mask[scr == 2] = False
    return mask


def training_slices(cases, *, axis: int = 2, seed: int = 0, log=print):
    """(inputs (4, H, W), target (H, W)) for every slice where the shipped MG-Net errs."""
    from segrefine import io
    from segrefine.interaction import simulate_scribbles
    from segrefine.preprocess import to_slices
    from segrefine.uncertainty import Predictor

    predictor = Predictor("mgnet", axis=axis)
    xs, ys = [], []
    for ci, case in enumerate(cases):
        vol = io.load(case.image)
        gt = np.asarray(io.load(case.label, finite=False).array) > 0
        pred = predictor(vol.array)
        sp = tuple(s for i, s in enumerate(vol.spacing) if i != axis)
        for k, (img, p, lab, g) in enumerate(zip(to_slices(vol.array, axis), to_slices(pred.prob, axis),
                                                  to_slices(pred.label, axis), to_slices(gt, axis))):
            if not (lab > 0).any() and not g.any():
                continue
            scr = simulate_scribbles(lab > 0, g, seed=seed + 1000 * ci + k, min_size=4)
            if not scr.any():
                continue
            xs.append(rnet_inputs(img, p, scr, spacing=sp))
            ys.append(g.astype(np.int64))
        if log and (ci + 1) % 40 == 0:
            log(f"  R-Net data: {ci + 1}/{len(cases)} cases, {len(xs)} slices")
    return xs, ys


def train_rnet(train_cases, val_cases, out: Path, *, epochs: int = 10, iterations: int = 100,
               batch_size: int = 16, lr: float = 1e-3, seed: int = 0, log=print,
               card: dict | None = None) -> dict:
    """Train R-Net on simulated interactions (:func:`training_slices`) with
    :func:`segrefine.nets.rnet.fit_rnet`, keeping the checkpoint with the best val Dice."""
    t0 = time.time()
    xs, ys = training_slices(train_cases, seed=seed, log=log)
    vx, vy = training_slices(val_cases, seed=seed + 1, log=None)
    log(f"R-Net: {len(xs)} training slices, {len(vx)} validation slices ({time.time() - t0:.0f} s)")
    return fit_rnet(xs, ys, vx, vy, out, epochs=epochs, iterations=iterations, batch_size=batch_size,
                    lr=lr, seed=seed, log=log, card=card, t0=t0)
