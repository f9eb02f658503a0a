"""``GET /api/cohort``: the cohort review queue of ``segrefine serve --cohort OUT``.

The volumes of a cohort output folder ranked by expected gain from review
(:func:`segrefine.cohort.queue.review_queue`), a page at a time, each with its
slices in review order and, when its image lies under the data root, the
relative ``path`` that ``POST /api/sessions`` opens.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from segrefine.cohort.queue import MANIFEST, review_queue

COHORT = "/cohort"
router = APIRouter()


class CohortCase(BaseModel):
    rank: int
    case: str
    path: str | None  # relative to the data root; None when the image is elsewhere
    expected_gain: float
    uncertainty: float | None
    foreground_voxels: int | None
    axis: int | None
    slices: list[tuple[int, float]]  # [index, expected wrong voxels], review order


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
    page = [CohortCase(path=_relative(c["image"], root), **{k: v for k, v in c.items() if k != "image"})
            for c in data["cases"][offset:offset + limit]]
    return CohortOut(total=len(data["cases"]), offset=offset, total_expected_gain=data["total_expected_gain"],
                     cases=page, failed=[CohortFailure(**f) for f in data["failed"]])
