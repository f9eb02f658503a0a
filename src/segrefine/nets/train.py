"""Training of the U-Net and MG-Net on a Decathlon-layout dataset with a split file.

2D slices along the last axis; random patches with flips, intensity scaling and
noise; Dice loss applied to each head and averaged (the paper's loss); Adam;
validation Dice (whole volumes, mean probability > 0.5) after every epoch and
the best checkpoint kept. Seeds fix the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from segrefine import io
from segrefine.datasets import Case
from segrefine.metrics import dice
from segrefine.nets.card import with_val_dice
from segrefine.nets.checkpoint import save_checkpoint
from segrefine.nets.segnet import NetConfig, GroupedUNet, mgnet_config, unet_config
from segrefine.preprocess import normalise, pad_to_multiple, to_slices

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    arch: str = "mgnet"
    epochs: int = 12
    iterations_per_epoch: int = 150
    batch_size: int = 24
    patch: tuple[int, int] | None = None  # None: the largest slice padded to the net's multiple
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    axis: int = 2
    multiclass: bool = False
    threads: int = 0
    splits: dict = field(default_factory=dict)
    net_options: dict = field(default_factory=dict)  # NetConfig fields that differ (ablations)


def _config_for(arch: str, num_classes: int, options: dict | None = None) -> NetConfig:
    if arch == "mgnet":
        cfg = mgnet_config(num_classes=num_classes)
    elif arch == "unet":
        cfg = unet_config(num_classes=num_classes)
    else:
        raise ValueError(f"--arch must be mgnet or unet, got {arch!r}")
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (options or {}).items()}
    return replace(cfg, **options)


def load_slices(cases: list[Case], axis: int, multiclass: bool):
    """Normalised image slices and label slices of all cases (lists of (H, W) arrays)."""
    images, labels = [], []
    for case in cases:
        img = normalise(io.load(case.image).array)
        lab = np.asarray(io.load(case.label, finite=False).array)
        lab = lab.astype(np.int64) if multiclass else (lab > 0).astype(np.int64)
        images.extend(to_slices(img, axis))
        labels.extend(to_slices(lab, axis))
    return images, labels


def _sample_batch(rng: np.random.Generator, images, labels, batch: int, patch):
    ph, pw = patch
    xb = np.zeros((batch, 1, ph, pw), np.float32)
    yb = np.zeros((batch, ph, pw), np.int64)
    for b in range(batch):
        i = int(rng.integers(len(images)))
        img, lab = images[i], labels[i]
        h, w = img.shape
        # random placement of the patch; parts outside the slice are zero
        y0 = int(rng.integers(min(0, h - ph), max(0, h - ph) + 1))
        x0 = int(rng.integers(min(0, w - pw), max(0, w - pw) + 1))
        sy, sx = max(y0, 0), max(x0, 0)
        ey, ex = min(y0 + ph, h), min(x0 + pw, w)
        xb[b, 0, sy - y0:ey - y0, sx - x0:ex - x0] = img[sy:ey, sx:ex]
        yb[b, sy - y0:ey - y0, sx - x0:ex - x0] = lab[sy:ey, sx:ex]
        if rng.random() < 0.5:
            xb[b], yb[b] = xb[b][:, ::-1], yb[b][::-1]
        if rng.random() < 0.5:
            xb[b], yb[b] = xb[b][:, :, ::-1], yb[b][:, ::-1]
        xb[b] = xb[b] * rng.uniform(0.85, 1.15) + rng.uniform(-0.15, 0.15)
        xb[b] += rng.normal(0, 0.05, size=xb[b].shape).astype(np.float32)
    return torch.from_numpy(xb), torch.from_numpy(yb)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss on every foreground class, per head, averaged over heads.

    ``logits`` ``(B, heads, classes, H, W)``; ``target`` ``(B, H, W)`` integer labels.
    """
    prob = torch.softmax(logits, dim=2)
    classes = logits.shape[2]
    onehot = torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float()
    onehot = onehot.unsqueeze(1)  # broadcast over heads
    dims = (0, 3, 4)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dsc = (2 * inter + 1e-5) / (denom + 1e-5)  # (heads, classes)
    return 1.0 - dsc[:, 1:].mean()


def cosine_schedule(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay of the learning rate over ``total`` steps, to 5 % of its start."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, total) / total)) * 0.95 + 0.05)


def train_step(net, opt, sched, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimiser step on the Dice loss of batch ``x`` against labels ``y``; the loss."""
    loss = dice_loss(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


@torch.inference_mode()
def validate(net: GroupedUNet, cases_slices, axis: int) -> float:
    """Mean whole-structure Dice over validation volumes (mean of heads > 0.5)."""
    net.eval()
    scores = []
    for img_slices, lab in cases_slices:
        padded, crop = pad_to_multiple(img_slices, net.multiple)
        logits = net(torch.from_numpy(padded[:, None]))
        prob = torch.softmax(logits, dim=2).mean(1)
        pred = prob.argmax(1).numpy()[:, crop[0], crop[1]]
        scores.append(dice(pred > 0, lab > 0))
    net.train()
    return float(np.mean(scores))


def train(train_cases: list[Case], val_cases: list[Case], out: str | Path, cfg: TrainConfig,
          *, progress: Callable[[int, int, dict], None] | None = None, card: dict | None = None) -> dict:
    """Train a network and save the best checkpoint (by validation Dice) to ``out``.

    Returns the training summary stored in the checkpoint. ``card`` (from
    :func:`segrefine.nets.card.build_card`) is stored with every saved checkpoint,
    with its ``val_dice`` filled in.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    images, labels = load_slices(train_cases, cfg.axis, cfg.multiclass)
    num_classes = int(max(lab.max() for lab in labels)) + 1 if cfg.multiclass else 2
    net_cfg = _config_for(cfg.arch, num_classes, cfg.net_options)
    net = GroupedUNet(net_cfg)
    if cfg.patch is None:
        # train on the same canvas the predictor pads slices to, so instance
        # normalisation sees the same context at training and inference
        m = net.multiple
        hmax = max(im.shape[0] for im in images)
        wmax = max(im.shape[1] for im in images)
        cfg.patch = (min(-(-hmax // m) * m, 160), min(-(-wmax // m) * m, 160))
    val = []
    for case in val_cases:
        img = to_slices(normalise(io.load(case.image).array), cfg.axis)
        lab = to_slices(np.asarray(io.load(case.label, finite=False).array), cfg.axis)
        val.append((np.ascontiguousarray(img), lab))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.iterations_per_epoch
    sched = cosine_schedule(opt, total)
    history, best = [], -1.0
    start = time.time()
    net.train()
    for epoch in range(cfg.epochs):
        losses = []
        for _ in range(cfg.iterations_per_epoch):
            x, y = _sample_batch(rng, images, labels, cfg.batch_size, cfg.patch)
            losses.append(train_step(net, opt, sched, x, y))
            if progress:
                progress(1, total, {})
        val_dice = validate(net, val, cfg.axis) if val else float("nan")
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": val_dice,
                  "seconds": round(time.time() - start, 1)}
        history.append(record)
        log.info("epoch %d loss %.4f val Dice %.4f", epoch + 1, record["loss"], val_dice)
        if progress:
            progress(0, total, record)
        if val_dice > best or not val:
            best = val_dice
            summary = {"train": {**asdict(cfg), "patch": list(cfg.patch)},
                       "history": history, "best_epoch": epoch + 1, "best_val_dice": best,
                       "train_cases": len(train_cases), "val_cases": len(val_cases)}
            params = sum(p.numel() for p in net.parameters())
            save_checkpoint(net, out, summary, card=with_val_dice(card, best, params))
    return summary
