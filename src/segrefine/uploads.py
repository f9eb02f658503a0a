"""Files that arrive from outside (an upload, a path a client names) and files sent back.

The one way a received image enters the program: :func:`receive` keeps a safe
name, streams the bytes to a scratch folder, and refuses an empty file, a header
that points at data elsewhere and an image past the voxel cap before any voxel
is read. :func:`receive_dicom_zip` does the same for a DICOM series sent as one
``.zip`` (no member outside the folder, file and byte caps counted while unpacking,
the series' size checked from its header). :func:`read_scribble_png` decodes a stroke image; :func:`viewer_nifti`
encodes a volume for the viewer. The server (``segrefine.server``) only routes;
the checks and conversions live here so that every entry point shares them.
"""

from __future__ import annotations

import gzip
import io as _io
import re
import shutil
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from segrefine import io
from segrefine.errors import InputError

#: what an upload may be: self-contained image files only (no detached headers)
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
FORMATS = "NIfTI (.nii, .nii.gz), NRRD (.nrrd) or MHA (.mha)"
#: characters of an upload's name kept (file systems allow 255 bytes a name)
MAX_NAME = 100
#: most files a DICOM series .zip may hold (one file per slice; 5000 slices is far past any scan)
ZIP_MAX_FILES = 5000
#: unpacked bytes a series .zip may hold beyond the voxel cap's bytes (headers of the files)
ZIP_HEADER_BYTES = 256 * 2**20


class UnsupportedFormat(InputError):
    """A file whose name says it is not an accepted image (the server answers 415)."""


def accepted(name: str) -> bool:
    """Whether ``name`` ends with one of :data:`UPLOAD_SUFFIXES` (any case)."""
    return name.lower().endswith(UPLOAD_SUFFIXES)


def suffix_of(name: str, shown: str | None = None) -> str:
    """The accepted suffix of ``name``, or :class:`UnsupportedFormat` naming ``shown``."""
    for suffix in UPLOAD_SUFFIXES:
        if name.lower().endswith(suffix):
            return suffix
    raise UnsupportedFormat(f"{shown or name}: not an accepted image; expected {FORMATS}")


def safe_name(raw_name: str, shown: str | None = None) -> str:
    """A client's file name reduced to its last part, safe characters and :data:`MAX_NAME`."""
    base = (raw_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not base:
        raise InputError(f"{shown + ': ' if shown else ''}the upload has no file name")
    suffix = suffix_of(base, shown)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", base[: -len(suffix)])[:MAX_NAME].strip(".") or "image"
    return stem + suffix


def check_self_contained(path: Path, shown: str) -> None:
    """Refuse NRRD/MHA headers that point at a data file elsewhere (they could name any file)."""
    lower = path.name.lower()
    if not lower.endswith((".nrrd", ".mha")):
        return
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    if lower.endswith(".nrrd"):
        if re.search(rb"(?im)^\s*data ?file\s*:", head.split(b"\n\n", 1)[0]):
            raise InputError(f"{shown}: NRRD with a detached data file is not accepted; "
                             "send a single-file .nrrd")
    else:
        found = re.search(rb"(?im)^\s*ElementDataFile\s*=\s*(\S+)", head)
        if found is None or found.group(1) != b"LOCAL":
            raise InputError(f"{shown}: MHA whose data is not stored in the file itself "
                             "(ElementDataFile = LOCAL) is not accepted")


def check_image_file(path: Path, shown: str, max_voxels: int) -> None:
    """Self-contained and within the voxel and byte caps, read from the header only.

    Messages name ``shown`` (what the client called the file), never the server's
    own path; past the caps :class:`io.ImageTooLarge` (the server answers 413).
    """
    check_self_contained(path, shown)
    try:
        io.check_header(path, max_voxels=max_voxels)
    except InputError as exc:
        raise type(exc)(str(exc).replace(str(path), shown)) from None


def receive(stream: BinaryIO, raw_name: str, scratch: Path, *, max_voxels: int,
            field: str | None = None) -> Path:
    """Stream an upload into ``scratch`` under a safe name and check it (see module doc).

    ``field`` (e.g. ``"prob"``) names the file in messages and on disk when one
    request carries several files. Returns the checked file's path.
    """
    shown = f"{field} ({raw_name})" if field else raw_name
    name = safe_name(raw_name, shown if raw_name else field)
    dest = scratch / (f"{field}{suffix_of(name)}" if field else name)
    with open(dest, "wb") as out:
        shutil.copyfileobj(stream, out, length=1 << 20)
    if dest.stat().st_size == 0:
        raise InputError(f"{shown}: the uploaded file is empty")
    check_image_file(dest, shown, max_voxels)
    return dest


def _zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member may not be unpacked (a name that leaves the folder, a link, encryption)."""
    name = info.filename
    if "\x00" in name or "\\" in name:
        return "holds a NUL or '\\' in its name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute name"
    if ".." in name.split("/"):
        return "names '..' (a path outside the archive's folder)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def receive_dicom_zip(stream: BinaryIO, raw_name: str, scratch: Path, *, max_voxels: int,
                      max_files: int = ZIP_MAX_FILES, max_bytes: int | None = None) -> tuple[Path, io.Volume]:
    """A DICOM series uploaded as one ``.zip``, unpacked into a folder of ``scratch`` and read.

    The members are unpacked flat (each under its last name part, made safe) into
    ``scratch/<zip stem>/``; folder entries and ``__MACOSX``/hidden files are skipped.
    Refused, with a one-line :class:`InputError` naming ``raw_name`` (and the member): not
    a zip; a member with an absolute name, ``..``, ``\\`` or NUL in it, a symbolic link or
    an encrypted one (the whole archive is refused, nothing is kept); more than
    ``max_files`` files; more than ``max_bytes`` unpacked bytes (default: the voxel cap's
    bytes plus :data:`ZIP_HEADER_BYTES`), counted while unpacking so a zip bomb stops at
    the cap; two members with the same file name; no DICOM series, or several. The
    series' size is checked against ``max_voxels`` from its header before its voxels
    are read. Returns ``(folder, volume)``.
    """
    shown = (raw_name or "upload.zip").replace("\\", "/").rsplit("/", 1)[-1][:MAX_NAME]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", shown[:-4] if shown.lower().endswith(".zip") else shown)
    stem = stem.strip(".")[:MAX_NAME] or "series"
    if max_bytes is None:
        max_bytes = io.voxel_cap(max_voxels) * io.BYTES_PER_VOXEL + ZIP_HEADER_BYTES
    archive = scratch / "upload.zip"
    with open(archive, "wb") as out:
        shutil.copyfileobj(stream, out, length=1 << 20)
    if archive.stat().st_size == 0:
        raise InputError(f"{shown}: the uploaded file is empty")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{shown}: not a readable .zip archive ({exc})") from None
    folder = scratch / stem
    folder.mkdir()
    with zf:
        members = zf.infolist()
        for info in members:  # every name checked before anything is written
            problem = _zip_member_problem(info)
            if problem:
                raise InputError(f"{shown}: member {info.filename[:120]!r} {problem}; the archive is refused")
        files = [i for i in members if not i.is_dir()
                 and not any(p.startswith(".") or p == "__MACOSX" for p in i.filename.split("/") if p)]
        if not files:
            raise InputError(f"{shown}: the archive holds no files; zip the files of one DICOM series")
        if len(files) > max_files:
            raise InputError(f"{shown}: the archive holds {len(files)} files, more than the cap of {max_files}")
        total = 0
        for info in files:
            leaf = re.sub(r"[^A-Za-z0-9._-]", "_", info.filename.rsplit("/", 1)[-1])[:MAX_NAME].lstrip(".")
            target = folder / (leaf or "file")
            try:
                with zf.open(info) as src, open(target, "xb") as dst:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > max_bytes:
                            raise InputError(f"{shown}: more than {max_bytes} bytes once unpacked "
                                             f"({max_bytes / 2**20:.0f} MB cap); the archive is refused")
                        dst.write(chunk)
            except FileExistsError:
                raise InputError(f"{shown}: two members are named {target.name!r}; zip the files of "
                                 "one DICOM series") from None
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
                raise InputError(f"{shown}: member {info.filename[:120]!r} cannot be unpacked ({exc})") from None
    archive.unlink()
    try:
        volume = io.load(folder, max_voxels=max_voxels)
    except InputError as exc:
        raise type(exc)(str(exc).replace(str(folder), shown)) from None
    return folder, volume


def load_received(path: Path, shown: str) -> np.ndarray:
    """The voxels of a file :func:`receive` accepted, messages naming ``shown``."""
    try:
        return io.load(path).array
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), shown)) from None


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
