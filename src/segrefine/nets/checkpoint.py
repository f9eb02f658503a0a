"""Checkpoints that carry their network configuration.

A checkpoint is a ``torch.save`` dict: ``format`` (``"segrefine-net/1"``),
``config`` (:class:`NetConfig` as a dict), ``state_dict`` (fp16 floating
tensors, to keep the shipped models small), ``summary`` (training settings
and history), ``card`` (the model card, :mod:`segrefine.nets.card`; absent
in checkpoints written before cards existed: :func:`write_card` adds one) and
``int8`` (optional: the activation ranges for int8 inference,
:mod:`segrefine.nets.quantize`; :func:`write_calibration` adds them).
Loading needs nothing else.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from segrefine.errors import InputError
from segrefine.io import atomic_path
from segrefine.nets.segnet import NetConfig, GroupedUNet

FORMAT = "segrefine-net/1"


def save_checkpoint(net: GroupedUNet, path: str | Path, summary: dict | None = None,
                    card: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "config": net.config.to_dict(), "state_dict": state,
               "summary": summary or {}}
    if card is not None:
        payload["card"] = card
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def write_card(path: str | Path, card: dict) -> Path:
    """Store ``card`` in an existing checkpoint (weights, configuration and summary unchanged)."""
    path = Path(path)
    payload = read_checkpoint(path)
    payload["card"] = card
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def write_calibration(path: str | Path, calibration: dict, out: str | Path | None = None) -> Path:
    """Store the int8 ``calibration`` (:func:`segrefine.nets.quantize.calibrate`) in the
    checkpoint ``path``, or in a copy of it at ``out`` (weights, configuration, summary and
    card unchanged)."""
    payload = read_checkpoint(path)
    payload["int8"] = calibration
    path = Path(out if out is not None else path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a segrefine checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a segrefine checkpoint (format {FORMAT} expected)")
    return payload


def load_network(path: str | Path, *, arch: str | None = None) -> GroupedUNet:
    """Rebuild the network stored in ``path``; with ``arch``, refuse another architecture."""
    payload = read_checkpoint(path)
    config = NetConfig.from_dict(payload["config"])
    if arch is not None and config.arch != arch:
        raise InputError(f"{path}: checkpoint holds a {config.arch} network, {arch} expected")
    net = GroupedUNet(config)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()})
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the stored configuration "
                         f"({str(exc).splitlines()[0]})") from None
    net.eval()
    net.summary = payload.get("summary", {})
    net.card = payload.get("card")
    net.int8 = payload.get("int8")
    net.source = str(path)
    return net


#: the models shipped inside the package, by short name; ``mgnet``, ``unet`` and ``rnet`` are
#: the hippocampus defaults, ``phantom`` the MG-Net of the no-shared-data demo
SHIPPED = {"mgnet": "mgnet_hippocampus.pt", "unet": "unet_hippocampus.pt", "rnet": "rnet_hippocampus.pt",
           "phantom": "mgnet_phantom.pt"}


def model_path(model: str | Path) -> Path:
    """A checkpoint path, or the shipped model of that short name (``phantom``, ...) when no
    such file exists."""
    path = Path(model)
    if not path.exists() and str(model) in SHIPPED:
        return shipped_model(str(model))
    return path


def shipped_model(name: str) -> Path:
    """Path of a model shipped inside the package (a key of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise InputError(f"no shipped model named {name!r} (have {', '.join(SHIPPED)})")
    path = Path(str(resources.files("segrefine") / "models" / SHIPPED[name]))
    if not path.exists():
        raise InputError(f"{path}: shipped model missing; reinstall segrefine or pass --model")
    return path
