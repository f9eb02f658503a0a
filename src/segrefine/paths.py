"""Where the shared data lives (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    """``$SEGREFINE_SHARED_DATA``, else ``../shared/data`` beside the repo or the working folder.

    ``SEGREFINE_SHARED_DATA=none`` behaves as if the shared data were absent.
    """
    env = os.environ.get("SEGREFINE_SHARED_DATA")
    if env == "none":
        return None
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if (c / "hippocampus").is_dir():
            return c
    return None
