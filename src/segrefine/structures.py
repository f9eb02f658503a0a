"""Several structures in one label map: ids, names and colours, the lock/overwrite rule of a
stroke, and suggestions per structure.

A session's mask is a label map ``(I, J, K) uint8``: 0 background, the structure's id
(1..:data:`MAX_ID`) elsewhere; one voxel belongs to one structure (as in ITK-SNAP and a
Decathlon ``labelsTr`` file). Strokes belong to a structure too: the scribble volume holds
``2 id - 1`` for a foreground stroke of structure ``id`` and ``2 id`` for a background one
(so the single-structure sessions' 1 = foreground, 2 = background are structure 1's).

Editing one structure (the *active* one, ``id``) on a slice::

    scr = structure_scribbles(scribbles_slice, id)       # 0 none, 1 fg, 2 bg of that structure
    prob_s, init = structure_input(labels_slice, prob_slice, id)
    new = refine_slice(..., prob_s, init, scr)           # bool: the active structure
    labels_slice[:] = merge(labels_slice, new, id, overwrite=False)

The network's foreground probability does not say which structure a voxel belongs to, so
for the active structure the voxels of the other structures count as background
evidence (probability 0). The **lock rule** (default, ``overwrite=False``): voxels of
the other structures never change, whatever the refinement or the strokes say; voxels the
active structure loses become background. With ``overwrite=True`` the active structure
takes every voxel of its result, other structures' included (in practice the voxels its
foreground strokes cover: they are hard constraints of every refinement method).

Suggestions per structure: each voxel's uncertainty is given to the structure nearest
to it (3D Euclidean distance in mm, i.e. the label map's Voronoi partition) within
:data:`BAND_MM` of it; the slices are then ranked as for the whole mask
(:func:`segrefine.guidance.suggest`) on that part of the uncertainty and of the expected
wrong voxels ``min(p, 1 - p)``. The parts of the structures do not overlap, so every
uncertain voxel near the mask is counted for exactly one structure, the one whose boundary
an error there would move; voxels farther than the band from every structure (a missed
structure) are left to the whole-mask queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from segrefine.errors import InputError
from segrefine.guidance import SuggestionQueue, suggest

#: the largest structure id: the scribble volume (uint8) holds two codes per structure
MAX_ID = 127
#: at most this many structures in a session (the viewer's 256-entry drawing colour table)
MAX_STRUCTURES = 100
#: the band around a structure its suggestions take the uncertainty from, in mm
BAND_MM = 5.0
#: colours given in turn to structures without one (3D Slicer's first generic anatomy colours)
PALETTE = ((128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210), (216, 101, 79),
           (221, 130, 101), (144, 238, 144), (192, 104, 88), (220, 245, 20), (78, 63, 0),
           (255, 250, 220), (230, 220, 70), (200, 200, 235), (250, 250, 210), (244, 214, 49))
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


@dataclass(frozen=True)
class Structure:
    """One structure of a label map: its ``id`` (voxel value), ``name`` and ``color`` (RGB 0..255)."""

    id: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "color": list(self.color)}


def palette_color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def as_structure_id(value, name: str = "structure") -> int:
    """A structure id: an integer in 1..MAX_ID."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_ID:
        raise InputError(f"`{name}` must be a structure id, an integer in 1..{MAX_ID}, got {value!r}")
    return int(value)


def as_name(value, name: str = "name") -> str:
    if not isinstance(value, str) or not _NAME.match(value.strip() or ""):
        raise InputError(f"`{name}` must be a structure name of 1 to 64 printable characters, got {value!r}")
    return value.strip()


def as_color(value, name: str = "color") -> tuple[int, int, int]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in value))
    if not ok:
        raise InputError(f"`{name}` must be three integers 0..255 (red, green, blue), got {value!r}")
    return tuple(int(c) for c in value)


def parse_structures(entries, name: str = "structures") -> list[Structure]:
    """Structures from ``[{"id", "name", "color"?}, ...]`` (JSON): ids and names unique."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise InputError(f"`{name}` must be a non-empty list of {{id, name, color}} entries, got {entries!r}")
    if len(entries) > MAX_STRUCTURES:
        raise InputError(f"`{name}` holds {len(entries)} structures; at most {MAX_STRUCTURES}")
    out: list[Structure] = []
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e or "name" not in e:
            raise InputError(f"`{name}[{n}]` must be an object with 'id' and 'name', got {e!r}")
        color = e.get("color")
        out.append(Structure(as_structure_id(e["id"], f"{name}[{n}].id"), as_name(e["name"], f"{name}[{n}].name"),
                             palette_color(n) if color is None else as_color(color, f"{name}[{n}].color")))
    for key in ("id", "name"):
        values = [getattr(s, key) for s in out]
        dup = next((v for v in values if values.count(v) > 1), None)
        if dup is not None:
            raise InputError(f"`{name}`: {key} {dup!r} is given twice")
    return sorted(out, key=lambda s: s.id)


def default_structures(name: str = "foreground") -> list[Structure]:
    """The one structure of a single-label session (id 1)."""
    return [Structure(1, name, palette_color(0))]


def as_label_map(value, name: str, shape: tuple) -> np.ndarray:
    """A label map as ``uint8``: the image's ``shape``, integer values in 0..MAX_ID."""
    a = np.asarray(value)
    if a.shape != tuple(shape):
        raise InputError(f"`{name}` (shape {a.shape}) must have the image's shape {tuple(shape)}")
    if a.dtype != bool and (not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a)):
        raise InputError(f"`{name}` must hold integer labels, got dtype {a.dtype}")
    if a.dtype.kind == "f" and (not np.isfinite(a).all() or not np.array_equal(a, np.rint(a))):
        raise InputError(f"`{name}` must hold integer labels, got fractional or NaN values")
    if a.size and (a.min() < 0 or a.max() > MAX_ID):
        raise InputError(f"`{name}` values must lie in 0..{MAX_ID}, got [{a.min():g}, {a.max():g}]")
    return a.astype(np.uint8)


def binary_as_one(seg) -> np.ndarray:
    """A segmentation as labels: a soft (float in [0, 1]) one thresholded at 0.5, a binary one
    stored with one value above :data:`MAX_ID` (e.g. 0/255) as 0/1, a label map as it is."""
    seg = np.asarray(seg)
    if seg.dtype == bool or seg.size == 0:
        return seg.astype(np.uint8)
    if seg.dtype.kind == "f" and np.isfinite(seg).all() and 0 <= seg.min() and seg.max() <= 1:
        return (seg > 0.5).astype(np.uint8)
    values = np.unique(seg)
    if len(values) <= 2 and values.max() > MAX_ID and values.min() >= 0:
        return (seg > 0).astype(np.uint8)
    return seg


def structures_for(labels: np.ndarray, known: list[Structure] | None = None,
                   names: dict[int, str] | None = None) -> list[Structure]:
    """The structures of a label map: one per value present, with the name and colour of a
    ``known`` structure of that id, else the name in ``names`` (e.g. ``dataset.json``'s
    labels), else ``"label N"``; ids of ``known`` absent from the map are kept."""
    by_id = {s.id: s for s in known or []}
    ids = sorted({int(v) for v in np.unique(labels)} - {0} | set(by_id))
    if len(ids) > MAX_STRUCTURES:
        raise InputError(f"the label map holds {len(ids)} structures; at most {MAX_STRUCTURES}")
    out = []
    for n, i in enumerate(ids):
        if i in by_id:
            out.append(by_id[i])
        else:
            label = (names or {}).get(i) or f"label {i}"
            out.append(Structure(i, as_name(str(label)[:64], f"name of label {i}"), palette_color(i - 1)))
    names_seen = [s.name for s in out]
    return [s if names_seen.count(s.name) == 1 else Structure(s.id, f"{s.name} ({s.id})"[:64], s.color)
            for s in out] or default_structures()


def with_structure(structures: list[Structure], name: str, *, color=None, id: int | None = None) -> list[Structure]:
    """``structures`` plus a new one named ``name`` (``id`` None: the next free id; ``color``
    None: the palette's next colour); a new list, sorted by id."""
    name = as_name(name)
    if any(s.name == name for s in structures):
        raise InputError(f"`name` {name!r}: the session already has a structure of that name")
    if len(structures) >= MAX_STRUCTURES:
        raise InputError(f"the session already holds {MAX_STRUCTURES} structures, the most it can")
    taken = {s.id for s in structures}
    if id is None:
        free = [i for i in [max(taken, default=0) + 1, *range(1, MAX_ID + 1)] if i <= MAX_ID and i not in taken]
        id = free[0]
    elif as_structure_id(id, "id") in taken:
        raise InputError(f"`id` {id}: the session already has a structure of that id")
    color = palette_color(len(structures)) if color is None else as_color(color)
    return sorted([*structures, Structure(int(id), name, color)], key=lambda s: s.id)


def seg_nrrd_fields(structures: list[Structure], shape: tuple) -> dict[str, str]:
    """The header fields of 3D Slicer's segmentation file (``.seg.nrrd``: a label map whose
    segments are named, coloured and valued by these ``key:=value`` lines; one layer, each
    segment's extent the whole grid)."""
    extent = " ".join(f"0 {int(n) - 1}" for n in shape)
    out = {"Segmentation_MasterRepresentation": "Binary labelmap",
           "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
           "Segmentation_ReferenceImageExtentOffset": "0 0 0"}
    for i, s in enumerate(structures):
        out.update({f"Segment{i}_ID": f"Segment_{s.id}", f"Segment{i}_Name": s.name,
                    f"Segment{i}_NameAutoGenerated": "0",
                    f"Segment{i}_Color": " ".join(f"{c / 255:.6g}" for c in s.color),
                    f"Segment{i}_ColorAutoGenerated": "0", f"Segment{i}_LabelValue": str(s.id),
                    f"Segment{i}_Layer": "0", f"Segment{i}_Extent": extent, f"Segment{i}_Tags": "|"})
    return out


# ---------------------------------------------------------------------- strokes and the lock rule
def scribble_codes(structure: int) -> tuple[int, int]:
    """The scribble volume's values of a foreground and a background stroke of ``structure``."""
    return 2 * structure - 1, 2 * structure


def structure_scribbles(scribbles: np.ndarray, structure: int) -> np.ndarray:
    """The strokes of one structure as 0 none, 1 foreground, 2 background (``uint8``)."""
    fg, bg = scribble_codes(structure)
    s = np.asarray(scribbles)
    return np.where(s == fg, 1, np.where(s == bg, 2, 0)).astype(np.uint8)


def structure_input(labels: np.ndarray, prob: np.ndarray, structure: int) -> tuple[np.ndarray, np.ndarray]:
    """The refinement's input for ``structure``: (probability with the other structures'
    voxels set to 0, the structure's current mask as bool). Inputs are not modified."""
    labels = np.asarray(labels)
    others = (labels != 0) & (labels != structure)
    return np.where(others, 0.0, prob).astype(np.float32), labels == structure


def merge(labels: np.ndarray, new: np.ndarray, structure: int, *, overwrite: bool = False) -> np.ndarray:
    """The label map with ``structure`` replaced by the bool mask ``new`` under the lock rule
    (module docstring): a new array; voxels the structure loses become 0, and other
    structures' voxels change only with ``overwrite``."""
    labels = np.asarray(labels)
    new = np.asarray(new, bool)
    out = labels.copy()
    out[(labels == structure) & ~new] = 0
    out[new if overwrite else new & (labels == 0)] = structure
    return out


# ---------------------------------------------------------------------- suggestions per structure
def structure_regions(labels: np.ndarray, spacing=None, band_mm: float = BAND_MM) -> np.ndarray:
    """For every voxel the id of the structure nearest to it (3D, mm with ``spacing`` in the
    array's axis order) when within ``band_mm`` of it, else 0; inside a structure its id."""
    from scipy import ndimage

    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.uint8)
    if not labels.any():
        return out
    # only the box around the structures, widened by the band, can lie within it
    sp = np.ones(labels.ndim) if spacing is None else np.asarray(spacing, float)
    pad = np.ceil(band_mm / sp).astype(int)
    nz = [np.flatnonzero(np.moveaxis(labels, a, 0).reshape(labels.shape[a], -1).any(1)) for a in range(labels.ndim)]
    box = tuple(slice(max(0, int(n[0]) - p), min(s, int(n[-1]) + p + 1)) for n, p, s in zip(nz, pad, labels.shape))
    sub = labels[box]
    dist, idx = ndimage.distance_transform_edt(sub == 0, sampling=sp, return_indices=True)
    out[box] = np.where(dist <= band_mm, sub[tuple(idx)], 0)
    return out


def structure_suggestions(uncertainty: np.ndarray, prob: np.ndarray, labels: np.ndarray, structure: int, *,
                          spacing=None, axis: int = 2, order: str = "gain", budget: float = 0.6,
                          band_mm: float = BAND_MM, regions: np.ndarray | None = None) -> dict:
    """Slices ranked for one structure (module docstring): :func:`segrefine.guidance.suggest`
    on the structure's part of ``uncertainty`` and ``prob`` (``regions`` from
    :func:`structure_regions`, computed when None) with the structure as segmentation.
    The answer carries ``structure`` and ``band_mm``."""
    if regions is None:
        regions = structure_regions(labels, spacing, band_mm)
    part = regions == structure
    p = np.where(part, prob, 0.0)
    if order == "gain" and not (np.minimum(p, 1.0 - p) > 0).any():
        order = "nu-naive"  # no expected error near the structure (e.g. an empty one): by ΣU
    out = suggest(np.where(part, uncertainty, 0.0), np.asarray(labels) == structure,
                  prob=p, order=order, axis=axis, budget=budget)
    return {**out, "structure": int(structure), "band_mm": float(band_mm)}


class StructureQueues:
    """The suggestions and queue of each structure, made when first asked for (from the label
    map as it is then) and kept with the session's state so that reopening restores them."""

    def __init__(self) -> None:
        self.suggestions: dict[int, dict] = {}
        self.queues: dict[int, SuggestionQueue] = {}
        self._new: set[int] = set()  # made since the last journal record: the record carries them whole

    def clear(self) -> None:
        self.suggestions.clear()
        self.queues.clear()
        self._new.clear()

    def get(self, structure: int, make) -> tuple[dict, SuggestionQueue]:
        """``(suggestions, queue)`` of ``structure``; ``make()`` gives the suggestions when new."""
        if structure not in self.queues:
            self.suggestions[structure] = make()
            self.queues[structure] = SuggestionQueue.from_suggestions(self.suggestions[structure])
            self._new.add(structure)
        return self.suggestions[structure], self.queues[structure]

    def state(self, *, full: bool) -> dict:
        out = {}
        for sid, q in self.queues.items():
            st = q.state()
            entry = {k: st[k] for k in SuggestionQueue.MUTABLE}
            if full or sid in self._new:
                entry["suggestions"] = self.suggestions[sid]
            out[str(sid)] = entry
        if not full:
            self._new.clear()
        return out

    def set_state(self, state: dict | None) -> None:
        for key, entry in (state or {}).items():
            sid = int(key)
            if "suggestions" in entry:
                self.suggestions[sid] = entry["suggestions"]
                self.queues[sid] = SuggestionQueue.from_suggestions(entry["suggestions"])
            q = self.queues.get(sid)
            if q is not None:
                q.restore(entry)
