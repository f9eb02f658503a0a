"""R-Net's network and training loop (the DeepIGeoS-style refinement baseline).

The training data (MG-Net's predictions with simulated scribbles on its errors)
are made by :func:`segrefine.refine.rnet.training_slices`, above this layer; here
are the network's configuration, the input padding and the loop that fits it:
Dice loss, random placement on a fixed canvas with flips, Adam with cosine
decay, the checkpoint with the best validation slice Dice kept.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from segrefine.metrics import dice
from segrefine.nets.card import with_val_dice
from segrefine.nets.checkpoint import save_checkpoint
from segrefine.nets.segnet import GroupedUNet, unet_config
from segrefine.nets.train import cosine_schedule, train_step


def pad_inputs(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad ``(4, H, W)`` inputs to a multiple: image and P with 0, geodesic maps with 1 (far)."""
    from segrefine.preprocess import pad_to_multiple

    padded, crop = pad_to_multiple(x, multiple)
    far = np.ones(padded.shape[1:], bool)
    far[crop] = False
    padded[2:, far] = 1.0
    return padded, crop


def rnet_config() -> object:
    cfg = unet_config(base=16, dropout=(0.0, 0.1, 0.2, 0.2, 0.2))
    cfg.arch, cfg.in_channels = "rnet", 4
    return cfg


def fit_rnet(xs: list, ys: list, vx: list, vy: list, out: Path, *, epochs: int = 10,
             iterations: int = 100, batch_size: int = 16, lr: float = 1e-3, seed: int = 0, log=print,
             card: dict | None = None, t0: float | None = None) -> dict:
    """Fit R-Net to inputs ``xs`` (4, H, W) and targets ``ys`` (H, W), validate on ``vx``/``vy``
    after every epoch, and save the best checkpoint to ``out`` (with ``card``, its val Dice
    filled in). ``t0``: when the run started (the seconds in the history count from it)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.time() if t0 is None else t0
    net = GroupedUNet(rnet_config())
    m = net.multiple
    ph = -(-max(x.shape[1] for x in xs) // m) * m
    pw = -(-max(x.shape[2] for x in xs) // m) * m
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
    total = epochs * iterations
    sched = cosine_schedule(opt, total)

    def canvas(x, y):
        c, h, w = x.shape
        xb = np.zeros((c, ph, pw), np.float32)
        xb[2:] = 1.0  # geodesic "far" outside the slice
        yb = np.zeros((ph, pw), np.int64)
        oy, ox = int(rng.integers(0, ph - h + 1)), int(rng.integers(0, pw - w + 1))
        xb[:, oy:oy + h, ox:ox + w] = x
        yb[oy:oy + h, ox:ox + w] = y
        if rng.random() < 0.5:
            xb, yb = xb[:, ::-1], yb[::-1]
        if rng.random() < 0.5:
            xb, yb = xb[:, :, ::-1], yb[:, ::-1]
        return xb, yb

    def val_dice() -> float:
        net.eval()
        scores = []
        with torch.inference_mode():
            for x, y in zip(vx, vy):
                padded, crop = pad_inputs(x, m)
                pred = net(torch.from_numpy(np.ascontiguousarray(padded[None])))[0, 0].argmax(0).numpy()
                scores.append(dice(pred[crop[0], crop[1]] > 0, y > 0))
        net.train()
        return float(np.mean(scores))

    history, best = [], -1.0
    net.train()
    for epoch in range(epochs):
        losses = []
        for _ in range(iterations):
            idx = rng.integers(len(xs), size=batch_size)
            pairs = [canvas(xs[i], ys[i]) for i in idx]
            xb = torch.from_numpy(np.ascontiguousarray(np.stack([p[0] for p in pairs])))
            yb = torch.from_numpy(np.ascontiguousarray(np.stack([p[1] for p in pairs])))
            losses.append(train_step(net, opt, sched, xb, yb))
        vd = val_dice()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_slice_dice": vd,
                        "seconds": round(time.time() - t0, 1)})
        log(f"R-Net epoch {epoch + 1}: loss {np.mean(losses):.4f}, val slice Dice {vd:.4f}")
        if vd > best:
            best = vd
            summary = {"train": {"epochs": epochs, "iterations_per_epoch": iterations, "batch_size": batch_size,
                                 "lr": lr, "seed": seed, "canvas": [ph, pw]},
                       "history": history, "best_val_slice_dice": best, "train_slices": len(xs)}
            save_checkpoint(net, out, summary,
                            card=with_val_dice(card, best, sum(p.numel() for p in net.parameters())))
    return summary
