"""The MONAI Label protocol at the server's root, so 3D Slicer's MONAI Label module and OHIF's
MONAI Label extension use segrefine with no plugin (docs/slicer.md).

Endpoints (the protocol of Project-MONAI/MONAILabel, written anew for our models):

- ``GET /info/``: models ``segmentation`` (MG-Net with uncertainty), ``scribbles`` (I-DRLSE,
  default preset) and ``scribbles_graphcut`` (Graph Cut), strategies ``gain`` and
  ``uncertainty``, the datastore summary; no top-level ``config`` (Slicer refuses it);
- ``GET /auth/`` 404 (no authentication), ``GET /train/`` 404 (nothing running),
  ``POST``/``DELETE /train/`` 501 (training is not offered over the protocol);
- ``POST /activelearning/{strategy}``: the unlabelled image (no ``final`` label) whose MG-Net
  prediction expects the most wrong voxels (``gain``) or holds the most uncertainty
  (``uncertainty``), with its slices ranked by expected gain (``slices``, the whole mask) and,
  when the newest label saved for it holds several structure ids, per structure
  (``structures``: id, name, ranked slices; ``structures_label``: that label's tag and
  version; see :meth:`Datastore.structure_rankings`); ``{}`` when none is left;
- ``POST /infer/{model}?image=ID[&output=all|image|json|dicom_seg]``: a multipart answer (a
  ``params`` JSON part and one file part named ``<image>_<model>.nii.gz``, or the
  ``result_extension`` the client asks for: ``.nrrd``), the file alone, the JSON alone,
  or a DICOM SEG (DICOM series images only). The scribbles models read the ``label`` file
  part: Slicer's label map of all segments, whose ``foreground_scribbles`` and
  ``background_scribbles`` values are given in ``params.label_info``; the segment
  ``params.selected_label_name`` is refined on every slice that holds strokes, without
  taking voxels of the other segments unless ``params.overwrite`` is true;
- ``GET /datastore/``, ``GET /datastore/image?image=ID``, ``PUT /datastore/?image=ID``
  (also ``/datastore/image``), ``PUT /datastore/label?image=ID[&tag=final]``,
  ``GET /datastore/label?label=ID&tag=TAG[&version=N]``, ``GET /datastore/image/info``;
- ``PUT /session/`` (a ``files`` part: a volume loaded in Slicer, kept for inference only,
  the 32 newest), ``GET``/``DELETE /session/{id}``; ``/infer`` takes ``session_id``.

Safety is the ``/api``'s: the datastore lists only what lies inside the data root, every
image header is checked against the voxel cap before a voxel is read (413), uploads are
NIfTI/NRRD/MHA only and streamed to the session store's scratch folders, request bodies
are size limited and state-changing requests from another origin refused (``app.py``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import shutil
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from segrefine import io, uploads
from segrefine.errors import InputError
from segrefine.server.datastore import DEFAULT_TAG, ORIGINAL_TAG, Conflict, Datastore, Image, UnknownImage

log = logging.getLogger(__name__)

VERSION = "0.1.0"
SEGMENTATION = "segmentation"
SCRIBBLES = {"scribbles": "idrlse", "scribbles_graphcut": "graphcut"}
STRATEGIES = {
    "gain": "the unlabelled image whose MG-Net prediction expects the most wrong voxels "
            "(sum of min(p, 1 - p)), i.e. the most Dice to gain; its slices ranked by the same gain",
    "uncertainty": "the unlabelled image with the largest total MG-Net uncertainty (variance of the heads)",
}
OUTPUTS = ("all", "image", "json", "dicom_seg")
RESULT_EXTENSIONS = (".nii.gz", ".nrrd")
FG_SCRIBBLES, BG_SCRIBBLES = "foreground_scribbles", "background_scribbles"

router = APIRouter()


def datastore(request: Request) -> Datastore:
    """The app's datastore, made on first use in ``<workspace>/monailabel``."""
    state = request.app.state
    if getattr(state, "monailabel_datastore", None) is None:
        state.monailabel_datastore = Datastore(state.data_root, state.store.workspace / "monailabel",
                                               max_voxels=state.max_voxels)
    return state.monailabel_datastore


@functools.lru_cache(maxsize=1)
def _model_labels() -> tuple[tuple[str, int], ...]:
    from segrefine.dicomseg import model_labels

    return tuple(model_labels().items())  # read once: the checkpoint holds the weights too


def _labels() -> dict[str, int]:
    """The shipped MG-Net's label names and values (its model card)."""
    return dict(_model_labels())


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _guard(call, *args):
    """Run ``call`` in the thread pool, answering the datastore's errors with their status."""
    try:
        return await run_in_threadpool(call, *args)
    except UnknownImage as exc:
        return _error(404, str(exc))
    except Conflict as exc:
        return _error(409, str(exc))


def _params(text: str | None, shown: str = "params") -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{shown}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise InputError(f"{shown}: a JSON object expected, got {type(value).__name__}")
    return value


async def _read_body(request: Request) -> tuple[dict, dict]:
    """``(params, files)`` of a form (a ``params`` field and file parts), of a JSON body (the
    params themselves) or of an empty body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        params = _params(form.get("params") if isinstance(form.get("params"), str) else None)
        files = {k: v for k, v in form.items() if not isinstance(v, str)}
        return params, files
    body = await request.body()
    if not body.strip():
        return {}, {}
    try:
        return _params(body.decode("utf-8"), "request body"), {}
    except UnicodeDecodeError:
        raise InputError("request body: not UTF-8 JSON") from None


def _multipart(params: dict, name: str, data: bytes, media: str) -> Response:
    """A ``multipart/form-data`` answer: a ``params`` part, then the file part ``image``."""
    boundary = f"segrefine-{secrets.token_hex(16)}"  # 128 random bits: not in the file's bytes
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(params)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: {media}\r\n\r\n").encode("utf-8")
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return Response(body, media_type=f"multipart/form-data; boundary={boundary}",
                    headers={"Cache-Control": "no-store"})


def _file_response(data: bytes, name: str, media: str) -> Response:
    return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"',
                                                     "Cache-Control": "no-store"})


def _stem(image: Image) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", io.case_name(image.name))[:80] or "image"


def _encode(volume: io.Volume, array: np.ndarray, ext: str, scratch: Path) -> bytes:
    path = io.save(volume.with_array(np.asarray(array).astype(np.uint8)), scratch / f"result{ext}",
                   dtype=np.uint8)
    return path.read_bytes()


# ---------------------------------------------------------------------- info, auth, train
@router.get("/info/")
def info(request: Request) -> dict:
    """What Slicer's and OHIF's MONAI Label clients read first."""
    labels = _labels()
    names = [k for k, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    refine = ("refines the selected segment on every slice holding foreground/background scribbles "
              "with {}, from MG-Net's probability and the current segment (default preset)")
    models = {SEGMENTATION: {"type": "segmentation", "labels": labels, "dimension": 3,
                             "description": "MG-Net (4-head grouped U-Net, one pass) segmentation with "
                                            "voxel uncertainty; the answer lists the slices to check first"},
              **{name: {"type": "scribbles", "labels": labels, "dimension": 3,
                        "description": refine.format("I-DRLSE (interactive level set)" if method == "idrlse"
                                                     else "Graph Cut")}
                 for name, method in SCRIBBLES.items()}}
    return {"name": "segrefine", "description": "Uncertainty-guided interactive refinement (MG-Net, "
                                                "I-DRLSE, Graph Cut) over the MONAI Label protocol",
            "version": VERSION, "labels": names, "models": models, "trainers": {},
            "strategies": {k: {"description": v} for k, v in STRATEGIES.items()}, "scoring": {},
            "train_stats": {}, "datastore": datastore(request).status()}


@router.get("/auth/")
def auth() -> JSONResponse:
    return _error(404, "this server has no authentication (it answers on loopback only by default)")


@router.get("/train/")
def train_status(check_if_running: bool = False) -> JSONResponse:
    return _error(404, "no training is running: training is not offered over the MONAI Label "
                       "protocol (use `segrefine train`)")


@router.post("/train/")
@router.post("/train/{model}")
@router.delete("/train/")
def train_refused(model: str | None = None) -> JSONResponse:
    return _error(501, "training is not offered over the MONAI Label protocol: segrefine's models are "
                       "trained offline with `segrefine train`; saved labels are kept, versioned, "
                       "in the workspace's monailabel/labels")


# ---------------------------------------------------------------------- active learning
def _next_sample(ds: Datastore, strategy: str) -> dict:
    best, best_score, best_summary = None, -1.0, None
    for image_id, image in ds.images().items():
        if DEFAULT_TAG in ds.labels_of(image_id):
            continue
        summary = ds.prediction(image)["summary"]
        score = summary["expected_errors"] if strategy == "gain" else summary["total_uncertainty"]
        if score > best_score:
            best, best_score, best_summary = image, score, summary
    if best is None:
        return {}
    per_structure = ds.structure_rankings(best)
    return {"id": best.id, "name": best.name, "strategy": strategy, "score": best_score,
            "expected_errors": best_summary["expected_errors"],
            "total_uncertainty": best_summary["total_uncertainty"], "axis": best_summary["axis"],
            "slices": best_summary["slices"], "structures": per_structure["structures"],
            "structures_label": per_structure["label"], "ts": int(time.time())}


@router.post("/activelearning/{strategy}")
async def activelearning(strategy: str, request: Request):
    """The next image to label (see :data:`STRATEGIES`); ``{}`` when every image has a label."""
    if strategy not in STRATEGIES:
        return _error(404, f"no strategy {strategy[:60]!r}; have {', '.join(STRATEGIES)}")
    await _read_body(request)  # client_id and the like: read and checked, not needed
    return await _guard(_next_sample, datastore(request), strategy)


# ---------------------------------------------------------------------- inference
def _label_ids(label_info, shown: str = "params.label_info") -> dict[str, int]:
    """``{segment name: value}`` from Slicer's ``label_info`` (``id`` or ``idx`` per entry)."""
    if label_info is None:
        return {}
    if not isinstance(label_info, list):
        raise InputError(f"{shown}: a list of {{name, id}} objects expected")
    out = {}
    for entry in label_info:
        value = entry.get("id", entry.get("idx")) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(value, int):
            raise InputError(f"{shown}: each entry needs a string 'name' and an integer 'id' or 'idx'")
        out[entry["name"]] = value
    return out


def _scribbles(ds: Datastore, image: Image, volume: io.Volume, pred: dict, upload, params: dict,
               method: str, scratch: Path) -> tuple[np.ndarray, dict]:
    from segrefine.refine.volume import refine_volume

    if upload is None:
        raise InputError("the scribbles models need the 'label' file part (the label map with the "
                         "foreground_scribbles and background_scribbles segments)")
    dest = uploads.receive(upload.file, upload.filename or "label.nii.gz", scratch, field="label",
                           max_voxels=ds.max_voxels)
    labelmap = np.rint(uploads.load_received(dest, f"label ({upload.filename})")).astype(np.int64)
    if labelmap.shape != volume.shape:
        raise InputError(f"label ({upload.filename}): shape {labelmap.shape} differs from image "
                         f"{image.id!r}'s {volume.shape}")
    ids = _label_ids(params.get("label_info"))
    fg = ids.get(FG_SCRIBBLES, params.get("scribbles_fg_label"))
    bg = ids.get(BG_SCRIBBLES, params.get("scribbles_bg_label"))
    if not isinstance(fg, int) or not isinstance(bg, int):
        raise InputError(f"params.label_info must name the '{FG_SCRIBBLES}' and '{BG_SCRIBBLES}' "
                         "segments with their values in the label map")
    scribbles = np.where(labelmap == fg, 1, np.where(labelmap == bg, 2, 0)).astype(np.uint8)
    if not scribbles.any():
        raise InputError(f"label ({upload.filename}): no foreground or background scribble "
                         f"(values {fg} and {bg}) in the label map")
    names = [n for n in ids if n not in (FG_SCRIBBLES, BG_SCRIBBLES, "background")]
    selected = params.get("selected_label_name") or (names[0] if names else next(iter(_labels())))
    if not isinstance(selected, str) or selected in (FG_SCRIBBLES, BG_SCRIBBLES):
        raise InputError("params.selected_label_name must name the segment to refine")
    init = labelmap == ids[selected] if selected in ids else np.zeros(volume.shape, bool)
    source = "the current segment"
    if not init.any():
        init, source = pred["label"] > 0, "MG-Net's segmentation (the segment was empty)"
    mask, refined = refine_volume(volume.array, pred["prob"], scribbles, init=init, method=method, axis=2,
                                  spacing=volume.spacing)
    # lock rule: the refined segment does not take voxels of the other segments unless
    # params.overwrite is true (foreground strokes painted over them do take them)
    others = [v for n, v in ids.items() if n not in (selected, FG_SCRIBBLES, BG_SCRIBBLES, "background")]
    locked = np.isin(labelmap, others) & (mask > 0)
    if params.get("overwrite") is not True:
        mask[locked] = 0
    corrected = ds.add_corrected(image.id, refined)
    return mask, {"label_names": {selected: 1}, "method": method, "refined_slices": refined,
                  "corrected_slices": corrected, "initial_mask": source, "axis": 2,
                  "overwrite": params.get("overwrite") is True, "other_segment_voxels": int(locked.sum())}


def _infer(ds: Datastore, scratch: Path, model: str, image_id: str, output: str, params: dict,
           files: dict):
    image = ds.get(image_id)
    volume = ds.load(image)
    start = time.perf_counter()
    pred = ds.prediction(image, volume)
    labels = _labels()
    if model == SEGMENTATION:
        value = next(iter(labels.values()))
        mask = (pred["label"] > 0).astype(np.uint8) * value
        if image.kind != "session":  # a session image is not in the datastore: no label kept
            ds.save_label(image, mask, volume, ORIGINAL_TAG, {"params": {"label_names": labels},
                                                               "model": SEGMENTATION}, once=True)
        out = {"label_names": labels, **{k: v for k, v in pred["summary"].items() if k != "shape"}}
        names = labels
    else:
        mask, out = _scribbles(ds, image, volume, pred, files.get("label"), params, SCRIBBLES[model], scratch)
        names = {next(iter(out["label_names"])): 1}
    out.update(model=model, image=image.id, latency=round(time.perf_counter() - start, 3))
    if output == "json":
        return JSONResponse(out)
    if output == "dicom_seg":
        if image.kind != "dicom":
            raise InputError(f"image {image.id!r} is not a DICOM series: a DICOM SEG needs the source "
                             "series (ask for output=image instead)")
        from segrefine.dicomseg import write_seg

        seg = write_seg(mask, image.path, scratch / "seg.dcm", label_names=names,
                        algorithm=f"segrefine {model}", corrected_slices=ds.corrected_slices(image.id))
        return _file_response(seg.read_bytes(), f"{_stem(image)}_{model}.dcm", "application/dicom")
    ext = params.get("result_extension") or ".nii.gz"
    if ext not in RESULT_EXTENSIONS:
        ext = ".nii.gz"
    data = _encode(volume, mask, ext, scratch)
    name, media = f"{_stem(image)}_{model}{ext}", "application/octet-stream"
    if output == "image":
        return _file_response(data, name, media)
    return _multipart(out, name, data, media)


@router.post("/infer/{model}")
async def infer(model: str, request: Request, image: str = "", output: str = "all", session_id: str = ""):
    """Segmentation or scribbles refinement of a datastore image, or of the session image
    ``session_id`` (see module docstring)."""
    image = session_id or image
    if model != SEGMENTATION and model not in SCRIBBLES:
        return _error(404, f"no model {model[:60]!r}; have {SEGMENTATION}, {', '.join(SCRIBBLES)}")
    if output not in OUTPUTS:
        return _error(422, f"output must be one of {', '.join(OUTPUTS)}, got {output[:40]!r}")
    if not image:
        return _error(400, "give the image id (?image=ID); upload a new image first with "
                           "PUT /datastore/?image=ID")
    params, files = await _read_body(request)
    store = request.app.state.store
    scratch = store.scratch()
    try:
        return await _guard(_infer, datastore(request), scratch, model, image, output, params, files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------- sessions
@router.put("/session/")
async def session_create(request: Request):
    """Keep an image sent for inference (Slicer: a volume loaded locally); answers its id."""
    _, files = await _read_body(request)
    upload = files.get("files") or next(iter(files.values()), None)
    if upload is None:
        raise InputError("the session needs a 'files' part (NIfTI, NRRD or MHA)")
    scratch = request.app.state.store.scratch()
    try:
        image = await _guard(datastore(request).add_session, upload.file, upload.filename or "", scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"session_id": image.id, "session_info": {"name": image.name, "image": image.id}}


@router.get("/session/{session_id}")
def session_get(session_id: str, request: Request):
    found = datastore(request).session(session_id)
    if found is None:
        return _error(404, f"no session {session_id[:40]!r} (expired or removed)")
    return {"session_id": found.id, "name": found.name, "image": found.id}


@router.delete("/session/{session_id}")
def session_remove(session_id: str, request: Request):
    if not datastore(request).remove_session(session_id):
        return _error(404, f"no session {session_id[:40]!r} (expired or removed)")
    return {"session_id": session_id}


# ---------------------------------------------------------------------- datastore
@router.get("/datastore/")
def datastore_list(request: Request, output: str = "stats"):
    ds = datastore(request)
    if output == "all":
        return ds.to_json()
    if output == "train":
        return [{"image": i, "label": i} for i in ds.images() if DEFAULT_TAG in ds.labels_of(i)]
    if output != "stats":
        return _error(422, f"output must be stats, all or train, got {output[:40]!r}")
    return ds.status()


def _image_bytes(ds: Datastore, image_id: str):
    image = ds.get(image_id)
    if image.kind == "dicom":  # a series travels as one NIfTI on its grid
        volume = ds.load(image)
        return _file_response(uploads.viewer_nifti(volume, volume.array), image.name, "application/gzip")
    uploads.check_image_file(image.path, image.id, ds.max_voxels)
    return FileResponse(image.path, media_type="application/octet-stream", filename=image.name,
                        headers={"Cache-Control": "no-store"})  # streamed, not read into memory


@router.get("/datastore/image")
async def datastore_image(request: Request, image: str):
    return await _guard(_image_bytes, datastore(request), image)


@router.get("/datastore/image/info")
async def datastore_image_info(request: Request, image: str):
    def run(ds, image_id):
        im = ds.get(image_id)
        return {"id": im.id, "name": im.name, "kind": im.kind, "labels": ds.labels_of(im.id),
                "corrected_slices": ds.corrected_slices(im.id)}
    return await _guard(run, datastore(request), image)


async def _add_image(request: Request, image: str | None):
    params, files = await _read_body(request)
    upload = files.get("file") or next(iter(files.values()), None)
    if upload is None:
        raise InputError("the upload needs a 'file' part (NIfTI, NRRD or MHA)")
    scratch = request.app.state.store.scratch()
    ds = datastore(request)
    try:
        result = await _guard(ds.add_image, image or None, upload.file, upload.filename or "", scratch, params)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result if isinstance(result, Response) else {"image": result.id}


@router.put("/datastore/")
async def datastore_add(request: Request, image: str | None = None):
    return await _add_image(request, image)


@router.put("/datastore/image")
async def datastore_add_image(request: Request, image: str | None = None):
    return await _add_image(request, image)


def _save_label(ds: Datastore, scratch: Path, image_id: str, tag: str, params: dict, upload) -> dict:
    image = ds.get(image_id)
    volume = ds.load(image)
    dest = uploads.receive(upload.file, upload.filename or "label.nii.gz", scratch, field="label",
                           max_voxels=ds.max_voxels)
    array = uploads.load_received(dest, f"label ({upload.filename})")
    if array.shape != volume.shape:
        raise InputError(f"label ({upload.filename}): shape {array.shape} differs from image "
                         f"{image.id!r}'s {volume.shape}")
    values = np.unique(array)
    if values.min() < 0 or values.max() > 255 or not np.all(values == np.round(values)):
        raise InputError(f"label ({upload.filename}): values must be integers 0..255, got {values[:8]}")
    ids = _label_ids(params.get("label_info"))
    info = {"params": {**{k: v for k, v in params.items() if k in ("label_info", "model", "client_id")},
                       "label_names": ids or _labels()},
            "corrected_slices": ds.corrected_slices(image.id)}
    version = ds.save_label(image, array, volume, tag, info)
    return {"image": image.id, "label": image.id, "tag": tag, "version": version}


@router.put("/datastore/label")
async def datastore_save_label(request: Request, image: str, tag: str = ""):
    """Save a label (multipart ``label`` file and ``params`` with ``label_info``) as the next
    version of ``tag`` (default ``final``); nothing is overwritten."""
    from segrefine.server.datastore import check_tag

    tag = check_tag(tag or DEFAULT_TAG)
    params, files = await _read_body(request)
    if files.get("label") is None:
        raise InputError("the label needs a 'label' file part (NIfTI, NRRD or MHA)")
    scratch = request.app.state.store.scratch()
    try:
        return await _guard(_save_label, datastore(request), scratch, image, tag, params, files["label"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@router.get("/datastore/label")
async def datastore_label(request: Request, label: str, tag: str = DEFAULT_TAG, version: int | None = None):
    from segrefine.server.datastore import check_tag

    check_tag(tag)

    def run(ds, label_id):
        image = ds.get(label_id)
        path, record = ds.label(image.id, tag, version)
        name = f"{_stem(image)}_{tag}_v{record['version']}.nii.gz"
        return FileResponse(path, media_type="application/gzip", filename=name, headers={"Cache-Control": "no-store"})
    return await _guard(run, datastore(request), label)


# ---------------------------------------------------------------------- the web app's DICOM SEG
@router.get("/api/sessions/{sid}/dicom-seg")
def session_dicom_seg(sid: str, request: Request, series: str) -> Response:
    """A web app session's current label map as a DICOM SEG of the data-root DICOM series
    ``series`` it was opened from (the series must have the session image's grid), one segment
    per structure of the session (a single-structure session: the model card's label name);
    the instances holding strokes are recorded as corrected by a person."""
    from segrefine.dicomseg import is_dicom_series, write_seg
    from segrefine.server.routes import resolve_data_path

    path = resolve_data_path(request, series)
    if not is_dicom_series(path):
        raise InputError(f"series {series[:120]!r}: not a DICOM series folder under the data root")
    store = request.app.state.store
    with store.use(sid) as s:
        mask = np.array(s.mask, np.uint8)
        affine, name = np.asarray(s.volume.affine, float), s.meta["name"]
        names = s.label_names() if len(s.structures) > 1 else None
        corrected = [k for k in range(mask.shape[2]) if np.asarray(s.scribbles)[:, :, k].any()]
    volume = io.load(path, max_voxels=request.app.state.max_voxels)
    if volume.shape != mask.shape or not np.allclose(volume.affine, affine, atol=1e-3):
        raise InputError(f"series {series[:120]!r}: its grid (shape {volume.shape}) is not the "
                         f"session image's (shape {mask.shape}); give the series the session was opened from")
    scratch = store.scratch()
    try:
        if names is None:  # one structure: named from the model card, as /infer names it
            labels = _labels()
            mask = (mask > 0).astype(np.uint8) * np.uint8(next(iter(labels.values())))
        else:
            labels = names
        seg = write_seg(mask, path, scratch / "seg.dcm", label_names=labels,
                        algorithm="segrefine MG-Net + refinement", corrected_slices=corrected)
        data = seg.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80] or "image"
    return _file_response(data, f"{stem}_seg.dcm", "application/dicom")
