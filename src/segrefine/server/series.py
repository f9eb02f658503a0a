"""DICOM series in the web app: list the series folders under the data root, open one as a
session, and say which series a session came from (what its DICOM SEG download needs).

- ``GET /api/series``: the DICOM series folders under the data root (a folder holding
  ``.dcm``/``.dicom`` files), as paths relative to it.
- ``POST /api/series/sessions`` (``{"path": ..., "axis", "order", "preset"}``): a session
  on that series (read with SimpleITK, voxel cap from its header first); the series the
  session came from is remembered in ``<workspace>/series-sessions.json``.
- ``GET /api/sessions/{sid}/series``: ``{"series": path | null, "reason": ...}``; with a
  path, ``GET /api/sessions/{sid}/dicom-seg?series=path`` gives the session's label map as a
  DICOM SEG of that series (:mod:`segrefine.server.monailabel`); without one the reason
  says why there is no DICOM SEG (an image from a NIfTI/NRRD/MHA file or an upload).

Paths go through :func:`segrefine.server.routes.resolve_data_path` (data-root
confinement, symbolic links followed and checked); a session id through the store.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from segrefine import io
from segrefine.errors import InputError
from segrefine.server import models as m
from segrefine.server.routes import resolve_data_path, status_out
from segrefine.server.store import read_workspace_map, write_workspace_map

log = logging.getLogger(__name__)

SERIES = "/series"
SERIES_SESSIONS = "/series/sessions"
SESSION_SERIES = "/sessions/{sid}/series"
SOURCES_FILE = "series-sessions.json"
MAX_SERIES_LISTED = 1000
NO_SERIES = ("the session's image is not a DICOM series under the data root (it was opened from a "
             "NIfTI/NRRD/MHA file or an upload): a DICOM SEG references the series it segments; "
             "open the series itself to export one")

router = APIRouter()
_lock = threading.Lock()


class SeriesEntry(BaseModel):
    path: str  # relative to the data root
    files: int


class CreateFromSeries(BaseModel):
    path: str = Field(max_length=1024)
    axis: int = 2
    order: str = "gain"
    preset: str | None = None


class SessionSeries(BaseModel):
    series: str | None
    reason: str | None


def _sources_path(request: Request) -> Path:
    return request.app.state.store.workspace / SOURCES_FILE


def _sources(request: Request) -> dict:
    return read_workspace_map(_sources_path(request), "sessions opened from DICOM series lose their series")


@router.get(SERIES, response_model=list[SeriesEntry])
def list_series(request: Request) -> list[SeriesEntry]:
    """DICOM series folders under the data root, for the viewer's series picker."""
    from segrefine.dicomseg import DICOM_SUFFIXES

    root: Path | None = request.app.state.data_root
    if root is None:
        return []
    out = []
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):  # rglob does not follow symlinked folders
        if len(out) >= MAX_SERIES_LISTED:
            break
        try:
            if not folder.resolve().is_relative_to(root):
                continue
            n = sum(1 for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(DICOM_SUFFIXES))
        except (OSError, RuntimeError):  # a loop, a folder removed meanwhile, no permission
            continue
        if n:
            out.append(SeriesEntry(path=folder.relative_to(root).as_posix(), files=n))
    return out


@router.post(SERIES_SESSIONS, response_model=m.StatusOut, status_code=201)
def create_from_series(body: CreateFromSeries, request: Request) -> m.StatusOut:
    """A session on the DICOM series folder ``body.path`` under the data root."""
    from segrefine.dicomseg import is_dicom_series

    folder = resolve_data_path(request, body.path)
    if not is_dicom_series(folder):
        raise InputError(f"path {body.path[:120]!r}: not a DICOM series folder (a folder holding .dcm files)")
    store = request.app.state.store
    try:
        io.check_header(folder, max_voxels=request.app.state.max_voxels)  # the caps, before any voxel
        sid, s = store.create(folder, axis=body.axis, method="idrlse", budget=0.6, preset=body.preset,
                              order=body.order)
    except InputError as exc:
        raise type(exc)(str(exc).replace(str(folder), body.path)) from None
    with _lock:
        sources = _sources(request)
        sources[sid] = body.path
        write_workspace_map(_sources_path(request), sources)
    log.info("session %s created from DICOM series %s", sid, body.path)
    return status_out(sid, s)


@router.get(SESSION_SERIES, response_model=SessionSeries)
def session_series(sid: str, request: Request, response: Response) -> SessionSeries:
    """The data-root DICOM series the session was opened from, or why there is none."""
    store = request.app.state.store
    with store.use(sid):  # 404 for an unknown session
        pass
    response.headers["Cache-Control"] = "no-store"
    rel = _sources(request).get(sid)
    if not isinstance(rel, str):
        return SessionSeries(series=None, reason=NO_SERIES)
    from segrefine.dicomseg import is_dicom_series

    root: Path | None = request.app.state.data_root
    path = (root / rel).resolve() if root is not None else None
    if path is None or not path.is_relative_to(root) or not is_dicom_series(path):
        return SessionSeries(series=None, reason=f"the series {rel[:120]!r} the session was opened from is no "
                                                 "longer under the data root")
    return SessionSeries(series=rel, reason=None)
