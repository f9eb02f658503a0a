"""A deterministic stream of session verbs, and a digest of everything a session persists.

Used by tests/test_persistence.py, in-process and as the process it kills::

    python tests/session_ops.py FOLDER FIRST_STEP COMPACT_RECORDS

opens the session in FOLDER, runs steps FIRST_STEP, FIRST_STEP + 1, ... for ever and
prints ``ack STEP DIGEST`` after each verb has returned (i.e. was acknowledged).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

SHAPE = (48, 40, 10)  # axis 2: ten 48x40 slices


def make_session(folder: Path):
    """A session with an elliptic blob as image and maps (the same for every call)."""
    from segrefine import io
    from segrefine.session import Session

    grid = np.indices(SHAPE, dtype=np.float32)
    d = ((grid[0] - 24) / 12) ** 2 + ((grid[1] - 20) / 10) ** 2
    prob = (1 / (1 + np.exp((d - 1) * 6))).astype(np.float32)
    image = (prob * 200 + np.random.default_rng(0).normal(0, 10, SHAPE)).astype(np.int16)
    weight = np.linspace(0.2, 1.0, SHAPE[2], dtype=np.float32)
    s = Session.create(folder, io.Volume(image), method="graphcut")
    s.set_maps(prob, (prob * (1 - prob) * weight).astype(np.float32))
    return s


def do_step(s, step: int) -> str:
    """Verb number ``step`` (the same verb with the same arguments every time)."""
    rng = np.random.default_rng(1000 + step)
    r, k = rng.random(), int(rng.integers(SHAPE[2]))
    if r < 0.45:
        pts = rng.integers(0, SHAPE[:2], size=(int(rng.integers(1, 12)), 2))
        s.add_scribble(k, pts.tolist(), int(rng.integers(0, 3)), radius=int(rng.integers(0, 3)))
        return "scribble"
    if r < 0.65:
        s.refine(k)
        return "refine"
    if r < 0.78:
        s.undo()
        return "undo"
    if r < 0.86:
        s.redo()
        return "redo"
    if r < 0.93:
        s.accept(k, needed_refinement=bool(rng.integers(2)))
        return "accept"
    s.next_suggestion()
    return "next"


def digest(s) -> str:
    """Everything that must survive a reopen: volumes, state, queue and the undo history."""
    h = hashlib.sha256()
    h.update(s.mask.tobytes())
    h.update(s.scribbles.tobytes())
    state = {"accepted": s.accepted, "pointer": s.pointer, "history_len": s.history_len,
             "queue": s.queue.state() if s.queue else None}
    h.update(json.dumps(state, sort_keys=True).encode("utf-8"))
    for patch in s.history[: s.history_len]:
        h.update(json.dumps(patch.header(), sort_keys=True).encode("utf-8"))
        h.update(patch.data)
    return h.hexdigest()


def main(folder: str, first: str, compact_records: str) -> None:
    from segrefine.session import Session

    Session.compact_records = int(compact_records)
    s = Session.open(folder)
    step = int(first)
    while True:
        do_step(s, step)
        print(f"ack {step} {digest(s)}", flush=True)
        step += 1


if __name__ == "__main__":
    main(*sys.argv[1:4])
