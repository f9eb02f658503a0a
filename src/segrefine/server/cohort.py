"""``GET /api/cohort``: the cohort review queue of ``segrefine serve --cohort OUT``.

The volumes of a cohort output folder ranked by expected gain from review
(:func:`segrefine.cohort.queue.review_queue`), a page at a time, each with its
slices in review order and, when its image lies under the data root, the
relative ``path`` that ``POST /api/sessions`` opens.

``POST /api/cohort/cases/{case}/session`` opens a case for review: a web session on
its image (which must lie under the data root) with the cohort's own maps from
``OUT`` (``<case>.nii.gz`` labels with ``<case>_prob`` and ``<case>_uncertainty`` of
``predict``, or ``<case>_entropy`` of ``refine-gcn``), on the axis the cohort ranked
the slices along. The case name is looked up in the queue, never joined to a path
unchecked: every file must resolve inside ``OUT`` and pass the voxel cap. The
session of each case is remembered in ``<workspace>/cohort-sessions.json`` (per
cohort folder, with the outputs' size and modification time): opening a case again
reopens its session, with the edits made, unless the cohort's outputs changed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel

from segrefine import io, uploads
from segrefine.cohort.queue import MANIFEST, review_queue
from segrefine.errors import InputError
from segrefine.server import models as m
from segrefine.server.routes import resolve_data_path, status_out
from segrefine.server.store import read_workspace_map, write_workspace_map

log = logging.getLogger(__name__)

COHORT = "/cohort"
CASE_SESSION = "/cohort/cases/{case}/session"
SESSIONS_FILE = "cohort-sessions.json"
router = APIRouter()
_sessions_lock = threading.Lock()


class CohortCase(BaseModel):
    rank: int
    case: str
    path: str | None  # relative to the data root; None when the image is elsewhere
    expected_gain: float
    uncertainty: float | None
    foreground_voxels: int | None
    axis: int | None
    slices: list[tuple[int, float]]  # [index, expected wrong voxels], review order
    session: str | None = None  # the web session opened on this case, if any
    accepted: int | None = None  # slices accepted in that session


class CohortFailure(BaseModel):
    case: str
    error: str | None


class CohortOut(BaseModel):
    total: int
    offset: int
    total_expected_gain: float
    cases: list[CohortCase]
    failed: list[CohortFailure]


def _queue(request: Request) -> dict:
    """The queue of the cohort folder, recomputed when its manifest changes."""
    out: Path | None = getattr(request.app.state, "cohort", None)
    if out is None:
        raise HTTPException(404, "this server has no cohort (start it with --cohort OUT)")
    manifest = Path(out) / MANIFEST
    stamp = manifest.stat().st_mtime_ns if manifest.exists() else None
    cached = getattr(request.app.state, "cohort_cache", None)
    if cached is None or cached[0] != stamp:
        cached = (stamp, review_queue(out))
        request.app.state.cohort_cache = cached
    return cached[1]


def _relative(image: str | None, root: Path | None) -> str | None:
    if image is None or root is None:
        return None
    path = Path(image).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


@router.get(COHORT, response_model=CohortOut)
def cohort_queue(request: Request, offset: int = Query(0, ge=0),
                 limit: int = Query(100, ge=1, le=1000)) -> CohortOut:
    """Cases ``offset`` to ``offset + limit`` of the review queue, highest expected gain first."""
    data = _queue(request)
    root = request.app.state.data_root
    known = _known_sessions(request)
    page = []
    for c in data["cases"][offset:offset + limit]:
        sid, accepted = _open_session_of(request, known.get(c["case"]))
        page.append(CohortCase(path=_relative(c["image"], root), session=sid, accepted=accepted,
                               **{k: v for k, v in c.items() if k != "image"}))
    return CohortOut(total=len(data["cases"]), offset=offset, total_expected_gain=data["total_expected_gain"],
                     cases=page, failed=[CohortFailure(**f) for f in data["failed"]])


# ---------------------------------------------------------------------- a case opened for review
def _cohort_dir(request: Request) -> Path:
    out = getattr(request.app.state, "cohort", None)
    if out is None:
        raise HTTPException(404, "this server has no cohort (start it with --cohort OUT)")
    return Path(out).resolve()


def _sessions_path(request: Request) -> Path:
    return request.app.state.store.workspace / SESSIONS_FILE


def _read_sessions(request: Request) -> dict:
    return read_workspace_map(_sessions_path(request), "the cohort's cases open new sessions")


def _known_sessions(request: Request) -> dict:
    """``{case: {"session": id, "signature": ...}}`` of this server's cohort folder."""
    if getattr(request.app.state, "cohort", None) is None:
        return {}
    entries = _read_sessions(request).get(str(_cohort_dir(request)), {})
    return entries if isinstance(entries, dict) else {}


def _open_session_of(request: Request, entry) -> tuple[str | None, int | None]:
    """The session id of a remembered case and its accepted slices (None, None when gone)."""
    store = request.app.state.store
    sid = entry.get("session") if isinstance(entry, dict) else None
    if not isinstance(sid, str) or not store.exists(sid):
        return None, None
    with store.use(sid) as s:
        return sid, len(s.accepted)


def _case_files(out: Path, case: str) -> dict[str, Path]:
    """The cohort's maps of ``case`` in ``out`` (resolved, checked to stay inside it)."""
    def inside(name: str) -> Path | None:
        path = (out / name).resolve()
        if not path.is_relative_to(out):
            raise HTTPException(403, f"case {case[:80]!r}: {name} resolves outside the cohort folder")
        return path if path.is_file() else None

    label = inside(f"{case}.nii.gz")
    prob, unc = inside(f"{case}_prob.nii.gz"), inside(f"{case}_uncertainty.nii.gz")
    entropy = None if (prob and unc) else inside(f"{case}_entropy.nii.gz")
    if label is None or not ((prob and unc) or entropy):
        raise HTTPException(404, f"case {case[:80]!r}: the cohort folder lacks its maps ({case}.nii.gz with "
                                 f"{case}_prob.nii.gz and {case}_uncertainty.nii.gz, or {case}_entropy.nii.gz); "
                                 "rerun the cohort's predict or refine-gcn")
    files = {"label": label}
    files.update({"prob": prob, "uncertainty": unc} if prob and unc else {"entropy": entropy})
    return files


def _signature(files: dict[str, Path]) -> str:
    return "|".join(f"{k}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for k, p in sorted(files.items()))


def _load_maps(files: dict[str, Path], case: str, max_voxels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probability, uncertainty and labels of ``case`` (refine-gcn: from labels and entropy)."""
    arrays = {}
    for key, path in files.items():
        shown = f"case {case}: {path.name}"
        uploads.check_image_file(path, shown, max_voxels)
        try:
            arrays[key] = io.load(path, finite=key != "label").array
        except InputError as exc:
            raise InputError(str(exc).replace(str(path), shown)) from None
    label = np.asarray(arrays["label"]) > 0
    if "entropy" in arrays:
        from segrefine.cohort.tasks import minority_from_entropy

        minority = minority_from_entropy(arrays["entropy"])
        return np.where(label, 1 - minority, minority).astype(np.float32), arrays["entropy"], label
    return arrays["prob"], arrays["uncertainty"], label


@router.post(CASE_SESSION, response_model=m.StatusOut)
def open_case(case: str, request: Request, response: Response) -> m.StatusOut:
    """A web session on cohort case ``case`` with the cohort's maps (201 when new; 200 when the
    case's session is reopened, edits kept)."""
    out = _cohort_dir(request)
    data = _queue(request)
    entry = next((c for c in data["cases"] if c["case"] == case), None)
    if entry is None:
        failed = next((f for f in data["failed"] if f["case"] == case), None)
        if failed is not None:
            raise HTTPException(409, f"case {case[:80]!r} failed in the cohort run ({failed['error']}); "
                                     "nothing to review")
        raise HTTPException(404, f"case {case[:80]!r} is not in the cohort's review queue")
    root = request.app.state.data_root
    rel = _relative(entry["image"], root)
    if rel is None:
        where = "the cohort does not record it (no manifest.json)" if entry["image"] is None else (
            "it is not under the data root" if root is not None else "this server has no data root")
        raise HTTPException(404, f"case {case[:80]!r}: cannot open its image: {where}; start serve with "
                                 "--data-root a folder holding the cohort's images")
    image = resolve_data_path(request, rel)
    files = _case_files(out, case)
    signature = _signature(files)
    store = request.app.state.store
    with _sessions_lock:
        known = _read_sessions(request)
        cases = known.setdefault(str(out), {})
        old = cases.get(case)
        if isinstance(old, dict) and old.get("signature") == signature and store.exists(str(old.get("session"))):
            with store.use(old["session"]) as s:
                response.status_code = 200
                return status_out(old["session"], s)
        prob, unc, label = _load_maps(files, case, request.app.state.max_voxels)
        axis = int(entry["axis"]) if entry.get("axis") is not None else 2
        try:
            sid, s = store.create(image, axis=axis, method="idrlse", budget=0.6, order="gain")
        except InputError as exc:
            raise InputError(str(exc).replace(str(image), rel)) from None
        try:
            with store.use(sid) as s:
                s.set_maps(prob, unc, label)
                result = status_out(sid, s)
        except InputError as exc:
            store.delete(sid)  # a session without the cohort's maps is of no use
            raise InputError(f"case {case}: the cohort's maps do not fit its image ({exc})") from None
        cases[case] = {"session": sid, "signature": signature}
        write_workspace_map(_sessions_path(request), known)
    log.info("session %s opened on cohort case %s", sid, case)
    response.status_code = 201
    return result
