"""The JSON API under ``/api``: a thin shell over :class:`segrefine.session.Session`.

Every route resolves its session through the :class:`SessionStore` (random id,
one lock per session), calls one session verb and answers with the models of
:mod:`segrefine.server.models`. Domain errors (:class:`InputError`) become
HTTP 400 with their message (see ``app.py``); nothing here builds a path from a
request except through :func:`resolve_data_path` (data root, checked) and the
store (workspace, id checked).

Route paths are the constants below; the viewer (``web/viewer/api.js``) uses
the same names.
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response

from segrefine import uploads
from segrefine.datasets import dataset_labels
from segrefine.errors import InputError
from segrefine.server import models as m
from segrefine.server.store import SessionStore
from segrefine.session import Session

log = logging.getLogger(__name__)

# Route names (relative to /api), shared with the viewer's api.js.
FILES = "/files"
SESSIONS = "/sessions"
UPLOAD = "/sessions/upload"
SESSION = "/sessions/{sid}"
PREDICT = "/sessions/{sid}/predict"
MAPS = "/sessions/{sid}/maps"
MAPS_FROM_PATH = "/sessions/{sid}/maps/from-path"
SUGGESTIONS = "/sessions/{sid}/suggestions"
NEXT = "/sessions/{sid}/next"
REPORT = "/sessions/{sid}/report"
SCRIBBLES = "/sessions/{sid}/scribbles"
SCRIBBLES_PNG = "/sessions/{sid}/scribbles/png"
REFINE = "/sessions/{sid}/refine"
UNDO = "/sessions/{sid}/undo"
REDO = "/sessions/{sid}/redo"
ACCEPT = "/sessions/{sid}/accept"
SLICE = "/sessions/{sid}/slices/{axis}/{index}"
ARRAY = "/sessions/{sid}/arrays/{name}"
VOLUME = "/sessions/{sid}/volumes/{name}"
DOWNLOAD = "/sessions/{sid}/download"
STRUCTURES = "/sessions/{sid}/structures"
LABELS = "/sessions/{sid}/labels"
LABELS_FROM_PATH = "/sessions/{sid}/labels/from-path"

VOLUME_NAMES = ("image.nii.gz", "mask.nii.gz", "scribbles.nii.gz", "uncertainty.nii.gz", "prob.nii.gz")
MAX_FILES_LISTED = 5000


def _store(request: Request) -> SessionStore:
    return request.app.state.store


# ---------------------------------------------------------------------- data root
def _shown(rel: str, limit: int = 120) -> str:
    """``rel`` quoted for a message, cut to ``limit`` characters."""
    return repr(rel if len(rel) <= limit else rel[:limit] + "...")


def resolve_data_path(request: Request, rel: str) -> Path:
    """``rel`` under the data root, resolved (symlinks followed) and checked to stay inside it."""
    root: Path | None = request.app.state.data_root
    if root is None:
        raise HTTPException(404, "this server has no data root (start it with --data-root DIR)")
    shown = _shown(rel)
    if "\x00" in rel or "\\" in rel:
        raise HTTPException(400, f"path {shown}: use '/' separated names relative to the data root")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise HTTPException(400, f"path {shown} must be relative to the data root, not absolute")
    try:
        target = (root / rel).resolve()
        inside = target.is_relative_to(root)
        exists = inside and target.exists()
        is_file = exists and target.is_file()
    except RuntimeError:  # a symbolic link loop (Python < 3.13)
        raise HTTPException(400, f"path {shown}: a symbolic link loop") from None
    except OSError as exc:  # a name too long, a loop (Python >= 3.13), no permission
        raise HTTPException(400, f"path {shown}: cannot be read ({exc.strerror or exc})") from None
    if not inside:
        raise HTTPException(403, f"path {shown} is outside the data root")
    if not exists:
        raise HTTPException(404, f"path {shown}: no such file under the data root")
    if is_file:
        uploads.suffix_of(target.name, f"path {shown}")
        uploads.check_image_file(target, rel, request.app.state.max_voxels)
    return target


def _load_under_root(request: Request, rel: str) -> np.ndarray:
    return uploads.load_received(resolve_data_path(request, rel), rel)


def _labels_under_root(request: Request, rel: str) -> tuple[np.ndarray, dict[int, str]]:
    """A label map under the data root and the names of its values: the ``labels`` of the
    ``dataset.json`` of its Decathlon/nnU-Net folder (``<dataset>/labelsTr/<case>``), if any."""
    path = resolve_data_path(request, rel)
    root: Path = request.app.state.data_root
    names: dict[int, str] = {}
    for folder in (path.parent, path.parent.parent):
        if folder.is_relative_to(root) and (folder / "dataset.json").is_file():
            names = {k: v for k, v in dataset_labels(folder).items() if k != 0}
            break
    return np.rint(uploads.load_received(path, rel)), names


# ---------------------------------------------------------------------- answers
def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).decode("ascii")


def status_out(sid: str, s: Session) -> m.StatusOut:
    st = s.status()
    return m.StatusOut(id=sid, name=st["name"], shape=tuple(st["shape"]),
                       spacing=tuple(s.meta["spacing"]),
                       affine=np.asarray(s.volume.affine, float).tolist(), axis=st["axis"],
                       method=st["method"], preset=st["preset"], budget=float(st["budget"]),
                       order=s.meta.get("order", "gain"),
                       has_maps=s.queue is not None,
                       accepted=st["accepted"], can_undo=st["can_undo"], can_redo=st["can_redo"],
                       queue=st["queue"], structures=st["structures"])


def slice_out(s: Session, axis: int, index: int) -> m.SliceOut:
    mask = s.slice_mask(index, axis)
    return m.SliceOut(axis=axis, index=index, shape=mask.shape, mask=_b64(mask),
                      scribbles=_b64(s.slice_scribbles(index, axis)))


def action_out(sid: str, s: Session, changes: list) -> m.ActionOut:
    last = next((c for c in reversed(changes) if c.index is not None), None)
    sl = slice_out(s, last.axis, last.index) if last is not None else None
    return m.ActionOut(changes=[m.ChangeOut(**c.to_dict()) for c in changes], slice=sl,
                       status=status_out(sid, s))


def _require_maps(s: Session) -> None:
    if s.suggestions is None or s.queue is None:
        raise InputError("no prediction yet: POST the session's predict or maps endpoint first")


def _refine(s: Session, index: int, axis: int | None, method: str | None,
            structure: int | None = None, overwrite: bool = False):
    try:
        return s.refine(index, axis=axis, method=method, structure=structure, overwrite=overwrite)
    except ImportError as exc:
        raise HTTPException(503, f"refinement method {method or s.meta['method']!r} is not "
                                 f"available on this server ({exc})") from None


router = APIRouter()


# ---------------------------------------------------------------------- data root, sessions
@router.get(FILES, response_model=list[m.FileEntry])
def list_files(request: Request) -> list[m.FileEntry]:
    """Image files under the data root (relative paths), for the viewer's case picker."""
    root: Path | None = request.app.state.data_root
    if root is None:
        return []
    out: list[m.FileEntry] = []
    for path in sorted(root.rglob("*")):  # rglob does not descend into symlinked folders
        if len(out) >= MAX_FILES_LISTED:
            break
        try:
            if path.is_file() and uploads.accepted(path.name) and path.resolve().is_relative_to(root):
                out.append(m.FileEntry(path=path.relative_to(root).as_posix(),
                                       size=path.stat().st_size))
        except (OSError, RuntimeError):  # a symbolic link loop, a file removed meanwhile
            continue
    return out


@router.get(SESSIONS, response_model=list[m.SessionSummary])
def list_sessions(request: Request) -> list[m.SessionSummary]:
    return [m.SessionSummary(**s) for s in _store(request).summaries()]


@router.post(SESSIONS, response_model=m.StatusOut, status_code=201)
def create_from_path(body: m.CreateFromPath, request: Request) -> m.StatusOut:
    """A session on a file under the data root."""
    path = resolve_data_path(request, body.path)
    labels, names = _labels_under_root(request, body.labels) if body.labels else (None, None)
    try:
        sid, s = _store(request).create(path, axis=body.axis, method=body.method, budget=body.budget,
                                        preset=body.preset, order=body.order, labels=labels, names=names)
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), body.path)) from None
    log.info("session %s created from %s", sid, body.path)
    return status_out(sid, s)


@router.post(UPLOAD, response_model=m.StatusOut, status_code=201)
def create_from_upload(request: Request, file: Annotated[UploadFile, File()],
                       axis: Annotated[int, Form()] = 2, method: Annotated[str, Form()] = "idrlse",
                       budget: Annotated[float, Form()] = 0.6,
                       preset: Annotated[str | None, Form()] = None,
                       order: Annotated[str, Form()] = "gain",
                       labels: Annotated[UploadFile | None, File()] = None) -> m.StatusOut:
    """A session on an uploaded image (multipart field ``file``; size limited by the app), with
    an optional label map to start from (field ``labels``: several structures, "label N")."""
    options = m.SessionOptions(axis=axis, method=method, budget=budget, preset=preset or None, order=order)
    raw_name = file.filename or ""
    store = _store(request)
    scratch = store.scratch()
    try:
        dest = uploads.receive(file.file, raw_name, scratch, max_voxels=request.app.state.max_voxels)
        label_map = None
        if labels is not None:
            shown = f"labels ({labels.filename or 'labels'})"
            got = uploads.receive(labels.file, labels.filename or "labels", scratch, field="labels",
                                  max_voxels=request.app.state.max_voxels)
            label_map = np.rint(uploads.load_received(got, shown))
        try:
            sid, s = store.create(dest, axis=options.axis, method=options.method, budget=options.budget,
                                  preset=options.preset, order=options.order, labels=label_map)
        except InputError as exc:
            raise InputError(str(exc).replace(str(dest), raw_name)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("session %s created from upload %s", sid, raw_name)
    return status_out(sid, s)


@router.delete(SESSION, status_code=204, response_class=Response)
def delete_session(sid: str, request: Request) -> Response:
    """Delete the session and its folder (waits for its running requests)."""
    _store(request).delete(sid)
    return Response(status_code=204)


@router.get(SESSION, response_model=m.StatusOut)
def get_session(sid: str, request: Request) -> m.StatusOut:
    """The session's status (reopens it from disk if the server restarted)."""
    with _store(request).use(sid) as s:
        return status_out(sid, s)


# ---------------------------------------------------------------------- maps and guidance
@router.post(PREDICT, response_model=m.ActionOut)
def predict(sid: str, request: Request) -> m.ActionOut:
    """Run the server's MG-Net (``segrefine serve --model``; default the shipped one) for the
    initial mask, probability and uncertainty; the change's ``warning`` names how the image
    differs from the model's training data."""
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.predict(model=request.app.state.model)])


@router.post(MAPS, response_model=m.ActionOut)
def set_maps_upload(sid: str, request: Request, prob: Annotated[UploadFile, File()],
                    uncertainty: Annotated[UploadFile, File()],
                    segmentation: Annotated[UploadFile | None, File()] = None) -> m.ActionOut:
    """Use another model's maps, uploaded as NIfTI/NRRD/MHA on the image's grid."""
    store = _store(request)
    with store.use(sid) as s:
        scratch = store.scratch()
        try:
            arrays = []
            for field, up in (("prob", prob), ("uncertainty", uncertainty),
                              ("segmentation", segmentation)):
                if up is None:
                    arrays.append(None)
                    continue
                dest = uploads.receive(up.file, up.filename or field, scratch, field=field,
                                       max_voxels=request.app.state.max_voxels)
                arrays.append(uploads.load_received(dest, f"{field} ({up.filename or field})"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return action_out(sid, s, [s.set_maps(*arrays)])


@router.post(MAPS_FROM_PATH, response_model=m.ActionOut)
def set_maps_from_path(sid: str, body: m.MapsFromPath, request: Request) -> m.ActionOut:
    """Use another model's maps stored under the data root."""
    prob = _load_under_root(request, body.prob)
    unc = _load_under_root(request, body.uncertainty)
    seg = _load_under_root(request, body.segmentation) if body.segmentation else None
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.set_maps(prob, unc, seg)])


@router.get(SUGGESTIONS, response_model=m.SuggestionsOut)
def suggestions(sid: str, request: Request,
                structure: Annotated[int | None, Query(ge=1, le=127)] = None) -> m.SuggestionsOut:
    """Slices ranked by the session's order with the budget M' and the queue's state (stop rule,
    progress); with ``structure``, ranked for that structure (``segrefine.structures``)."""
    with _store(request).use(sid) as s:
        _require_maps(s)
        sugg = s.suggestions if structure is None else s.structure_suggestions(structure)
        return m.SuggestionsOut(**{k: v for k, v in sugg.items() if k != "slices"},
                                slices=sugg["slices"], queue=s.suggestion_queue(structure).state(),
                                accepted=list(s.accepted))


@router.post(NEXT, response_model=m.NextOut)
def next_suggestion(sid: str, request: Request,
                    structure: Annotated[int | None, Query(ge=1, le=127)] = None) -> m.NextOut:
    """Advance the queue (the whole mask's, or ``structure``'s): the next slice to check, or None when done."""
    with _store(request).use(sid) as s:
        k = s.next_suggestion(structure=structure)
        return m.NextOut(index=k, queue=s.suggestion_queue(structure).state())


@router.post(REPORT, response_model=m.NextOut)
def report(sid: str, body: m.ReportRequest, request: Request) -> m.NextOut:
    with _store(request).use(sid) as s:
        s.report(body.needed_refinement, structure=body.structure)
        return m.NextOut(index=None, queue=s.suggestion_queue(body.structure).state())


# ---------------------------------------------------------------------- editing
@router.post(SCRIBBLES, response_model=m.ActionOut)
def add_scribble(sid: str, body: m.ScribbleRequest, request: Request) -> m.ActionOut:
    """Mark pixels of one slice; with ``refine`` also refine that slice (pen-up)."""
    with _store(request).use(sid) as s:
        changes = [s.add_scribble(body.index, body.points, body.label, axis=body.axis,
                                  radius=body.radius, structure=body.structure)]
        if body.refine:
            changes.append(_refine(s, body.index, body.axis, body.method, body.structure, body.overwrite))
        return action_out(sid, s, changes)


@router.post(SCRIBBLES_PNG, response_model=m.ActionOut)
def add_scribble_png(sid: str, request: Request, file: Annotated[UploadFile, File()],
                     index: Annotated[int, Form()], axis: Annotated[int | None, Form()] = None,
                     refine: Annotated[bool, Form()] = False,
                     method: Annotated[str | None, Form()] = None,
                     structure: Annotated[int | None, Form()] = None,
                     overwrite: Annotated[bool, Form()] = False) -> m.ActionOut:
    """Scribbles of one slice as a PNG label image (see :func:`segrefine.uploads.read_scribble_png`)."""
    opts = m.RefineRequest(index=index, axis=axis, method=method, structure=structure, overwrite=overwrite)
    data = file.file.read()
    with _store(request).use(sid) as s:
        view_shape = s.slice_mask(opts.index, opts.axis).shape
        labels = uploads.read_scribble_png(data, view_shape, file.filename or "scribbles.png")
        if not labels.any():
            raise InputError(f"{file.filename or 'scribbles.png'}: the PNG holds no scribble")
        changes = [s.add_scribble(opts.index, labels == lab, lab, axis=opts.axis, structure=opts.structure)
                   for lab in (1, 2) if (labels == lab).any()]
        if refine:
            changes.append(_refine(s, opts.index, opts.axis, opts.method, opts.structure, opts.overwrite))
        return action_out(sid, s, changes)


@router.post(REFINE, response_model=m.ActionOut)
def refine(sid: str, body: m.RefineRequest, request: Request) -> m.ActionOut:
    with _store(request).use(sid) as s:
        return action_out(sid, s, [_refine(s, body.index, body.axis, body.method, body.structure,
                                           body.overwrite)])


@router.post(UNDO, response_model=m.ActionOut)
def undo(sid: str, request: Request) -> m.ActionOut:
    """Undo the last action (a refinement, then the scribble before it)."""
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.undo()])


@router.post(REDO, response_model=m.ActionOut)
def redo(sid: str, request: Request) -> m.ActionOut:
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.redo()])


@router.post(ACCEPT, response_model=m.ActionOut)
def accept(sid: str, body: m.AcceptRequest, request: Request) -> m.ActionOut:
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.accept(body.index, needed_refinement=body.needed_refinement,
                                            structure=body.structure)])


# ---------------------------------------------------------------------- structures
@router.post(STRUCTURES, response_model=m.ActionOut)
def add_structure(sid: str, body: m.NewStructure, request: Request) -> m.ActionOut:
    """A new, empty structure in the session's label map."""
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.add_structure(body.name, color=body.color, id=body.id)])


@router.post(LABELS, response_model=m.ActionOut)
def set_labels_upload(sid: str, request: Request, file: Annotated[UploadFile, File()]) -> m.ActionOut:
    """Replace the mask by an uploaded label map on the image's grid (a structure per value;
    the session's names are kept for the ids it has, others are "label N")."""
    store = _store(request)
    with store.use(sid) as s:
        scratch = store.scratch()
        try:
            dest = uploads.receive(file.file, file.filename or "labels", scratch, field="file",
                                   max_voxels=request.app.state.max_voxels)
            labels = np.rint(uploads.load_received(dest, f"labels ({file.filename or 'labels'})"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return action_out(sid, s, [s.set_labels(labels)])


@router.post(LABELS_FROM_PATH, response_model=m.ActionOut)
def set_labels_from_path(sid: str, body: m.LabelsFromPath, request: Request) -> m.ActionOut:
    """Replace the mask by a label map under the data root (named from its dataset.json)."""
    labels, names = _labels_under_root(request, body.path)
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.set_labels(labels, names=names)])


# ---------------------------------------------------------------------- reading
@router.get(SLICE, response_model=m.SliceOut)
def get_slice(sid: str, axis: int,
              index: Annotated[int, PathParam(ge=0, le=m.MAX_INDEX)], request: Request) -> m.SliceOut:
    """Mask and scribbles of one slice (see the models module for the encoding)."""
    with _store(request).use(sid) as s:
        return slice_out(s, axis, index)


@router.get(ARRAY)
def get_array(sid: str, name: str, request: Request) -> Response:
    """A whole volume as raw little-endian bytes in NIfTI (Fortran, i fastest) order:
    ``mask`` and ``scribbles`` as uint8, ``uncertainty`` as float32 (``X-Dtype``, ``X-Shape``)."""
    if name not in ("mask", "scribbles", "uncertainty"):
        raise HTTPException(404, f"no array {name!r}; use 'mask', 'scribbles' or 'uncertainty'")
    with _store(request).use(sid) as s:
        if name == "uncertainty":
            _require_maps(s)
        arr = {"mask": s.mask, "scribbles": s.scribbles, "uncertainty": s.uncertainty}[name]
        dtype = np.dtype("<f4") if name == "uncertainty" else np.dtype(np.uint8)
        data = np.asarray(arr).astype(dtype, copy=False).tobytes(order="F")
        shape = ",".join(map(str, arr.shape))
    return Response(data, media_type="application/octet-stream",
                    headers={"X-Shape": shape, "X-Order": "F", "X-Dtype": dtype.name,
                             "Cache-Control": "no-store"})


@router.get(VOLUME)
def get_volume(sid: str, name: str, request: Request) -> Response:
    """Volumes for the viewer, as gzipped NIfTI on the image's grid (see :func:`segrefine.uploads.viewer_nifti`)."""
    if name not in VOLUME_NAMES:
        raise HTTPException(404, f"no volume {name!r}; one of {', '.join(VOLUME_NAMES)}")
    with _store(request).use(sid) as s:
        if name in ("uncertainty.nii.gz", "prob.nii.gz"):
            _require_maps(s)
        array, dtype = {"image.nii.gz": (s.volume.array, None), "mask.nii.gz": (s.mask, np.uint8),
                        "scribbles.nii.gz": (s.scribbles, np.uint8),
                        "uncertainty.nii.gz": (s.uncertainty, np.float32),
                        "prob.nii.gz": (s.prob, np.float32)}[name]
        data = uploads.viewer_nifti(s.volume, array, dtype)
    return Response(data, media_type="application/gzip", headers={"Cache-Control": "no-store"})


@router.get(DOWNLOAD)
def download(sid: str, request: Request,
             format: Annotated[Literal["nifti", "seg.nrrd"], Query()] = "nifti") -> Response:
    """The current label map (every structure's id) with the image's geometry
    (``Session.save_mask``): a uint8 NIfTI (the session's status names the ids), or with
    ``format=seg.nrrd`` 3D Slicer's segmentation file (segments named and coloured)."""
    store = _store(request)
    scratch = store.scratch()
    suffix = ".nii.gz" if format == "nifti" else ".seg.nrrd"
    try:
        with store.use(sid) as s:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", s.meta["name"]) or "image"
            path = s.save_mask(scratch / f"mask{suffix}")
        data = path.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    media = "application/gzip" if format == "nifti" else "application/octet-stream"
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}_mask{suffix}"',
                             "Cache-Control": "no-store"})
