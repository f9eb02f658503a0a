"""The interactive session engine: one object behind the CLI, the simulated user and the web app.

Verbs (after nnInteractive's session, built around slices and suggestions)::

    s = Session.create(folder, "case.nii.gz")        # or Session.open(folder)
    s.predict()                                      # MG-Net, or s.set_maps(prob, uncertainty)
    k = s.next_suggestion()                          # most uncertain slice not yet shown
    s.add_scribble(k, points, label=1)               # 1 foreground, 2 background, 0 erase
    s.refine(k)                                      # I-DRLSE (or graphcut, rnet, paint) on that slice
    s.undo(); s.redo()
    s.accept(k)                                      # the slice is done
    s.save_mask("mask.nii.gz")

Every verb returns a :class:`Change` (axis, slice index, the in-slice bounding box
that changed) so a viewer redraws only that.

Persistence: the folder holds ``meta.json`` (static: shape, axis, method),
``image.nii.gz`` (the input, geometry kept), ``maps.npz`` (probability and
uncertainty), ``state.npz`` (mask, scribbles, accepted slices, queue, undo
pointer: written atomically after every change, so the session reopens exactly
where it was) and ``history/NNNNNN.npz`` (the before/after slices of each
action, written before ``state.npz`` points at them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.errors import InputError
from segrefine.guidance import DEFAULT_ORDER, ORDERS, SuggestionQueue, suggest
from segrefine.preprocess import normalise
from segrefine.refine.slice import DEFAULT_PRESET, REFINE_METHODS, preset_params, refine_slice
from segrefine.validate import image_map

FORMAT = "segrefine-session/1"


@dataclass
class Change:
    """What an action changed: ``kind``, slice ``axis`` and ``index`` (None = whole volume),
    ``bbox`` = (row0, row1, col0, col1) half-open in slice coordinates, or None if nothing changed."""

    kind: str
    axis: int | None = None
    index: int | None = None
    bbox: tuple[int, int, int, int] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _bbox(diff: np.ndarray) -> tuple[int, int, int, int] | None:
    if not diff.any():
        return None
    rows = np.flatnonzero(diff.any(1))
    cols = np.flatnonzero(diff.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _save_npz(path: Path, **arrays) -> None:
    """Uncompressed (compression cost ~15 ms per write on a 192x192x19 stack)."""
    with io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


class Session:
    """An interactive refinement session persisted in ``folder`` (see module docstring)."""

    def __init__(self, folder: Path, volume: io.Volume, meta: dict):
        self.folder = Path(folder)
        self.volume = volume
        self.meta = meta
        self.image = np.asarray(volume.array)
        self.norm = normalise(self.image)
        shape = self.image.shape
        self.prob = np.zeros(shape, np.float32)
        self.uncertainty = np.zeros(shape, np.float32)
        self.mask = np.zeros(shape, np.uint8)
        self.scribbles = np.zeros(shape, np.uint8)
        self.accepted: list[int] = []
        self.queue: SuggestionQueue | None = None
        self.suggestions: dict | None = None
        self.history_len = 0  # actions on disk
        self.pointer = 0  # actions applied (undo moves it back)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, folder: str | Path, image: str | Path | io.Volume, *, axis: int = 2,
               method: str = "idrlse", budget: float = 0.6, preset: str = DEFAULT_PRESET,
               order: str = DEFAULT_ORDER) -> Session:
        """Start a session on an image file (or a loaded :class:`Volume`)."""
        folder = Path(folder)
        if (folder / "meta.json").exists():
            raise InputError(f"{folder}: a session already exists there; open it instead")
        if axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2, got {axis}")
        if method not in REFINE_METHODS:
            raise InputError(f"method must be one of {', '.join(REFINE_METHODS)}, got {method!r}")
        if not 0 < budget <= 1:
            raise InputError(f"budget must be in (0, 1], got {budget}")
        if order not in ORDERS:
            raise InputError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        preset_params(preset, method)
        volume = io.load(image) if not isinstance(image, io.Volume) else image
        name = io.case_name(image) if not isinstance(image, io.Volume) else "image"
        io.check_writable_dir(folder)
        (folder / "history").mkdir(exist_ok=True)
        io.save(volume, folder / "image.nii.gz")
        meta = {"format": FORMAT, "name": name, "shape": list(volume.shape), "axis": axis,
                "method": method, "budget": budget, "preset": preset, "order": order, "spacing": list(volume.spacing),
                "created": time.time()}
        session = cls(folder, volume, meta)
        session._write_meta()
        session._write_state()
        return session

    @classmethod
    def open(cls, folder: str | Path) -> Session:
        """Reopen a persisted session exactly where it was."""
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise InputError(f"{folder}: no session here (meta.json missing)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise InputError(f"{folder}: not a segrefine session ({FORMAT} expected)")
        session = cls(folder, io.load(folder / "image.nii.gz"), meta)
        if (folder / "maps.npz").exists():
            with np.load(folder / "maps.npz") as maps:
                session.prob, session.uncertainty = maps["prob"], maps["uncertainty"]
            session._make_queue()
        with np.load(folder / "state.npz") as st:
            session.mask = st["mask"].copy()
            session.scribbles = st["scribbles"].copy()
            state = json.loads(str(st["state"]))
        session.accepted = state["accepted"]
        session.history_len, session.pointer = state["history_len"], state["pointer"]
        if session.queue is not None and state.get("queue"):
            q = state["queue"]
            session.queue.order = q.get("order", session.queue.order)  # the ranking made at predict time
            if q.get("expected") is not None:
                session.queue.expected = q["expected"]
            session.queue.position, session.queue.streak = q["position"], q["streak"]
            session.queue.stopped_early, session.queue.shown = q["stopped_early"], q["shown"]
        return session

    # ------------------------------------------------------------------ persistence
    def _write_meta(self) -> None:
        with io.atomic_path(self.folder / "meta.json") as tmp:
            tmp.write_text(json.dumps(self.meta, indent=1))

    def _write_state(self) -> None:
        state = {"accepted": self.accepted, "history_len": self.history_len, "pointer": self.pointer,
                 "queue": self.queue.state() if self.queue else None, "saved": time.time()}
        _save_npz(self.folder / "state.npz", mask=self.mask, scribbles=self.scribbles,
                  state=np.array(json.dumps(state)))

    # ------------------------------------------------------------------ maps and suggestions
    @property
    def axis(self) -> int:
        return int(self.meta["axis"])

    @property
    def spacing2d(self) -> tuple[float, float]:
        sp = self.meta["spacing"]
        return tuple(float(s) for i, s in enumerate(sp) if i != self.axis)

    def predict(self, *, model: str | Path | None = None) -> Change:
        """Run the shipped MG-Net (or a given checkpoint) for the initial mask and maps."""
        from segrefine.uncertainty import shared_predictor

        start = time.perf_counter()
        pred = shared_predictor("mgnet", str(model) if model else None, self.axis)(self.image)
        change = self.set_maps(pred.prob, pred.uncertainty, pred.label)
        change.seconds = time.perf_counter() - start
        return change

    def set_maps(self, prob: np.ndarray, uncertainty: np.ndarray, segmentation: np.ndarray | None = None) -> Change:
        """Use another model's probability and uncertainty (and optional segmentation)."""
        prob = image_map(prob, "prob", self.image.shape, unit_interval=True)
        uncertainty = image_map(uncertainty, "uncertainty", self.image.shape)
        seg = (prob > 0.5) if segmentation is None else (np.asarray(segmentation) > 0)
        self.prob, self.uncertainty = prob, uncertainty
        self.mask = seg.astype(np.uint8)
        self.scribbles[:] = 0
        self.accepted, self.history_len, self.pointer = [], 0, 0
        _save_npz(self.folder / "maps.npz", prob=prob, uncertainty=uncertainty)
        self._make_queue()
        self._write_state()
        return Change("predict")

    def _make_queue(self) -> None:
        self.suggestions = suggest(self.uncertainty, self.mask if self.mask.any() else self.prob > 0.5,
                                   prob=self.prob, order=self.meta.get("order", DEFAULT_ORDER),
                                   axis=self.axis, budget=float(self.meta["budget"]))
        self.queue = SuggestionQueue.from_suggestions(self.suggestions)

    def _require_maps(self) -> None:
        if self.queue is None:
            raise InputError("no prediction yet: call predict() or set_maps() first")

    def next_suggestion(self) -> int | None:
        """The next slice to check (None when the budget is used or the queue stopped early)."""
        self._require_maps()
        k = self.queue.next()
        self._write_state()
        return k

    def report(self, needed_refinement: bool) -> None:
        """Tell the queue whether the last suggested slice needed refinement (early stop)."""
        self._require_maps()
        self.queue.report(needed_refinement)
        self._write_state()

    # ------------------------------------------------------------------ slice access
    def _check_index(self, index: int, axis: int | None = None) -> int:
        axis = self.axis if axis is None else axis
        if axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2, got {axis}")
        n = self.image.shape[axis]
        if not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise InputError(f"slice index {index} outside 0..{n - 1} along axis {axis}")
        return axis

    def _view(self, array: np.ndarray, index: int, axis: int | None = None) -> np.ndarray:
        axis = self._check_index(index, axis)
        return np.moveaxis(array, axis, 0)[index]  # a view: writes go to the volume

    def slice_mask(self, index: int, axis: int | None = None) -> np.ndarray:
        return self._view(self.mask, index, axis).copy()

    def slice_scribbles(self, index: int, axis: int | None = None) -> np.ndarray:
        return self._view(self.scribbles, index, axis).copy()

    # ------------------------------------------------------------------ actions
    def _record(self, kind: str, index: int, axis: int, before_mask, before_scr, t0: float) -> Change:
        after_mask = self._view(self.mask, index, axis)
        after_scr = self._view(self.scribbles, index, axis)
        self.history_len = self.pointer + 1  # a new action drops the redo tail
        _save_npz(self.folder / "history" / f"{self.pointer:06d}.npz", axis=axis, index=index,
                  kind=np.array(kind), mask_before=before_mask, mask_after=after_mask.copy(),
                  scr_before=before_scr, scr_after=after_scr.copy())
        self.pointer += 1
        self._write_state()
        diff = (before_mask != after_mask) | (before_scr != after_scr)
        return Change(kind, axis, index, _bbox(diff), time.perf_counter() - t0)

    def add_scribble(self, index: int, points, label: int, *, axis: int | None = None,
                     radius: int = 0) -> Change:
        """Mark pixels of slice ``index``: ``points`` is a list of (row, col) or a bool (H, W) mask.

        ``label`` 1 = foreground, 2 = background, 0 = erase. ``radius`` thickens the stroke.
        """
        t0 = time.perf_counter()
        axis = self._check_index(index, axis)
        if label not in (0, 1, 2):
            raise InputError(f"scribble label must be 0 (erase), 1 (foreground) or 2 (background), got {label}")
        view = self._view(self.scribbles, index, axis)
        h, w = view.shape
        if isinstance(points, np.ndarray) and points.dtype == bool:
            if points.shape != view.shape:
                raise InputError(f"scribble mask shape {points.shape} differs from the slice's {view.shape}")
            sel = points
        else:
            pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
            if pts.size == 0:
                raise InputError("scribble has no points")
            bad = (pts[:, 0] < 0) | (pts[:, 0] >= h) | (pts[:, 1] < 0) | (pts[:, 1] >= w)
            if bad.any():
                r, c = pts[bad][0]
                raise InputError(f"scribble point ({r}, {c}) outside the {h}x{w} slice")
            sel = np.zeros((h, w), bool)
            sel[pts[:, 0], pts[:, 1]] = True
        if radius > 0:
            from scipy import ndimage

            sel = ndimage.binary_dilation(sel, iterations=radius)
        before_mask = self._view(self.mask, index, axis).copy()
        before_scr = view.copy()
        view[sel] = label
        return self._record("scribble", index, axis, before_mask, before_scr, t0)

    def refine(self, index: int, *, axis: int | None = None, method: str | None = None) -> Change:
        """Refine slice ``index`` from the CNN probability, the current mask and its scribbles."""
        t0 = time.perf_counter()
        self._require_maps()
        axis = self._check_index(index, axis)
        method = method or self.meta["method"]
        mask_view = self._view(self.mask, index, axis)
        scr = self._view(self.scribbles, index, axis).copy()
        before_mask = mask_view.copy()
        if scr.any():
            sp = tuple(float(s) for i, s in enumerate(self.meta["spacing"]) if i != axis)
            new = refine_slice(method, self._view(self.norm, index, axis),
                               self._view(self.prob, index, axis), before_mask > 0, scr, spacing=sp,
                               preset=self.meta.get("preset", DEFAULT_PRESET))
            mask_view[:] = new.astype(np.uint8)
        return self._record("refine", index, axis, before_mask, scr, t0)

    def undo(self) -> Change:
        """Undo the last action (scribble or refinement)."""
        if self.pointer == 0:
            return Change("undo")
        return self._step(self.pointer - 1, "before", -1, "undo")

    def redo(self) -> Change:
        if self.pointer >= self.history_len:
            return Change("redo")
        return self._step(self.pointer, "after", +1, "redo")

    def _step(self, entry: int, which: str, move: int, kind: str) -> Change:
        t0 = time.perf_counter()
        with np.load(self.folder / "history" / f"{entry:06d}.npz") as h:
            axis, index = int(h["axis"]), int(h["index"])
            mask_view = self._view(self.mask, index, axis)
            scr_view = self._view(self.scribbles, index, axis)
            diff = (mask_view != h[f"mask_{which}"]) | (scr_view != h[f"scr_{which}"])
            mask_view[:] = h[f"mask_{which}"]
            scr_view[:] = h[f"scr_{which}"]
        self.pointer += move
        self._write_state()
        return Change(kind, axis, index, _bbox(diff), time.perf_counter() - t0)

    def accept(self, index: int, *, needed_refinement: bool | None = None) -> Change:
        """Mark slice ``index`` (along the session axis) as checked; feeds the early stop."""
        self._check_index(index)
        if index not in self.accepted:
            self.accepted.append(int(index))
        if needed_refinement is not None and self.queue is not None:
            self.queue.report(needed_refinement)
        self._write_state()
        return Change("accept", self.axis, index)

    def save_mask(self, path: str | Path) -> Path:
        """Write the current mask as uint8 NIfTI with the image's geometry (atomically)."""
        return io.save(self.volume.with_array(self.mask.astype(np.uint8)), path, dtype=np.uint8)

    def status(self) -> dict:
        return {"name": self.meta["name"], "shape": self.meta["shape"], "axis": self.axis,
                "method": self.meta["method"], "preset": self.meta.get("preset", DEFAULT_PRESET),
                "budget": self.meta["budget"], "accepted": list(self.accepted), "can_undo": self.pointer > 0,
                "can_redo": self.pointer < self.history_len,
                "queue": self.queue.state() if self.queue else None}
