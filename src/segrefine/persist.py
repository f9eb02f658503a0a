"""A session's files: undo patches, snapshots, and the reading of the older full-rewrite format.

A :class:`Patch` is what one action changed on one slice: the bounding box of the change
and the mask and scribble pixels inside it before and after, zlib-compressed. Patches are
the undo history and the payloads of the session journal (:mod:`segrefine.journal`).

A snapshot (``snapshot.npz``) holds the whole state at a journal sequence number: the mask
and scribble volumes (zlib level 1: a 512x512x300 mask takes ~0.3 s and well under 1 MB),
the JSON state (``seq``, accepted slices, undo pointer, queue, maps file) and every patch of
the undo history. :func:`write_snapshot` replaces it atomically and durably.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segrefine.errors import InputError
from segrefine.journal import write_durable


def bbox(diff: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1), half-open, of the True pixels of a 2D array; None if none."""
    if not diff.any():
        return None
    rows = np.flatnonzero(diff.any(1))
    cols = np.flatnonzero(diff.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@dataclass
class Patch:
    """One action on slice ``index`` along ``axis``: the pixels inside ``bbox`` before and
    after, as ``data`` = zlib(mask before, mask after, scribbles before, scribbles after)."""

    kind: str
    axis: int
    index: int
    bbox: tuple[int, int, int, int] | None
    data: bytes

    @classmethod
    def make(cls, kind: str, axis: int, index: int, mask_before: np.ndarray, mask_after: np.ndarray,
             scr_before: np.ndarray, scr_after: np.ndarray, *,
             within: tuple[int, int, int, int] | None | str = "slice") -> Patch:
        """The patch between the before and after slices. ``within``: the box a verb knows its
        change to lie in (only that part is compared: slice views of a large volume are
        strided, reading all of them costs milliseconds), None when nothing changed, or
        ``"slice"`` to compare whole slices."""
        if within is None:
            return cls(kind, axis, index, None, b"")
        r0, r1, c0, c1 = (0, mask_before.shape[0], 0, mask_before.shape[1]) if within == "slice" else within
        arrays = [a[r0:r1, c0:c1] for a in (mask_before, mask_after, scr_before, scr_after)]
        box = bbox((arrays[0] != arrays[1]) | (arrays[2] != arrays[3]))
        if box is None:
            return cls(kind, axis, index, None, b"")
        b0, b1, d0, d1 = box
        parts = [np.ascontiguousarray(a[b0:b1, d0:d1], dtype=np.uint8).tobytes() for a in arrays]
        return cls(kind, axis, index, (r0 + b0, r0 + b1, c0 + d0, c0 + d1),
                   zlib.compress(b"".join(parts), 1))

    def header(self) -> dict:
        return {"kind": self.kind, "axis": self.axis, "index": self.index,
                "bbox": list(self.bbox) if self.bbox else None, "size": len(self.data)}

    @classmethod
    def from_header(cls, header: dict, data: bytes) -> Patch:
        box = header.get("bbox")
        return cls(str(header["kind"]), int(header["axis"]), int(header["index"]),
                   tuple(int(v) for v in box) if box else None, bytes(data))

    def apply(self, mask_slice: np.ndarray, scr_slice: np.ndarray, which: str) -> None:
        """Write the ``which`` ("before" or "after") pixels into the two slice views."""
        if self.bbox is None:
            return
        r0, r1, c0, c1 = self.bbox
        n = (r1 - r0) * (c1 - c0)
        flat = np.frombuffer(zlib.decompress(self.data), np.uint8)
        if flat.size != 4 * n:
            raise InputError(f"undo patch of slice {self.index} is damaged ({flat.size} bytes, {4 * n} expected)")
        mb, ma, sb, sa = (flat[i * n:(i + 1) * n].reshape(r1 - r0, c1 - c0) for i in range(4))
        mask_slice[r0:r1, c0:c1] = mb if which == "before" else ma
        scr_slice[r0:r1, c0:c1] = sb if which == "before" else sa


def write_snapshot(path: Path, mask: np.ndarray, scribbles: np.ndarray, state: dict,
                   history: list[Patch]) -> int:
    """Replace ``path`` with the whole state (durably, see module docstring); returns its bytes."""
    def pack(array: np.ndarray) -> np.ndarray:
        return np.frombuffer(zlib.compress(np.ascontiguousarray(array, dtype=np.uint8), 1), np.uint8)

    data = b"".join(p.data for p in history)
    arrays = {"mask_z": pack(mask), "scribbles_z": pack(scribbles),
              "state": np.array(json.dumps(state)),
              "history_index": np.array(json.dumps([p.header() for p in history])),
              "history_data": np.frombuffer(data, np.uint8) if data else np.zeros(0, np.uint8)}
    return write_durable(path, writer=lambda fh: np.savez(fh, **arrays))


def read_snapshot(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, dict, list[Patch]]:
    """``(mask, scribbles, state, history)`` of a snapshot written by :func:`write_snapshot`."""
    try:
        with np.load(path) as z:
            mask = np.frombuffer(zlib.decompress(z["mask_z"].tobytes()), np.uint8)
            scribbles = np.frombuffer(zlib.decompress(z["scribbles_z"].tobytes()), np.uint8)
            state = json.loads(str(z["state"]))
            index = json.loads(str(z["history_index"]))
            data = z["history_data"].tobytes()
    except (OSError, ValueError, KeyError, zlib.error) as exc:
        raise InputError(f"{path}: damaged session snapshot ({exc})") from None
    n = int(np.prod(shape))
    if mask.size != n or scribbles.size != n:
        raise InputError(f"{path}: snapshot volumes do not have the session's shape {tuple(shape)}")
    history, pos = [], 0
    for header in index:
        history.append(Patch.from_header(header, data[pos:pos + header["size"]]))
        pos += header["size"]
    return mask.reshape(shape).copy(), scribbles.reshape(shape).copy(), state, history


def read_v1(folder: Path) -> tuple[np.ndarray, np.ndarray, dict, list[Patch]]:
    """``(mask, scribbles, state, history)`` of a session in the first format (``state.npz``
    rewritten whole after every action, ``history/NNNNNN.npz`` with whole slices)."""
    with np.load(folder / "state.npz") as st:
        mask, scribbles = st["mask"].copy(), st["scribbles"].copy()
        state = json.loads(str(st["state"]))
    history = []
    for entry in range(int(state["history_len"])):
        with np.load(folder / "history" / f"{entry:06d}.npz") as h:
            history.append(Patch.make(str(h["kind"]), int(h["axis"]), int(h["index"]), h["mask_before"],
                                      h["mask_after"], h["scr_before"], h["scr_after"]))
    return mask, scribbles, state, history
