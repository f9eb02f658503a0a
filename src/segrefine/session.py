"""The interactive session engine: one object behind the CLI, the simulated user and the web app.

Verbs (after nnInteractive's session, built around slices and suggestions)::

    s = Session.create(folder, "case.nii.gz")        # or Session.open(folder)
    s.predict()                                      # MG-Net, or s.set_maps(prob, uncertainty)
    k = s.next_suggestion()                          # most uncertain slice not yet shown
    s.add_scribble(k, points, label=1)               # 1 foreground, 2 background, 0 erase
    s.refine(k)                                      # I-DRLSE (or graphcut, rnet, paint) on that slice
    s.add_structure("posterior")                     # several structures: see segrefine.structures
    s.add_scribble(k, points, 1, structure=2); s.refine(k, structure=2, overwrite=False)
    s.undo(); s.redo()
    s.accept(k)                                      # the slice is done
    s.save_mask("mask.nii.gz")

The mask is a label map (0 background, a structure id per voxel; ``status()["structures"]``
names them); strokes, refinement and suggestions work on one structure at a time (the
``structure`` argument, default the first one) under the lock rule of
:mod:`segrefine.structures`. A single-label session is one structure, id 1.

Every verb returns a :class:`Change` (axis, slice index, the in-slice bounding box
that changed) so a viewer redraws only that.

Persistence (format ``segrefine-session/2``, docs/web.md): the folder holds
``meta.json`` (static: shape, axis, method; written last at creation, so its
presence means a complete session), ``image.nii.gz`` (the input, geometry kept),
``maps-<token>.npz`` (probability and uncertainty), ``snapshot.npz`` (the whole
state at a journal sequence number: mask and scribble volumes compressed, accepted
slices, queue, undo pointer and the undo history's patches) and ``journal.log``
(append-only: one record per verb after the snapshot, with the bounding-box
patch of the slice it changed; see :mod:`segrefine.journal`). A verb returns
after its record is fsync'ed (inside :meth:`Session.batch`, when the block ends), so
a process killed at any moment loses nothing a caller was told; reopening loads the
snapshot and replays the journal. When the
journal passes :attr:`Session.compact_bytes` or :attr:`Session.compact_records`,
a new snapshot is written and the journal starts empty (compaction). Sessions in
the first format (``state.npz`` rewritten whole after each action) are converted
when opened.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine import structures as st
from segrefine.errors import InputError
from segrefine.guidance import DEFAULT_ORDER, ORDERS, SuggestionQueue, suggest
from segrefine.journal import Journal, fsync_file, write_durable
from segrefine.persist import Patch, bbox, read_snapshot, read_v1, write_snapshot
from segrefine.preprocess import normalise
from segrefine.refine.slice import DEFAULT_PRESET, REFINE_METHODS, preset_params, refine_slice
from segrefine.validate import as_axis, as_choice, as_number, image_map

FORMAT = "segrefine-session/2"
FORMAT_V1 = "segrefine-session/1"  # state.npz rewritten whole per action; converted on open


@dataclass
class Change:
    """What an action changed: ``kind``, slice ``axis`` and ``index`` (None = whole volume),
    ``bbox`` = (row0, row1, col0, col1) half-open in slice coordinates, or None if nothing changed."""

    kind: str
    axis: int | None = None
    index: int | None = None
    bbox: tuple[int, int, int, int] | None = None
    seconds: float = 0.0
    warning: str | None = None  # predict: how the image differs from the model's training data

    def to_dict(self) -> dict:
        return asdict(self)


def updated(folder: Path) -> float:
    """When the session in ``folder`` last changed (modification time of its newest state file)."""
    times = [p.stat().st_mtime for p in (folder / "journal.log", folder / "snapshot.npz",
                                          folder / "state.npz") if p.exists()]
    if not times:
        raise FileNotFoundError(f"{folder}: no session state")
    return max(times)


class Session:
    """An interactive refinement session persisted in ``folder`` (see module docstring)."""

    #: compaction thresholds: a new snapshot once the journal holds this many bytes or records
    compact_bytes = 32 * 2**20
    compact_records = 2000

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
        self.structures: list[st.Structure] = st.default_structures()
        self.squeues = st.StructureQueues()  # suggestions per structure, made when first asked for
        self.accepted: list[int] = []
        self.queue: SuggestionQueue | None = None
        self.suggestions: dict | None = None
        self.history: list[Patch] = []  # the undo history (history_len entries)
        self.history_len = 0  # actions on disk
        self.pointer = 0  # actions applied (undo moves it back)
        self.seq = 0  # journal sequence number of the last persisted verb
        self.maps_file: str | None = None
        self.journal: Journal | None = None
        self._records = 0  # journal records since the snapshot
        self._batch = 0  # depth of batch() blocks: their verbs are fsync'ed together at the end
        #: what the last verb wrote: journal bytes and seconds, and the snapshot if it compacted
        self.last_write = {"bytes": 0, "seconds": 0.0, "snapshot_bytes": 0, "snapshot_seconds": 0.0}

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, folder: str | Path, image: str | Path | io.Volume, *, axis: int = 2,
               method: str = "idrlse", budget: float = 0.6, preset: str = DEFAULT_PRESET,
               order: str = DEFAULT_ORDER, labels: np.ndarray | None = None,
               names: dict[int, str] | None = None) -> Session:
        """Start a session on an image file (or a loaded :class:`Volume`); ``labels``: a label
        map to start from (its structures named from ``names`` {value: name}, else "label N")."""
        folder = Path(folder)
        if (folder / "meta.json").exists():
            raise InputError(f"{folder}: a session already exists there; open it instead")
        as_axis(axis)
        as_choice(method, "method", REFINE_METHODS)
        as_number(budget, "budget", low=0.0, high=1.0, low_open=True)
        as_choice(order, "order", ORDERS)
        preset_params(preset, method)
        volume = io.load(image) if not isinstance(image, io.Volume) else image
        name = io.case_name(image) if not isinstance(image, io.Volume) else "image"
        io.check_writable_dir(folder)
        fsync_file(io.save(volume, folder / "image.nii.gz"))
        meta = {"format": FORMAT, "name": name, "shape": list(volume.shape), "axis": axis,
                "method": method, "budget": budget, "preset": preset, "order": order, "spacing": list(volume.spacing),
                "created": time.time()}
        session = cls(folder, volume, meta)
        if labels is not None:
            session.mask = st.as_label_map(labels, "labels", volume.shape)
            session.structures = st.structures_for(session.mask, names=names)
        session.compact()
        session._write_meta()  # last: a folder with meta.json holds a whole session
        return session

    @classmethod
    def open(cls, folder: str | Path) -> Session:
        """Reopen a persisted session exactly where it was."""
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise InputError(f"{folder}: no session here (meta.json missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") not in (FORMAT, FORMAT_V1):
            raise InputError(f"{folder}: not a segrefine session ({FORMAT} expected)")
        session = cls(folder, io.load(folder / "image.nii.gz"), meta)
        if meta["format"] == FORMAT_V1:
            mask, scribbles, state, history = read_v1(folder)
            state["maps"] = "maps.npz" if (folder / "maps.npz").exists() else None
        else:
            mask, scribbles, state, history = read_snapshot(folder / "snapshot.npz", session.image.shape)
        session.maps_file = state.get("maps")
        if session.maps_file:
            with np.load(folder / session.maps_file) as maps:
                session.prob, session.uncertainty = maps["prob"], maps["uncertainty"]
            session._make_queue()
        session.mask, session.scribbles, session.history = mask, scribbles, history
        session.seq = int(state.get("seq", 0))
        session._set_state(state)
        if meta["format"] == FORMAT_V1:
            session._convert_v1()
            return session
        journal = Journal.open(folder / "journal.log")
        session._replay(journal)
        journal.forget()
        session.journal = journal
        return session

    # ------------------------------------------------------------------ persistence
    def _write_meta(self) -> None:
        write_durable(self.folder / "meta.json", json.dumps(self.meta, indent=1).encode("utf-8"))

    def _state(self, *, full: bool) -> dict:
        """The state beside the volumes: whole in a snapshot, what verbs change in a record."""
        queue = None
        if self.queue is not None:
            queue = self.queue.state()
            if not full:
                queue = {k: queue[k] for k in SuggestionQueue.MUTABLE}
        return {"accepted": list(self.accepted), "history_len": self.history_len,
                "pointer": self.pointer, "queue": queue,
                "structures": [s.to_dict() for s in self.structures],
                "structure_queues": self.squeues.state(full=full)}

    def _set_state(self, state: dict) -> None:
        self.accepted = [int(k) for k in state["accepted"]]
        self.history_len, self.pointer = int(state["history_len"]), int(state["pointer"])
        if state.get("structures"):  # absent in sessions made before several structures: one
            self.structures = st.parse_structures(state["structures"])
        self.squeues.set_state(state.get("structure_queues"))
        q = state.get("queue")
        if self.queue is not None and q:
            if "order" in q:
                self.queue.order = q["order"]  # the ranking made at predict time
            if q.get("expected") is not None:
                self.queue.expected = q["expected"]
            self.queue.restore(q)

    def _log(self, op: str, payload: bytes = b"", *, started: float | None = None, **fields) -> None:
        """Append one verb to the journal (on disk when this returns); compact past the limits.
        ``last_write["seconds"]`` counts from ``started`` (the patch's making) or from here."""
        t0 = time.perf_counter() if started is None else started
        header = {"seq": self.seq + 1, "op": op, **fields, "state": self._state(full=False)}
        written = self.journal.append(header, payload, sync=self._batch == 0)
        self.seq += 1
        self._records += 1
        self.last_write = {"bytes": written, "seconds": time.perf_counter() - t0,
                           "snapshot_bytes": 0, "snapshot_seconds": 0.0}
        if self.journal.size > self.compact_bytes or self._records >= self.compact_records:
            self.compact()

    def _replay(self, journal: Journal) -> None:
        """Apply the journal's records newer than the snapshot (older ones are left by a
        compaction interrupted between writing the snapshot and starting the new journal)."""
        for header, payload in journal.records:
            seq = int(header["seq"])
            if seq <= self.seq:
                continue
            if seq != self.seq + 1:
                raise InputError(f"{journal.path}: record {seq} follows {self.seq} (records missing)")
            op = header["op"]
            if op == "action":
                patch = Patch.from_header(header["patch"], payload)
                patch.apply(*self._views(patch), "after")
                self.history[int(header["entry"]):] = [patch]
            elif op in ("undo", "redo"):
                patch = self.history[int(header["entry"])]
                patch.apply(*self._views(patch), "before" if op == "undo" else "after")
            self._set_state(header["state"])
            self.seq = seq
            self._records += 1

    def compact(self) -> None:
        """Write a snapshot of the whole state and start an empty journal (durably, in that
        order: a crash between the two leaves records the snapshot already holds)."""
        t0 = time.perf_counter()
        del self.history[self.history_len:]  # the redo tail past a new action is gone
        state = {**self._state(full=True), "seq": self.seq, "maps": self.maps_file, "saved": time.time()}
        size = write_snapshot(self.folder / "snapshot.npz", self.mask, self.scribbles, state, self.history)
        if self.journal is not None:
            self.journal.close()
        self.journal = Journal.create(self.folder / "journal.log")
        self._records = 0
        self.last_write["snapshot_bytes"] = size
        self.last_write["snapshot_seconds"] = time.perf_counter() - t0

    def _convert_v1(self) -> None:
        """Rewrite a first-format session as snapshot + journal, then drop its old files."""
        self.compact()
        self.meta["format"] = FORMAT
        self._write_meta()
        (self.folder / "state.npz").unlink(missing_ok=True)
        shutil.rmtree(self.folder / "history", ignore_errors=True)

    @contextmanager
    def batch(self) -> Iterator[Session]:
        """Make the verbs of the block durable together when it ends (one fsync instead of one
        per verb: the server wraps each request in it, so a pen-up's stroke and refinement
        cost one fsync before the answer). Inside the block a verb's record is written but
        not yet fsync'ed: acknowledge nothing before the block has ended."""
        self._batch += 1
        try:
            yield self
        finally:
            self._batch -= 1
            if self._batch == 0 and self.journal is not None:
                self.journal.sync()

    def close(self) -> None:
        """Close the journal's file (the session stays on disk; open() brings it back)."""
        if self.journal is not None:
            self.journal.close()

    # ------------------------------------------------------------------ maps and suggestions
    @property
    def axis(self) -> int:
        return int(self.meta["axis"])

    @property
    def spacing2d(self) -> tuple[float, float]:
        sp = self.meta["spacing"]
        return tuple(float(s) for i, s in enumerate(sp) if i != self.axis)

    def predict(self, *, model: str | Path | None = None) -> Change:
        """Run the shipped MG-Net (or a given checkpoint) for the initial mask (a session with
        several structures keeps its label map) and maps; the change's ``warning`` says how the image differs from the model's training data (card)."""
        from segrefine.nets.card import model_warning
        from segrefine.uncertainty import shared_predictor

        start = time.perf_counter()
        predictor = shared_predictor("mgnet", str(model) if model else None, self.axis)
        warning = model_warning(predictor.nets[0], self.volume, self.axis, what=self.meta["name"])
        pred = predictor(self.image)
        several = len(self.structures) > 1 and self.mask.any()  # kept: see set_maps
        change = self.set_maps(pred.prob, pred.uncertainty, None if several else pred.label)
        change.seconds = time.perf_counter() - start
        change.warning = warning
        return change

    def set_maps(self, prob: np.ndarray, uncertainty: np.ndarray, segmentation: np.ndarray | None = None,
                 *, names: dict[int, str] | None = None) -> Change:
        """Use another model's probability and uncertainty (and optional segmentation: a label
        map, a structure per value, named from ``names`` or the session's structures). Without
        a segmentation the mask is the probability's foreground as the first structure, except
        in a session already holding several structures: its label map is kept (a binary
        network's foreground does not say which structure a voxel belongs to)."""
        prob = image_map(prob, "prob", self.image.shape, unit_interval=True)
        uncertainty = image_map(uncertainty, "uncertainty", self.image.shape)
        if segmentation is not None:
            self.mask = st.as_label_map(st.binary_as_one(segmentation), "segmentation", self.image.shape)
            known = [s for s in self.structures if s.id not in (names or {})]
            self.structures = st.structures_for(self.mask, known, names)
        elif len(self.structures) == 1 or not self.mask.any():
            self.mask = (prob > 0.5).astype(np.uint8) * np.uint8(self.structures[0].id)
        self.prob, self.uncertainty = prob, uncertainty
        self.scribbles[:] = 0
        self.accepted, self.history_len, self.pointer, self.history = [], 0, 0, []
        name = f"maps-{secrets.token_hex(6)}.npz"
        write_durable(self.folder / name, writer=lambda fh: np.savez(fh, prob=prob, uncertainty=uncertainty))
        self.maps_file = name
        self._make_queue()
        self.compact()  # the snapshot names the new maps: from now on they are the session's
        for old in self.folder.glob("maps*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return Change("predict")

    def _make_queue(self) -> None:
        self.squeues.clear()
        self.suggestions = suggest(self.uncertainty, self.mask if self.mask.any() else self.prob > 0.5,
                                   prob=self.prob, order=self.meta.get("order", DEFAULT_ORDER),
                                   axis=self.axis, budget=float(self.meta["budget"]))
        self.queue = SuggestionQueue.from_suggestions(self.suggestions)

    def _require_maps(self) -> None:
        if self.queue is None:
            raise InputError("no prediction yet: call predict() or set_maps() first")

    def next_suggestion(self, *, structure: int | None = None) -> int | None:
        """The next slice to check (None when the budget is used or the queue stopped early);
        with ``structure``, the next one of that structure's queue."""
        k = self.suggestion_queue(structure).next()
        self._log("state")
        return k

    def report(self, needed_refinement: bool, *, structure: int | None = None) -> None:
        """Tell the queue whether the last suggested slice needed refinement (early stop)."""
        self.suggestion_queue(structure).report(needed_refinement)
        self._log("state")

    def structure_suggestions(self, structure: int) -> dict:
        """The slices ranked for one structure (:func:`segrefine.structures.structure_suggestions`),
        made from the label map the first time they are asked for and kept from then on."""
        self.suggestion_queue(structure)
        return self.squeues.suggestions[self.structure(structure).id]

    def suggestion_queue(self, structure: int | None = None) -> SuggestionQueue:
        """The whole mask's queue (``structure`` None) or one structure's (made when first asked for)."""
        self._require_maps()
        if structure is None:
            return self.queue
        sid = self.structure(structure).id
        if sid in self.squeues.queues:
            return self.squeues.queues[sid]
        # every structure still without a queue gets one now, from the same label map and regions
        spacing = tuple(self.meta["spacing"])
        regions = st.structure_regions(self.mask, spacing)
        for s in self.structures:
            self.squeues.get(s.id, lambda i=s.id: st.structure_suggestions(
                self.uncertainty, self.prob, self.mask, i, spacing=spacing, axis=self.axis, regions=regions,
                order=self.meta.get("order", DEFAULT_ORDER), budget=float(self.meta["budget"])))
        self._log("state")  # the rankings are part of the state from now on
        return self.squeues.queues[sid]

    # ------------------------------------------------------------------ structures
    def structure(self, structure: int | None = None) -> st.Structure:
        """The structure of id ``structure`` (None: the first one)."""
        if structure is None:
            return self.structures[0]
        sid = st.as_structure_id(structure)
        for s in self.structures:
            if s.id == sid:
                return s
        known = ", ".join(f"{s.id} ({s.name})" for s in self.structures)
        raise InputError(f"`structure` {sid} is not one of this session's structures: {known}")

    def add_structure(self, name: str, *, color=None, id: int | None = None) -> Change:
        """A new, empty structure (``id`` None: the next free one; ``color`` None: from the palette)."""
        self.structures = st.with_structure(self.structures, name, color=color, id=id)
        self._log("state")
        return Change("structure")

    def set_labels(self, labels: np.ndarray, *, names: dict[int, str] | None = None) -> Change:
        """Replace the mask by a label map (a structure per value, named from ``names`` {value:
        name}, else as the session's structure of that id, else "label N"); strokes, accepted
        slices and the undo history start afresh, and the suggestions are ranked again."""
        mask = st.as_label_map(labels, "labels", self.image.shape)
        present = set(np.unique(mask).tolist())
        known = [s for s in self.structures if s.id in present and s.id not in (names or {})]
        self.structures = st.structures_for(mask, known, names)
        self.mask = mask
        self.scribbles[:] = 0
        self.accepted, self.history_len, self.pointer, self.history = [], 0, 0, []
        if self.queue is not None:
            self._make_queue()
        self.compact()
        return Change("labels")

    # ------------------------------------------------------------------ slice access
    def _check_index(self, index: int, axis: int | None = None) -> int:
        axis = as_axis(self.axis if axis is None else axis)
        n = self.image.shape[axis]
        if not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise InputError(f"slice index {index} outside 0..{n - 1} along axis {axis}")
        return axis

    def _view(self, array: np.ndarray, index: int, axis: int | None = None) -> np.ndarray:
        axis = self._check_index(index, axis)
        return np.moveaxis(array, axis, 0)[index]  # a view: writes go to the volume

    def _views(self, patch: Patch) -> tuple[np.ndarray, np.ndarray]:
        return (self._view(self.mask, patch.index, patch.axis),
                self._view(self.scribbles, patch.index, patch.axis))

    def slice_mask(self, index: int, axis: int | None = None) -> np.ndarray:
        return self._view(self.mask, index, axis).copy()

    def slice_scribbles(self, index: int, axis: int | None = None) -> np.ndarray:
        return self._view(self.scribbles, index, axis).copy()

    # ------------------------------------------------------------------ actions
    def _record(self, kind: str, index: int, axis: int, before_mask, before_scr, t0: float,
                within) -> Change:
        """Persist an action on a slice; ``within``: the box its change lies in (None: nothing)."""
        started = time.perf_counter()
        patch = Patch.make(kind, axis, index, before_mask, self._view(self.mask, index, axis),
                           before_scr, self._view(self.scribbles, index, axis), within=within)
        entry = self.pointer
        self.history[entry:] = [patch]  # a new action drops the redo tail
        self.history_len = self.pointer = entry + 1
        self._log("action", patch.data, started=started, entry=entry, patch=patch.header())
        return Change(kind, axis, index, patch.bbox, time.perf_counter() - t0)

    def add_scribble(self, index: int, points, label: int, *, axis: int | None = None,
                     radius: int = 0, structure: int | None = None) -> Change:
        """Mark pixels of slice ``index``: ``points`` is a list of (row, col) or a bool (H, W) mask.

        ``label`` 1 = foreground, 2 = background, 0 = erase (the strokes of ``structure`` only)
        of ``structure`` (None: the first). ``radius`` thickens the stroke.
        """
        t0 = time.perf_counter()
        axis = self._check_index(index, axis)
        if label not in (0, 1, 2):
            raise InputError(f"scribble label must be 0 (erase), 1 (foreground) or 2 (background), got {label}")
        codes = st.scribble_codes(self.structure(structure).id)
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
        if label == 0:
            view[sel & np.isin(view, codes)] = 0
        else:
            view[sel] = codes[label - 1]
        return self._record("scribble", index, axis, before_mask, before_scr, t0, bbox(sel))

    def refine(self, index: int, *, axis: int | None = None, method: str | None = None,
               structure: int | None = None, overwrite: bool = False) -> Change:
        """Refine ``structure`` (None: the first) on slice ``index`` from the CNN probability, its
        current mask and its strokes; the other structures' voxels are locked unless ``overwrite``
        (:func:`segrefine.structures.merge`)."""
        t0 = time.perf_counter()
        self._require_maps()
        axis = self._check_index(index, axis)
        method = method or self.meta["method"]
        sid = self.structure(structure).id
        if not isinstance(overwrite, bool):
            raise InputError(f"`overwrite` must be true or false, got {overwrite!r}")
        mask_view = self._view(self.mask, index, axis)
        scr = self._view(self.scribbles, index, axis).copy()
        before_mask = mask_view.copy()
        changed = None
        own = st.structure_scribbles(scr, sid)
        if own.any():
            sp = tuple(float(s) for i, s in enumerate(self.meta["spacing"]) if i != axis)
            prob, init = st.structure_input(before_mask, self._view(self.prob, index, axis), sid)
            new = refine_slice(method, self._view(self.norm, index, axis), prob, init, own, spacing=sp,
                               preset=self.meta.get("preset", DEFAULT_PRESET))
            new = st.merge(before_mask, new, sid, overwrite=overwrite)
            changed = bbox(new != before_mask)
            mask_view[:] = new
        return self._record("refine", index, axis, before_mask, scr, t0, changed)

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
        patch = self.history[entry]
        patch.apply(*self._views(patch), which)
        self.pointer += move
        self._log(kind, entry=entry)
        return Change(kind, patch.axis, patch.index, patch.bbox, time.perf_counter() - t0)

    def accept(self, index: int, *, needed_refinement: bool | None = None,
               structure: int | None = None) -> Change:
        """Mark slice ``index`` (along the session axis) as checked; feeds the early stop of the
        whole mask's queue, or of ``structure``'s."""
        self._check_index(index)
        if index not in self.accepted:
            self.accepted.append(int(index))
        if needed_refinement is not None and self.queue is not None:
            self.suggestion_queue(structure).report(needed_refinement)
        self._log("state")
        return Change("accept", self.axis, index)

    def save_mask(self, path: str | Path) -> Path:
        """Write the current label map (every structure's id) with the image's geometry
        (atomically): uint8 NIfTI (:meth:`label_names` names the values), or with a
        ``.seg.nrrd`` name 3D Slicer's segmentation file, whose segments carry the names and colours."""
        fields = (st.seg_nrrd_fields(self.structures, self.mask.shape)
                  if str(path).lower().endswith(".seg.nrrd") else None)
        return io.save(self.volume.with_array(self.mask.astype(np.uint8)), path, dtype=np.uint8, metadata=fields)

    def label_names(self) -> dict[str, int]:
        """{structure name: id}, e.g. for a DICOM SEG's segments."""
        return {s.name: s.id for s in self.structures}

    def status(self) -> dict:
        return {"name": self.meta["name"], "shape": self.meta["shape"], "axis": self.axis,
                "method": self.meta["method"], "preset": self.meta.get("preset", DEFAULT_PRESET),
                "budget": self.meta["budget"], "accepted": list(self.accepted), "can_undo": self.pointer > 0,
                "can_redo": self.pointer < self.history_len,
                "queue": self.queue.state() if self.queue else None,
                "structures": [s.to_dict() for s in self.structures]}
