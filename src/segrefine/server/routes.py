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
import gzip
import io as _io
import logging
import re
import shutil
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response

from segrefine import io
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

#: what an upload may be: self-contained image files only (no detached headers)
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
VOLUME_NAMES = ("image.nii.gz", "mask.nii.gz", "scribbles.nii.gz", "uncertainty.nii.gz", "prob.nii.gz")
MAX_FILES_LISTED = 5000
#: characters of an upload's name kept (file systems allow 255 bytes a name)
MAX_NAME = 100


def _store(request: Request) -> SessionStore:
    return request.app.state.store


# ---------------------------------------------------------------------- file checks
def _allowed_suffix(name: str) -> bool:
    return name.lower().endswith(UPLOAD_SUFFIXES)


def _formats() -> str:
    return "NIfTI (.nii, .nii.gz), NRRD (.nrrd) or MHA (.mha)"


def check_self_contained(path: Path, shown: str) -> None:
    """Refuse NRRD/MHA headers that point at a data file elsewhere (they could name any file)."""
    lower = path.name.lower()
    if not lower.endswith((".nrrd", ".mha")):
        return
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    text = head.split(b"\n\n", 1)[0] if lower.endswith(".nrrd") else head
    if lower.endswith(".nrrd"):
        if re.search(rb"(?im)^\s*data ?file\s*:", text):
            raise InputError(f"{shown}: NRRD with a detached data file is not accepted; "
                             "send a single-file .nrrd")
    else:
        found = re.search(rb"(?im)^\s*ElementDataFile\s*=\s*(\S+)", text)
        if found is None or found.group(1) != b"LOCAL":
            raise InputError(f"{shown}: MHA whose data is not stored in the file itself "
                             "(ElementDataFile = LOCAL) is not accepted")


def check_voxel_count(path: Path, shown: str, max_voxels: int) -> None:
    """Read only the header and refuse an image past this server's voxel and byte caps
    (:class:`io.ImageTooLarge`, answered 413) or unreadable (400), naming it ``shown``."""
    try:
        io.check_header(path, max_voxels=max_voxels)
    except InputError as exc:
        raise type(exc)(str(exc).replace(str(path), shown)) from None


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
    if is_file and not _allowed_suffix(target.name):
        raise HTTPException(415, f"path {shown}: not an accepted image; expected {_formats()}")
    if is_file:
        check_self_contained(target, rel)
        check_voxel_count(target, rel, request.app.state.max_voxels)
    return target


def _load_under_root(request: Request, rel: str) -> np.ndarray:
    path = resolve_data_path(request, rel)
    try:
        return io.load(path).array
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), rel)) from None


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
                       queue=st["queue"])


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


def _refine(s: Session, index: int, axis: int | None, method: str | None):
    try:
        return s.refine(index, axis=axis, method=method)
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
            if path.is_file() and _allowed_suffix(path.name) and path.resolve().is_relative_to(root):
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
    try:
        sid, s = _store(request).create(path, axis=body.axis, method=body.method, budget=body.budget,
                                        preset=body.preset, order=body.order)
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), body.path)) from None
    log.info("session %s created from %s", sid, body.path)
    return status_out(sid, s)


@router.post(UPLOAD, response_model=m.StatusOut, status_code=201)
def create_from_upload(request: Request, file: Annotated[UploadFile, File()],
                       axis: Annotated[int, Form()] = 2, method: Annotated[str, Form()] = "idrlse",
                       budget: Annotated[float, Form()] = 0.6,
                       preset: Annotated[str | None, Form()] = None,
                       order: Annotated[str, Form()] = "gain") -> m.StatusOut:
    """A session on an uploaded image (multipart field ``file``; size limited by the app)."""
    options = m.SessionOptions(axis=axis, method=method, budget=budget, preset=preset or None, order=order)
    raw_name = (file.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not raw_name:
        raise HTTPException(400, "the upload has no file name")
    if not _allowed_suffix(raw_name):
        raise HTTPException(415, f"{raw_name}: not an accepted image; expected {_formats()}")
    suffix = next(x for x in UPLOAD_SUFFIXES if raw_name.lower().endswith(x))
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", raw_name[: -len(suffix)])[:MAX_NAME].strip(".") or "image"
    safe = stem + suffix
    store = _store(request)
    scratch = store.scratch()
    try:
        dest = scratch / safe
        with open(dest, "wb") as out:
            shutil.copyfileobj(file.file, out, length=1 << 20)
        if dest.stat().st_size == 0:
            raise InputError(f"{raw_name}: the uploaded file is empty")
        check_self_contained(dest, raw_name)
        check_voxel_count(dest, raw_name, request.app.state.max_voxels)
        try:
            sid, s = store.create(dest, axis=options.axis, method=options.method, budget=options.budget,
                                  preset=options.preset, order=options.order)
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
    """Run the shipped MG-Net for the initial mask, probability and uncertainty."""
    with _store(request).use(sid) as s:
        return action_out(sid, s, [s.predict()])


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
                name = (up.filename or field).replace("\\", "/").rsplit("/", 1)[-1]
                if not _allowed_suffix(name):
                    raise HTTPException(415, f"{field} ({name}): not an accepted image; expected {_formats()}")
                dest = scratch / f"{field}{next(x for x in UPLOAD_SUFFIXES if name.lower().endswith(x))}"
                with open(dest, "wb") as out:
                    shutil.copyfileobj(up.file, out, length=1 << 20)
                check_self_contained(dest, name)
                check_voxel_count(dest, name, request.app.state.max_voxels)
                try:
                    arrays.append(io.load(dest).array)
                except InputError as exc:
                    raise InputError(str(exc).replace(str(dest), f"{field} ({name})")) from None
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
def suggestions(sid: str, request: Request) -> m.SuggestionsOut:
    """Slices ranked by ν with the budget M' and the queue's state (early stop, progress)."""
    with _store(request).use(sid) as s:
        _require_maps(s)
        return m.SuggestionsOut(**{k: v for k, v in s.suggestions.items() if k != "slices"},
                                slices=s.suggestions["slices"], queue=s.queue.state(),
                                accepted=list(s.accepted))


@router.post(NEXT, response_model=m.NextOut)
def next_suggestion(sid: str, request: Request) -> m.NextOut:
    """Advance the queue: the next slice to check, or None when done."""
    with _store(request).use(sid) as s:
        k = s.next_suggestion()
        return m.NextOut(index=k, queue=s.queue.state())


@router.post(REPORT, response_model=m.NextOut)
def report(sid: str, body: m.ReportRequest, request: Request) -> m.NextOut:
    with _store(request).use(sid) as s:
        s.report(body.needed_refinement)
        return m.NextOut(index=None, queue=s.queue.state())


# ---------------------------------------------------------------------- editing
@router.post(SCRIBBLES, response_model=m.ActionOut)
def add_scribble(sid: str, body: m.ScribbleRequest, request: Request) -> m.ActionOut:
    """Mark pixels of one slice; with ``refine`` also refine that slice (pen-up)."""
    with _store(request).use(sid) as s:
        changes = [s.add_scribble(body.index, body.points, body.label, axis=body.axis,
                                  radius=body.radius)]
        if body.refine:
            changes.append(_refine(s, body.index, body.axis, body.method))
        return action_out(sid, s, changes)


def read_scribble_png(data: bytes, shape: tuple[int, int], shown: str) -> np.ndarray:
    """A scribble PNG as labels (H, W) uint8: 0 none, 1 foreground, 2 background.

    Grey values 1/2 or the UGIR demo's 127/255 (foreground/background) are read;
    the PNG must have the slice's shape (rows, cols).
    """
    from PIL import Image

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputError(f"{shown}: not a PNG file")
    try:
        with Image.open(_io.BytesIO(data)) as im:
            if (im.height, im.width) != tuple(shape):
                raise InputError(f"{shown}: PNG of {im.height}x{im.width} pixels, the slice has "
                                 f"{shape[0]}x{shape[1]} (rows x cols)")
            arr = np.asarray(im.convert("L"))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{shown}: unreadable PNG ({exc})") from None
    values = set(np.unique(arr).tolist())
    if values <= {0, 1, 2}:
        return arr.astype(np.uint8)
    if values <= {0, 127, 255}:
        return np.select([arr == 127, arr == 255], [1, 2], 0).astype(np.uint8)
    raise InputError(f"{shown}: scribble PNG values must be 0/1/2 or 0/127/255 "
                     f"(none/foreground/background), got {sorted(values)[:8]}")


@router.post(SCRIBBLES_PNG, response_model=m.ActionOut)
def add_scribble_png(sid: str, request: Request, file: Annotated[UploadFile, File()],
                     index: Annotated[int, Form()], axis: Annotated[int | None, Form()] = None,
                     refine: Annotated[bool, Form()] = False,
                     method: Annotated[str | None, Form()] = None) -> m.ActionOut:
    """Scribbles of one slice as a PNG label image (see :func:`read_scribble_png`)."""
    opts = m.RefineRequest(index=index, axis=axis, method=method)
    data = file.file.read()
    with _store(request).use(sid) as s:
        view_shape = s.slice_mask(opts.index, opts.axis).shape
        labels = read_scribble_png(data, view_shape, file.filename or "scribbles.png")
        if not labels.any():
            raise InputError(f"{file.filename or 'scribbles.png'}: the PNG holds no scribble")
        changes = [s.add_scribble(opts.index, labels == lab, lab, axis=opts.axis)
                   for lab in (1, 2) if (labels == lab).any()]
        if refine:
            changes.append(_refine(s, opts.index, opts.axis, opts.method))
        return action_out(sid, s, changes)


@router.post(REFINE, response_model=m.ActionOut)
def refine(sid: str, body: m.RefineRequest, request: Request) -> m.ActionOut:
    with _store(request).use(sid) as s:
        return action_out(sid, s, [_refine(s, body.index, body.axis, body.method)])


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
        return action_out(sid, s, [s.accept(body.index, needed_refinement=body.needed_refinement)])


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


def viewer_nifti(volume: io.Volume, array: np.ndarray, dtype=None) -> bytes:
    """Gzipped NIfTI of ``array`` on ``volume``'s grid, for the viewer.

    The affine is written as an explicit sform (code kept, at least 1) besides the
    qform: NiiVue rebuilds a qform-only affine from the quaternion with
    ``a = sqrt(1 - b² - c² - d²)``, which is NaN when float32 rounding pushes the
    sum past 1 (the fetal stack ``a26_12`` does), and then shows the volume unoriented.
    With the sform NiiVue uses the same affine as nibabel.
    """
    import nibabel as nib

    array = np.asarray(array) if dtype is None else np.asarray(array).astype(dtype, copy=False)
    header = volume.header.copy() if volume.header is not None else None
    img = nib.Nifti1Image(array, volume.affine, header=header)
    img.set_data_dtype(array.dtype)
    img.header.set_slope_inter(None, None)
    qcode = int(header["qform_code"]) if header is not None else 0
    scode = int(header["sform_code"]) if header is not None else 0
    img.set_qform(volume.affine if qcode else None, code=qcode)
    img.set_sform(volume.affine, code=max(scode, qcode, 1))
    return gzip.compress(img.to_bytes(), compresslevel=1)


@router.get(VOLUME)
def get_volume(sid: str, name: str, request: Request) -> Response:
    """Volumes for the viewer, as gzipped NIfTI on the image's grid (see :func:`viewer_nifti`)."""
    if name not in VOLUME_NAMES:
        raise HTTPException(404, f"no volume {name!r}; one of {', '.join(VOLUME_NAMES)}")
    with _store(request).use(sid) as s:
        if name in ("uncertainty.nii.gz", "prob.nii.gz"):
            _require_maps(s)
        array, dtype = {"image.nii.gz": (s.volume.array, None), "mask.nii.gz": (s.mask, np.uint8),
                        "scribbles.nii.gz": (s.scribbles, np.uint8),
                        "uncertainty.nii.gz": (s.uncertainty, np.float32),
                        "prob.nii.gz": (s.prob, np.float32)}[name]
        data = viewer_nifti(s.volume, array, dtype)
    return Response(data, media_type="application/gzip", headers={"Cache-Control": "no-store"})


@router.get(DOWNLOAD)
def download(sid: str, request: Request) -> Response:
    """The current mask as a uint8 NIfTI with the image's affine (``Session.save_mask``)."""
    store = _store(request)
    scratch = store.scratch()
    try:
        with store.use(sid) as s:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", s.meta["name"]) or "image"
            path = s.save_mask(scratch / "mask.nii.gz")
        data = path.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Response(data, media_type="application/gzip",
                    headers={"Content-Disposition": f'attachment; filename="{name}_mask.nii.gz"',
                             "Cache-Control": "no-store"})
