"""Datasets in the Medical Segmentation Decathlon / nnU-Net layout, and split files.

A dataset folder holds ``imagesTr/`` + ``labelsTr/`` (or ``imagesTs/`` +
``labelsTs/``) with matching file names, and ``dataset.json``. nnU-Net's channel
suffix (``case_0000.nii.gz``) is accepted on images.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from segrefine.errors import InputError
from segrefine.io import case_name, is_image_file

_CHANNEL = re.compile(r"_(\d{4})$")


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path | None


def pair_folders(images: str | Path, labels: str | Path | None) -> list[Case]:
    """Cases from an image folder and an optional label folder (matched by case name)."""
    images = Path(images)
    if not images.is_dir():
        raise InputError(f"{images}: not a folder of images")
    label_map: dict[str, Path] = {}
    if labels is not None:
        labels = Path(labels)
        if not labels.is_dir():
            raise InputError(f"{labels}: not a folder of labels")
        label_map = {case_name(p): p for p in labels.iterdir() if is_image_file(p)}
    cases = []
    for path in sorted(p for p in images.iterdir() if is_image_file(p)):
        name = case_name(path)
        base = name
        channel = _CHANNEL.search(name)
        if name not in label_map and channel:
            if channel.group(1) != "0000":
                continue  # only the first channel of a multi-channel nnU-Net case
            base = name[: channel.start()]
        label = label_map.get(base)
        if labels is not None and label is None:
            raise InputError(f"{path}: no label file named {base} in {labels}")
        cases.append(Case(base, path, label))
    if not cases:
        raise InputError(f"{images}: folder holds no image files")
    return cases


def load_dataset(root: str | Path, *, test: bool = False) -> list[Case]:
    """All cases of a Decathlon-layout dataset (``imagesTr``/``labelsTr`` or the ``Ts`` pair)."""
    root = Path(root)
    suffix = "Ts" if test else "Tr"
    if not (root / f"images{suffix}").is_dir():
        raise InputError(f"{root}: no images{suffix}/ folder (Decathlon/nnU-Net layout expected)")
    labels = root / f"labels{suffix}"
    return pair_folders(root / f"images{suffix}", labels if labels.is_dir() else None)


def dataset_labels(root: str | Path) -> dict[int, str]:
    """The ``labels`` entry of ``dataset.json`` as {value: name}; {} when absent."""
    path = Path(root) / "dataset.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    labels = meta.get("labels", {})
    # Decathlon: {"0": "background"}; nnU-Net v2: {"background": 0}
    out = {}
    for key, value in labels.items():
        if str(key).isdigit():
            out[int(key)] = str(value)
        elif isinstance(value, int):
            out[value] = str(key)
    return out


def load_splits(path: str | Path) -> dict[str, list[str]]:
    """Read a split file ``{"train": [...], "val": [...], ...}`` (non-list keys ignored)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: split file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    return {k: list(v) for k, v in data.items() if isinstance(v, list)}


def select(cases: list[Case], names: list[str], *, what: str = "split") -> list[Case]:
    """The cases whose names are listed, in the list's order."""
    by_name = {c.name: c for c in cases}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(f"{what}: {len(missing)} cases not in the dataset, e.g. {missing[0]}")
    return [by_name[n] for n in names]


def split_cases(root: str | Path, split: str, splits_file: str | Path | None = None) -> list[Case]:
    """The cases of one split; the split file defaults to ``root/splits.json``."""
    splits_file = Path(splits_file) if splits_file else Path(root) / "splits.json"
    splits = load_splits(splits_file)
    if split not in splits:
        raise InputError(f"{splits_file}: no split named {split!r} (has {', '.join(splits)})")
    return select(load_dataset(root), splits[split], what=f"{splits_file}:{split}")
