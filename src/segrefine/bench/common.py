"""What every benchmark records: the machine, the command line, and atomic JSON/Markdown output."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from segrefine.datasets import Case, load_splits, pair_folders, select
from segrefine.io import atomic_path


#: the instruction-set flags that decide the speed of the networks (int8 needs VNNI to pay)
SIMD_FLAGS = {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}


def machine() -> dict:
    import torch

    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == platform.processor():
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu_flags": sorted(flags & SIMD_FLAGS)}


def command_line() -> str:
    return " ".join(["segrefine"] + sys.argv[1:])


def write_json(path: Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=_default), encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj))


def cases_for(images: Path, labels: Path, split: str | None, splits_file: Path | None) -> list[Case]:
    """Cases of ``images``/``labels``, restricted to a split when one is named."""
    cases = pair_folders(images, labels)
    if split:
        splits_file = splits_file or Path(images).parent / "splits.json"
        cases = select(cases, load_splits(splits_file)[split], what=f"{splits_file}:{split}")
    return cases


def mean_sd(values) -> str:
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if arr.size == 0:
        return "–"
    return f"{arr.mean():.2f} ± {arr.std():.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def train_like_shipped_unet(dataset: Path, split: str, out: Path, *, seed: int | None = None) -> Path:
    """Train a U-Net on ``split`` with the shipped U-Net's stored settings (``val`` picks the
    checkpoint); ``seed`` overrides the shipped seed. Used for ensemble members and the
    low-data model."""
    from segrefine.datasets import split_cases
    from segrefine.nets.checkpoint import read_checkpoint, shipped_model
    from segrefine.nets.train import TrainConfig, train

    settings = dict(read_checkpoint(shipped_model("unet"))["summary"]["train"])
    settings.update(patch=None, splits={})
    if seed is not None:
        settings["seed"] = seed
    train(split_cases(dataset, split), split_cases(dataset, "val"), out, TrainConfig(**settings))
    return out
