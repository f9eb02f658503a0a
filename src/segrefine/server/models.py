"""Pydantic models of the HTTP API: every request body and every JSON answer.

Slice arrays travel as ``base64`` of ``uint8`` bytes in C order with their
``shape`` ``(rows, cols)``: the slice ``index`` along file axis ``axis`` of the
volume indexed ``(i, j, k)`` in the file's own voxel order, i.e. the array
``numpy.moveaxis(volume, axis, 0)[index]`` (rows follow the lower remaining axis).
Points are ``[row, col]`` pixels of that slice.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Axis = Literal[0, 1, 2]
Method = Literal["idrlse", "graphcut", "rnet", "paint"]
#: the refinement presets (segrefine.refine.slice.PRESETS; a test keeps the two equal)
Preset = Literal["default", "paper", "hippocampus"]
#: the slice orders (segrefine.guidance.ORDERS; a test keeps the two equal)
Order = Literal["gain", "nu", "nu-naive"]

#: the most points one scribble request may carry (a 1024x1024 slice, fully painted)
MAX_POINTS = 1024 * 1024
#: bound of slice indices and pixel coordinates: larger numbers cannot be in an image
MAX_INDEX = 2**31 - 1

#: a slice index (``ge=0``; past the volume it is a 400 from the session)
Index = Annotated[int, Field(ge=0, le=MAX_INDEX)]
#: a structure id (segrefine.structures.MAX_ID; a test keeps the two equal)
StructureId = Annotated[int, Field(ge=1, le=127)]
#: a colour channel
Channel = Annotated[int, Field(ge=0, le=255)]
#: a pixel coordinate (negative or past the slice: a 400 "outside the slice" from the session)
Coord = Annotated[int, Field(ge=-MAX_INDEX, le=MAX_INDEX)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionOptions(_Strict):
    """How a new session ranks and refines: slice ``axis``, refinement ``method``, its
    parameter ``preset`` (None = the val-chosen default) and the budget M' (fraction of
    the slices the user is asked to check)."""

    axis: Axis = 2
    method: Method = "idrlse"
    preset: Preset | None = None
    budget: float = Field(0.6, gt=0, le=1)
    order: Order = "gain"


class CreateFromPath(SessionOptions):
    """A session on a file under the server's data root (``path`` is relative to it)."""

    path: str = Field(..., min_length=1, max_length=1024,
                      description="image path relative to the data root, e.g. 'hippocampus/imagesTr/x.nii.gz'")
    labels: str | None = Field(None, min_length=1, max_length=1024,
                               description="a label map to start from (several structures), relative to "
                                           "the data root; named from the dataset.json beside its folder")


class LabelsFromPath(_Strict):
    """A label map under the data root that replaces the session's mask (a structure per value)."""

    path: str = Field(..., min_length=1, max_length=1024)


class NewStructure(_Strict):
    """A new, empty structure: ``name``, optional ``color`` (RGB 0..255) and ``id`` (default: the next free)."""

    name: str = Field(..., min_length=1, max_length=64)
    color: tuple[Channel, Channel, Channel] | None = None
    id: StructureId | None = None


class MapsFromPath(_Strict):
    """Another model's maps, as files under the data root (same grid as the image)."""

    prob: str = Field(..., min_length=1, max_length=1024)
    uncertainty: str = Field(..., min_length=1, max_length=1024)
    segmentation: str | None = Field(None, min_length=1, max_length=1024)


class ScribbleRequest(_Strict):
    """Pixels ``[row, col]`` of slice ``index`` along ``axis`` (None = the session axis) to mark
    with ``label`` (1 foreground, 2 background, 0 erase) of ``structure`` (None = the first);
    ``radius`` thickens the stroke; with ``refine`` the slice is refined right after (one round
    trip on pen-up), the other structures locked unless ``overwrite``."""

    index: Index
    axis: Axis | None = None
    label: Literal[0, 1, 2]
    points: list[tuple[Coord, Coord]] = Field(..., min_length=1, max_length=MAX_POINTS)
    radius: int = Field(0, ge=0, le=16)
    refine: bool = False
    method: Method | None = None
    structure: StructureId | None = None
    overwrite: bool = False


class RefineRequest(_Strict):
    index: Index
    axis: Axis | None = None
    method: Method | None = None
    structure: StructureId | None = None
    overwrite: bool = False


class AcceptRequest(_Strict):
    """Mark slice ``index`` (session axis) as checked; ``needed_refinement`` feeds the early stop."""

    index: Index
    needed_refinement: bool | None = None
    structure: StructureId | None = Field(None, description="the early stop of this structure's queue")


class ReportRequest(_Strict):
    needed_refinement: bool
    structure: StructureId | None = None


class StructureOut(BaseModel):
    id: int
    name: str
    color: tuple[int, int, int]


class ChangeOut(BaseModel):
    """What an action changed: bbox = (row0, row1, col0, col1), half-open, in slice pixels."""

    kind: str
    axis: int | None = None
    index: int | None = None
    bbox: tuple[int, int, int, int] | None = None
    seconds: float = 0.0
    warning: str | None = Field(None, description="predict: how the image differs from the model's "
                                                   "training data (its model card), one line")


class SliceOut(BaseModel):
    axis: int
    index: int
    shape: tuple[int, int]
    encoding: Literal["base64-uint8-C"] = "base64-uint8-C"
    mask: str
    scribbles: str


class QueueOut(BaseModel):
    position: int
    budget_slices: int
    streak: int
    patience: int | None = Field(None, description="stop after this many clean slices in a row (nu orders)")
    stop_remaining: float | None = Field(None, description="stop once the slices left hold less than this "
                                                           "fraction of the expected wrong voxels (earlier rule)")
    remaining_fraction: float | None = None
    stop_dice: float | None = Field(None, description="stop once the slices left are expected to hold less "
                                                      "than this much Dice (gain order)")
    remaining_dice: float | None = None
    follow: bool = Field(False, description="the neighbours of a slice that needed refinement come next")
    front: list[int] = Field(default_factory=list, description="slices to show next (following an error)")
    stopped_early: bool
    done: bool
    shown: list[int]


class StatusOut(BaseModel):
    id: str
    name: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: list[list[float]]
    axis: int
    method: str
    preset: str
    budget: float
    order: str = "gain"
    has_maps: bool
    accepted: list[int]
    can_undo: bool
    can_redo: bool
    queue: QueueOut | None = None
    structures: list[StructureOut] = Field(default_factory=list,
                                           description="the label map's structures, by id")


class ActionOut(BaseModel):
    """The answer to every editing verb: the changes, the slice as it is now, the new status."""

    changes: list[ChangeOut]
    slice: SliceOut | None = None
    status: StatusOut


class SliceScore(BaseModel):
    index: int
    score: float | None = Field(None, description="what the order ranks by: expected wrong voxels with "
                                                  "the end prior (gain), ν or ν*")
    nu: float
    nu_naive: float
    expected_errors: float | None = None
    area: int
    in_budget: bool


class SuggestionsOut(BaseModel):
    axis: int
    budget: float
    budget_slices: int
    zeta: float
    order: str
    expected_foreground: float | None = Field(None, description="Σ p: expected foreground voxels (gain)")
    structure: int | None = Field(None, description="the structure ranked for (None: the whole mask)")
    band_mm: float | None = Field(None, description="a structure's band: the uncertainty within this "
                                                    "distance of it, nearest to it, is its own")
    slices: list[SliceScore]
    queue: QueueOut
    accepted: list[int]


class NextOut(BaseModel):
    """The next suggested slice, or ``index`` None when the budget is used or the queue stopped."""

    index: int | None
    queue: QueueOut


class SessionSummary(BaseModel):
    id: str
    name: str
    shape: tuple[int, int, int]
    created: float
    updated: float


class FileEntry(BaseModel):
    path: str
    size: int


class ErrorOut(BaseModel):
    detail: str
