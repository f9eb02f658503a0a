"""The image datastore behind the MONAI Label protocol (:mod:`segrefine.server.monailabel`).

Images are

- the image files under the data root (read only; NIfTI, NRRD, MHA) and the DICOM series
  folders there (a folder holding ``.dcm`` files), except what looks like a label: files
  under a folder whose name starts with ``labels`` or ``reference`` (the Decathlon
  ``labelsTr``, the fetal stacks' ``reference_mgnet``) and files whose name ends with
  ``_seg``, ``_var``, ``_prob``, ``_uncertainty``, ``_mask`` or ``_label``. Their id is
  the path relative to the data root without the image suffix
  (``hippocampus/imagesTr/hippocampus_004``);
- images uploaded with ``PUT /datastore/?image=ID`` (stored in the workspace, under the id
  the client gave; an upload with the id of a data-root image is refused): a NIfTI, NRRD
  or MHA file, or a DICOM series as one ``.zip`` (unpacked flat into a folder with
  :func:`segrefine.uploads.receive_dicom_zip`: no member outside it, file and byte caps,
  the voxel cap; then an image of kind ``dicom`` like a series folder of the data root).

Labels are stored in the workspace, per image and tag, as numbered versions that are
never overwritten: ``labels/<image key>/<tag>/v0001.nii.gz`` with ``v0001.json`` (what the
client sent: ``label_info``, ``label_names``, the client id, the time). A read without a
version gets the latest. Tag ``original`` is the first MG-Net segmentation of the image
(written once, by the first ``/infer/segmentation``); ``final`` (the default) what a
person saved.

MG-Net's prediction of an image (probability, uncertainty, label) and its slice ranking
are computed once and cached in ``cache/`` under the image key and the file's size and
modification time, so the active-learning strategies and the scribbles refinement reuse
them.

Several structures: when the newest label a person saved for an image (any tag but
``original``, its latest version) holds two or more structure ids, :meth:`Datastore.structure_rankings`
ranks the slices per structure with :func:`segrefine.structures.structure_suggestions` (the
web session's split: each voxel's uncertainty and expected error go to the structure nearest
to it within 5 mm), named from the ``label_info`` saved with the label, else from the
``dataset.json`` labels of the image's Decathlon/nnU-Net folder, else ``label N``; cached
beside the prediction under the label's tag and version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segrefine import io, uploads
from segrefine.errors import InputError

log = logging.getLogger(__name__)

LABEL_DIRS = re.compile(r"^(labels|reference)", re.IGNORECASE)
LABEL_NAMES = re.compile(r"_(seg|var|prob|uncertainty|mask|label)$", re.IGNORECASE)
TAG = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_LISTED = 5000
MAX_ID = 128
DEFAULT_TAG = "final"
ORIGINAL_TAG = "original"
#: a session image (``PUT /session/``: Slicer's volume loaded locally) is ``session-`` + 16 hex
SESSION_ID = re.compile(r"session-[0-9a-f]{16}")
MAX_SESSIONS = 32


class UnknownImage(LookupError):
    """No image (or label) with this id in the datastore (the protocol answers 404)."""


class Conflict(InputError):
    """A request that contradicts the datastore's state (the protocol answers 409)."""


@dataclass(frozen=True)
class Image:
    """An image of the datastore: ``id``, ``path`` (file or DICOM folder), ``kind``
    (``file``, ``dicom`` or ``upload``) and ``name`` (a file name to save it under)."""

    id: str
    path: Path
    kind: str

    @property
    def name(self) -> str:
        if self.kind == "dicom":  # an uploaded series' folder carries its upload time: "<ms>__<name>"
            return re.sub(r"^\d{10,}__", "", self.path.name) + ".nii.gz"
        return self.path.name if self.kind in ("file", "session") else self.path.name.split("__", 1)[-1]

    @property
    def key(self) -> str:
        return image_key(self.id)

    def signature(self) -> str:
        """Size and modification time of the file (or of the series' files): the cache key."""
        files = sorted(self.path.iterdir()) if self.path.is_dir() else [self.path]
        parts = [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
        return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def image_key(image_id: str) -> str:
    """A folder name for ``image_id``: its safe characters and a hash (no two ids share one)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", image_id)[:80].strip(".") or "image"
    return f"{safe}-{hashlib.sha1(image_id.encode()).hexdigest()[:10]}"


def check_id(image_id: str, what: str = "image") -> str:
    if not image_id or len(image_id) > MAX_ID:
        raise InputError(f"{what} id must have 1 to {MAX_ID} characters")
    if any(c in image_id for c in "/\\\x00") or not image_id.isprintable() or image_id.startswith("."):
        raise InputError(f"{what} id {image_id[:40]!r} may not hold '/', '\\', control "
                         "characters or start with '.'")
    return image_id


def check_tag(tag: str) -> str:
    if not TAG.fullmatch(tag or ""):
        raise InputError(f"tag {str(tag)[:40]!r}: use 1 to 32 letters, digits, '_' or '-'")
    return tag


def budget_slices(ranked: dict) -> list[dict]:
    """The slices of ``guidance.suggest``'s ranking within the budget, as Next Sample lists them."""
    return [{k: s[k] for k in ("index", "score", "expected_errors", "nu")}
            for s in ranked["slices"] if s["in_budget"]]


class Datastore:
    """Images of ``data_root`` and uploads, versioned labels and cached predictions in
    ``folder`` (``<workspace>/monailabel``); see the module docstring."""

    def __init__(self, data_root: Path | None, folder: Path, *, max_voxels: int):
        self.data_root = data_root
        self.folder = io.check_writable_dir(folder)
        self.max_voxels = max_voxels
        for sub in ("images", "labels", "cache", "sessions"):
            (self.folder / sub).mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._predict_lock = threading.Lock()

    # ------------------------------------------------------------------ images
    def _root_images(self) -> list[Image]:
        root = self.data_root
        if root is None:
            return []
        out: list[Image] = []
        for path in sorted(root.rglob("*")):  # rglob does not descend into symlinked folders
            if len(out) >= MAX_LISTED:
                break
            try:
                rel = path.relative_to(root)
                if any(LABEL_DIRS.match(p) for p in rel.parts[:-1]) or any(p.startswith(".") for p in rel.parts):
                    continue
                if not path.resolve().is_relative_to(root):
                    continue
                if path.is_file() and uploads.accepted(path.name):
                    stem = io.case_name(path)
                    if not LABEL_NAMES.search(stem) and not LABEL_DIRS.match(path.name):
                        out.append(Image((rel.parent / stem).as_posix(), path, "file"))
                elif path.is_dir() and not LABEL_DIRS.match(path.name):
                    from segrefine.dicomseg import is_dicom_series

                    if is_dicom_series(path):
                        out.append(Image(rel.as_posix(), path, "dicom"))
            except (OSError, RuntimeError):  # a symbolic link loop, a file removed meanwhile
                continue
        return out

    def _uploads(self) -> list[Image]:
        out = []
        for folder in sorted((self.folder / "images").iterdir()):
            meta = folder / "image.json"
            if folder.is_dir() and meta.is_file():
                record = json.loads(meta.read_text(encoding="utf-8"))
                out.append(Image(record["id"], folder / record["file"], record.get("kind", "upload")))
        return out

    def images(self) -> dict[str, Image]:
        """Every image by id (data root first, then uploads); a DICOM series is also found by its
        SeriesInstanceUID (:meth:`get`)."""
        found = {im.id: im for im in self._root_images()}
        for im in self._uploads():
            found.setdefault(im.id, im)
        return found

    def get(self, image_id: str) -> Image:
        if SESSION_ID.fullmatch(image_id or ""):
            found = self.session(image_id)
            if found is None:
                raise UnknownImage(f"no session {image_id!r} (expired or removed): upload the image again")
            return found
        if self.data_root is not None and "/" in (image_id or ""):
            found = next((im for im in self._root_images() if im.id == image_id), None)
        else:
            found = self.images().get(image_id)
        if found is None and re.fullmatch(r"[0-9.]{3,64}", image_id or ""):
            found = self._by_series_uid(image_id)
        if found is None:
            raise UnknownImage(f"no image with id {str(image_id)[:120]!r} in the datastore")
        return found

    def _by_series_uid(self, uid: str) -> Image | None:
        """The DICOM series of the data root whose SeriesInstanceUID is ``uid`` (OHIF names
        images by their series UID)."""
        import pydicom

        for im in self._root_images():
            if im.kind != "dicom":
                continue
            first = next((p for p in sorted(im.path.iterdir()) if p.name.lower().endswith((".dcm", ".dicom"))), None)
            try:
                ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            except Exception:  # an unreadable file: not this series
                continue
            if str(ds.get("SeriesInstanceUID", "")) == uid:
                return im
        return None

    def load(self, image: Image) -> io.Volume:
        """The image's volume, its header checked against the voxel cap first."""
        if image.kind != "dicom":
            uploads.check_image_file(image.path, image.id, self.max_voxels)
        try:
            return io.load(image.path, max_voxels=self.max_voxels)
        except InputError as exc:
            raise type(exc)(str(exc).replace(str(image.path), image.id)) from None

    def add_image(self, image_id: str | None, stream, filename: str, scratch: Path, params: dict) -> Image:
        """Store an uploaded image under ``image_id`` (default: the file's case name); an
        upload with an existing upload's id replaces that image (its labels stay). A ``.zip``
        is a DICOM series (:func:`segrefine.uploads.receive_dicom_zip`), stored as its folder."""
        if image_id is not None:
            check_id(image_id)  # before any byte is stored
        kind = "upload"
        if (filename or "").lower().endswith(".zip"):
            dest, volume = uploads.receive_dicom_zip(stream, filename, scratch, max_voxels=self.max_voxels)
            array, kind = volume.array, "dicom"
        else:
            dest = uploads.receive(stream, filename, scratch, max_voxels=self.max_voxels)
            array = uploads.load_received(dest, filename)
        if array.ndim != 3:
            raise InputError(f"{filename}: expected a 3D image, got shape {array.shape}")
        image_id = check_id(image_id or (dest.name if kind == "dicom" else io.case_name(dest.name)))
        if any(im.id == image_id for im in self._root_images()):
            raise Conflict(f"image id {image_id!r} is an image of the data root (read only); "
                           "upload under another id")
        with self._lock:
            folder = self.folder / "images" / image_key(image_id)
            folder.mkdir(exist_ok=True)
            name = f"{int(time.time() * 1000)}__{dest.name}"
            shutil.move(str(dest), folder / name)
            record = {"id": image_id, "file": name, "kind": kind, "ts": int(time.time()),
                      "client_id": str(params.get("client_id") or "")[:64]}
            old = folder / "image.json"
            previous = json.loads(old.read_text(encoding="utf-8"))["file"] if old.is_file() else None
            with io.atomic_path(old) as tmp:
                tmp.write_text(json.dumps(record), encoding="utf-8")
            if previous and previous != name:
                gone = folder / previous
                if gone.is_dir() and not gone.is_symlink():
                    shutil.rmtree(gone, ignore_errors=True)
                else:
                    gone.unlink(missing_ok=True)
        return Image(image_id, folder / name, kind)

    # ------------------------------------------------------------------ sessions
    def add_session(self, stream, filename: str, scratch: Path) -> Image:
        """Keep an image a client sent for inference only (not listed in the datastore); the
        oldest sessions past :data:`MAX_SESSIONS` are removed."""
        dest = uploads.receive(stream, filename, scratch, max_voxels=self.max_voxels)
        array = uploads.load_received(dest, filename)
        if array.ndim != 3:
            raise InputError(f"{filename}: expected a 3D image, got shape {array.shape}")
        session_id = "session-" + secrets.token_hex(8)
        root = self.folder / "sessions"
        with self._lock:
            folder = root / session_id
            folder.mkdir()
            shutil.move(str(dest), folder / dest.name)
            with io.atomic_path(folder / "session.json") as tmp:
                tmp.write_text(json.dumps({"id": session_id, "file": dest.name, "ts": time.time()}),
                               encoding="utf-8")
            folders = sorted((f for f in root.iterdir() if (f / "session.json").is_file()),
                             key=lambda f: json.loads((f / "session.json").read_text(encoding="utf-8"))["ts"])
            for old in folders[:-MAX_SESSIONS]:
                shutil.rmtree(old, ignore_errors=True)
        return Image(session_id, folder / dest.name, "session")

    def session(self, session_id: str) -> Image | None:
        if not SESSION_ID.fullmatch(session_id or ""):
            return None
        meta = self.folder / "sessions" / session_id / "session.json"
        if not meta.is_file():
            return None
        record = json.loads(meta.read_text(encoding="utf-8"))
        return Image(session_id, meta.parent / record["file"], "session")

    def remove_session(self, session_id: str) -> bool:
        found = self.session(session_id)
        if found is not None:
            shutil.rmtree(found.path.parent, ignore_errors=True)
        return found is not None

    # ------------------------------------------------------------------ labels
    def _label_dir(self, image_id: str, tag: str) -> Path:
        return self.folder / "labels" / image_key(image_id) / check_tag(tag)

    def label_versions(self, image_id: str, tag: str) -> list[int]:
        folder = self._label_dir(image_id, tag)
        if not folder.is_dir():
            return []
        return sorted(int(p.name[1:5]) for p in folder.glob("v[0-9][0-9][0-9][0-9].json"))

    def save_label(self, image: Image, array: np.ndarray, volume: io.Volume, tag: str, info: dict,
                   *, once: bool = False) -> int | None:
        """Store ``array`` as the next version of ``tag``; with ``once``, only when the tag has no
        version yet (returns None then). Returns the version number."""
        with self._lock:
            versions = self.label_versions(image.id, tag)
            if once and versions:
                return None
            version = (versions[-1] if versions else 0) + 1
            folder = self._label_dir(image.id, tag)
            folder.mkdir(parents=True, exist_ok=True)
            io.save(volume.with_array(np.asarray(array).astype(np.uint8)), folder / f"v{version:04d}.nii.gz",
                    dtype=np.uint8)
            record = {**info, "image": image.id, "tag": tag, "version": version, "ts": int(time.time()),
                      "ext": ".nii.gz"}
            with io.atomic_path(folder / f"v{version:04d}.json") as tmp:
                tmp.write_text(json.dumps(record), encoding="utf-8")
        return version

    def label(self, image_id: str, tag: str, version: int | None = None) -> tuple[Path, dict]:
        """The file and record of a label version (latest by default)."""
        versions = self.label_versions(image_id, tag)
        if not versions:
            raise UnknownImage(f"no label with tag {tag!r} for image {image_id[:120]!r}")
        version = versions[-1] if version is None else version
        if version not in versions:
            raise UnknownImage(f"label {image_id[:120]!r} tag {tag!r} has no version {version} "
                               f"(has 1 to {versions[-1]})")
        folder = self._label_dir(image_id, tag)
        record = json.loads((folder / f"v{version:04d}.json").read_text(encoding="utf-8"))
        return folder / f"v{version:04d}.nii.gz", record

    def labels_of(self, image_id: str) -> dict[str, dict]:
        """``{tag: {"ext", "info", "versions"}}`` of an image (latest version's record as info)."""
        root = self.folder / "labels" / image_key(image_id)
        out = {}
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                versions = self.label_versions(image_id, folder.name) if TAG.fullmatch(folder.name) else []
                if versions:
                    _, record = self.label(image_id, folder.name)
                    out[folder.name] = {"ext": ".nii.gz", "info": record, "versions": len(versions)}
        return out

    def corrected_slices(self, image_id: str) -> list[int]:
        path = self.folder / "labels" / image_key(image_id) / "corrected.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []

    def add_corrected(self, image_id: str, slices: list[int]) -> list[int]:
        """Record slices a person corrected (scribbles refinement); returns all of them."""
        with self._lock:
            merged = sorted(set(self.corrected_slices(image_id)) | {int(k) for k in slices})
            path = self.folder / "labels" / image_key(image_id) / "corrected.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            with io.atomic_path(path) as tmp:
                tmp.write_text(json.dumps(merged), encoding="utf-8")
        return merged

    # ------------------------------------------------------------------ summaries
    def status(self) -> dict:
        images = self.images()
        tags: dict[str, int] = {}
        completed = 0
        for image_id in images:
            labels = self.labels_of(image_id)
            completed += DEFAULT_TAG in labels
            for tag in labels:
                tags[tag] = tags.get(tag, 0) + 1
        return {"total": len(images), "completed": completed, "label_tags": tags}

    def to_json(self) -> dict:
        objects = {}
        for image_id, im in self.images().items():
            objects[image_id] = {"image": {"ext": ".nii.gz" if im.kind == "dicom" else
                                           im.name[len(io.case_name(im.name)):],
                                           "info": {"name": im.name, "kind": im.kind}},
                                 "labels": self.labels_of(image_id)}
        return {"name": "segrefine", "description": "data root images and uploads; versioned labels",
                "objects": objects}

    # ------------------------------------------------------------------ predictions
    def prediction(self, image: Image, volume: io.Volume | None = None) -> dict:
        """MG-Net's ``prob``, ``uncertainty``, ``label`` arrays and ``summary`` (expected wrong
        voxels, total uncertainty, the slices ranked by expected gain), cached on disk."""
        base = self.folder / "cache" / f"{image.key}-{image.signature()}"
        npz, meta = base.with_suffix(".npz"), base.with_suffix(".json")
        with self._predict_lock:
            if npz.is_file() and meta.is_file():
                with np.load(npz) as z:
                    arrays = {k: z[k] for k in ("prob", "uncertainty", "label")}
                return {**arrays, "summary": json.loads(meta.read_text(encoding="utf-8"))}
            from segrefine.guidance import suggest
            from segrefine.uncertainty import shared_predictor

            volume = self.load(image) if volume is None else volume
            pred = shared_predictor("mgnet")(volume.array)
            ranked = suggest(pred.uncertainty, pred.label, prob=pred.prob, order="gain", axis=2)
            summary = {"method": "mgnet", "uncertainty_kind": pred.uncertainty_kind, "axis": 2,
                       "expected_errors": float(np.minimum(pred.prob, 1 - pred.prob).sum()),
                       "total_uncertainty": float(pred.uncertainty.sum()),
                       "order": ranked["order"], "budget_slices": ranked["budget_slices"],
                       "slices": budget_slices(ranked),
                       "seconds": round(pred.seconds, 3), "shape": list(pred.label.shape)}
            arrays = {"prob": pred.prob.astype(np.float32), "uncertainty": pred.uncertainty.astype(np.float32),
                      "label": pred.label.astype(np.uint8)}
            with io.atomic_path(npz) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            with io.atomic_path(meta) as tmp:
                tmp.write_text(json.dumps(summary), encoding="utf-8")
            return {**arrays, "summary": summary}

    # ------------------------------------------------------------------ structures
    def structure_label(self, image_id: str) -> tuple[Path, dict] | None:
        """The newest label a person saved for the image (any tag but ``original``; the latest
        version of each tag, newest by save time): ``(file, record)``, or None."""
        best, best_key = None, None
        for tag in self.labels_of(image_id):
            if tag == ORIGINAL_TAG:
                continue
            path, record = self.label(image_id, tag)
            key = (int(record.get("ts", 0)), path.with_suffix("").with_suffix(".json").stat().st_mtime_ns)
            if best_key is None or key > best_key:
                best, best_key = (path, record), key
        return best

    def _structure_names(self, image: Image, record: dict) -> dict[int, str]:
        """``{id: name}``: the dataset.json labels of the image's folder, overridden by the
        ``label_info`` the client saved with the label."""
        from segrefine.datasets import dataset_labels

        names: dict[int, str] = {}
        if image.kind == "file" and self.data_root is not None:
            root = Path(self.data_root).resolve()
            for folder in (image.path.parent, image.path.parent.parent):
                if folder.resolve().is_relative_to(root) and (folder / "dataset.json").is_file():
                    names = {k: v for k, v in dataset_labels(folder).items() if k != 0}
                    break
        params = record.get("params") or {}
        if params.get("label_info"):  # the client named the values: {name: id}
            names.update({int(v): str(k) for k, v in (params.get("label_names") or {}).items()
                          if isinstance(v, int) and k not in ("background", "foreground_scribbles",
                                                              "background_scribbles")})
        return names

    def structure_rankings(self, image: Image) -> dict:
        """The slices ranked per structure of the image's newest saved label (module
        docstring): ``{"label": {"tag", "version"} | None, "structures": [{"id", "name",
        "voxels", "order", "budget_slices", "expected_errors", "slices"}, ...]}``; no
        structures when that label holds fewer than two structure ids."""
        from segrefine import structures as st

        found = self.structure_label(image.id)
        if found is None:
            return {"label": None, "structures": []}
        path, record = found
        source = {"tag": record["tag"], "version": int(record["version"])}
        cache = self.folder / "cache" / (f"{image.key}-{image.signature()}-{record['tag']}"
                                         f"-v{int(record['version']):04d}-structures.json")
        if cache.is_file():
            return json.loads(cache.read_text(encoding="utf-8"))
        pred = self.prediction(image)
        label = io.load(path)
        labels = np.asarray(label.array).astype(np.uint8)
        if labels.shape != pred["prob"].shape:
            raise InputError(f"label {record['tag']} v{record['version']} of image {image.id[:120]!r}: "
                             f"shape {labels.shape} differs from the image's {pred['prob'].shape}")
        ids = [int(v) for v in np.unique(labels) if v != 0]
        out = {"label": source, "structures": []}
        if len(ids) >= 2:
            axis = int(pred["summary"]["axis"])
            spacing = tuple(float(s) for s in label.spacing)
            try:
                structures = st.structures_for(labels, names=self._structure_names(image, record))
            except InputError as exc:  # e.g. more structures than a session holds: the whole mask only
                return {**out, "note": str(exc)}
            regions = st.structure_regions(labels, spacing)
            for s in structures:
                ranked = st.structure_suggestions(pred["uncertainty"], pred["prob"], labels, s.id, spacing=spacing,
                                                  axis=axis, order="gain", regions=regions)
                out["structures"].append({
                    "id": s.id, "name": s.name, "voxels": int((labels == s.id).sum()),
                    "order": ranked["order"], "budget_slices": ranked["budget_slices"],
                    "expected_errors": ranked["total_expected_errors"],
                    "slices": budget_slices(ranked)})
        with io.atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(out), encoding="utf-8")
        return out
