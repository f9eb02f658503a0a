"""Volume I/O: NIfTI through nibabel's header classes (affine, header and dtype kept
exactly), NRRD/MHA and DICOM series through SimpleITK, and atomic writes.

Array convention: a volume's ``array`` is indexed ``(i, j, k)`` in the file's
own voxel order (no reorientation); ``spacing`` holds one number per axis in
the same order, in millimetres.

Memory is bounded before anything is allocated (SPEC section 5): every reader
first reads the header only and refuses an image with more than ``max_voxels``
voxels (default :data:`MAX_VOXELS`, 512x512x1024, so a 512x512x1000 CT fits) or
whose voxel data would take more than :data:`BYTES_PER_VOXEL` bytes per voxel of
that cap (1 GiB by default: float32 at the cap, float64 at half of it), stored or
once scaled in memory. A ``.nii.gz`` is decompressed as a stream into a buffer of
exactly the size its header announces, so a gzip bomb costs no more memory than
an honest file of the same header, and a truncated one is refused.

NIfTI arrays are what ``np.asanyarray(nib.load(path).dataobj)`` gives, with one
difference: 8- and 16-bit integers with a scale factor or intercept are scaled in
float32 rather than float64 (a 512x512x1000 CT with intercept -1024 takes 1 GiB, not 2).
"""

from __future__ import annotations

import gzip
import io as _io
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

from segrefine.errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES

#: default voxel cap of every reader: a 512x512x1024 volume (a 512x512x1000 CT fits)
DEFAULT_MAX_VOXELS = 512 * 512 * 1024
#: the process-wide voxel cap used when a caller passes none (``segrefine --max-voxels``)
MAX_VOXELS = DEFAULT_MAX_VOXELS
#: an image's data may take at most this many bytes per voxel of the cap (stored or scaled)
BYTES_PER_VOXEL = 4
#: the most bytes of NIfTI header and extensions before the voxel data
MAX_HEADER_BYTES = 16 * 2**20
_CHUNK = 8 * 2**20


class ImageTooLarge(InputError):
    """The header announces more voxels or bytes than the cap (the server answers 413)."""


def voxel_cap(max_voxels: int | None = None) -> int:
    """``max_voxels`` or, when None, the process-wide :data:`MAX_VOXELS`."""
    return int(MAX_VOXELS if max_voxels is None else max_voxels)


def check_size(shown: str, shape: tuple, itemsize: int, *, memory_itemsize: int | None = None,
               max_voxels: int | None = None) -> None:
    """Refuse a ``shape`` of ``itemsize``-byte voxels larger than the caps (before reading data).

    Raises :class:`ImageTooLarge` naming ``shown``, the shape and the cap; an image
    without voxels is an :class:`InputError`.
    """
    cap = voxel_cap(max_voxels)
    n = 1
    for d in shape:
        n *= int(d)
    if n == 0:
        raise InputError(f"{shown}: the image has no voxels (shape {tuple(shape)})")
    if n > cap:
        raise ImageTooLarge(f"{shown}: image of shape {tuple(shape)} has {n} voxels, more than the "
                            f"cap of {cap} (set a larger one with --max-voxels)")
    limit = cap * BYTES_PER_VOXEL
    nbytes = n * max(int(itemsize), int(memory_itemsize or 0))
    if nbytes > limit:
        raise ImageTooLarge(f"{shown}: image of shape {tuple(shape)} needs {nbytes} bytes "
                            f"({nbytes / 2**30:.2f} GiB) for its voxels, more than the cap of "
                            f"{limit} bytes ({BYTES_PER_VOXEL} bytes x {cap} voxels; set a larger "
                            "one with --max-voxels)")


@dataclass
class Volume:
    """A 3D image or label map with its geometry.

    Attributes
    ----------
    array : (I, J, K) ndarray
        Voxel values in the file's voxel order.
    affine : (4, 4) ndarray
        Voxel-to-world (RAS+, mm) matrix, exactly as stored in the file.
    header : nibabel.Nifti1Header or None
        The original NIfTI header, kept so that a round trip preserves qform/sform
        codes and orientation. ``None`` for volumes built in memory.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm, one number per array axis (from the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume with the same geometry holding another array (same shape)."""
        if array.shape[:3] != self.array.shape[:3]:
            raise InputError(
                f"array of shape {array.shape} does not match volume shape {self.array.shape}"
            )
        return Volume(array=array, affine=self.affine.copy(), header=self.header)


def case_name(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def load(path: str | os.PathLike, *, ndim: int | None = 3, finite: bool = True,
         max_voxels: int | None = None) -> Volume:
    """Read a NIfTI, NRRD/MHA file or a DICOM series folder into a :class:`Volume`.

    Parameters
    ----------
    path : path
        ``.nii``/``.nii.gz`` (nibabel), ``.nrrd``/``.mha``/``.mhd`` (SimpleITK), or a
        folder holding one DICOM series.
    ndim : int or None
        Required number of dimensions (3 by default); ``None`` accepts any.
    finite : bool
        Refuse NaN or inf voxels.
    max_voxels : int or None
        Voxel cap checked against the header before any voxel is read (see the
        module docstring); None: the process-wide :data:`MAX_VOXELS`.

    Raises
    ------
    InputError
        One line naming the file and the problem (:class:`ImageTooLarge` past the cap).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        vol = _load_dicom(path, max_voxels)
    elif str(path).lower().endswith(NIFTI_SUFFIXES):
        vol = _load_nifti(path, max_voxels, ndim)
    elif str(path).lower().endswith(SITK_SUFFIXES):
        vol = _load_sitk(path, max_voxels)
    else:
        raise InputError(
            f"{path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)} "
            "or a DICOM folder)"
        )
    if ndim is not None and vol.array.ndim != ndim:
        raise InputError(
            f"{path}: expected a {ndim}D image, got {vol.array.ndim}D of shape {vol.array.shape}"
        )
    if not np.isfinite(vol.affine).all():
        raise InputError(f"{path}: the voxel-to-world matrix (affine) holds NaN or inf values")
    if finite and np.issubdtype(vol.array.dtype, np.floating):
        bad = ~np.isfinite(vol.array)
        if bad.any():
            raise InputError(f"{path}: {int(bad.sum())} voxels are NaN or inf")
    return vol


def _nifti_header_class(head: bytes, path: Path):
    """Nifti1Header or Nifti2Header from the ``sizeof_hdr`` field (either byte order)."""
    if len(head) >= 4:
        for order in ("<", ">"):
            size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
            if size == 348:
                return nib.Nifti1Header
            if size == 540:
                return nib.Nifti2Header
    raise InputError(f"{path}: not a readable NIfTI image (no NIfTI-1 or NIfTI-2 header)")


def _read_into(fh, view: memoryview) -> int:
    """Fill ``view`` from ``fh`` in chunks; the number of bytes read (short at end of file)."""
    done = 0
    while done < len(view):
        n = fh.readinto(view[done:done + _CHUNK])
        if not n:
            break
        done += n
    return done


@dataclass
class _NiftiHeader:
    klass: type
    head: bytes
    shape: tuple[int, ...]
    dtype: np.dtype
    slope: np.ndarray
    inter: np.ndarray
    offset: int


def _read_nifti_header(fh, path: Path, max_voxels: int | None, ndim: int | None) -> _NiftiHeader:
    """Read and check the fixed NIfTI header at the start of ``fh`` (no voxel is read):
    dimensions, voxel type, caps on voxels, bytes (stored and scaled) and extensions."""
    from nibabel.volumeutils import apply_read_scaling

    head = fh.read(540)
    klass = _nifti_header_class(head, path)
    size = klass.template_dtype.itemsize
    if len(head) < size:
        raise InputError(f"{path}: not a readable NIfTI image (the header is cut short)")
    hdr = klass(head[:size], check=True)
    shape = tuple(int(d) for d in hdr.get_data_shape())
    dtype = hdr.get_data_dtype()
    if ndim is not None and len(shape) != ndim:
        raise InputError(f"{path}: expected a {ndim}D image, got {len(shape)}D of shape {shape}")
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(f"{path}: voxel type {dtype} is not supported (integers or floats)")
    slope, inter = hdr.get_slope_inter()  # as nibabel's ArrayProxy scales
    scl_slope = np.asanyarray(1.0 if slope is None else slope)
    scl_inter = np.asanyarray(0.0 if inter is None else inter)
    if np.can_cast(scl_inter, scl_slope.dtype):
        scl_inter = scl_inter.astype(scl_slope.dtype)
    if dtype.kind in "iu" and dtype.itemsize <= 2 and slope is not None:
        # 8/16-bit integers scaled (a CT's intercept -1024) are exact enough in float32:
        # nibabel makes float64, twice the memory (2 GiB for a 512x512x1000 CT)
        with np.errstate(over="ignore"):
            s32, i32 = np.float32(scl_slope), np.float32(scl_inter)
        if np.isfinite(s32) and np.isfinite(i32):
            scl_slope, scl_inter = np.asanyarray(s32), np.asanyarray(i32)
    with np.errstate(all="ignore"):
        memory = apply_read_scaling(np.zeros(1, dtype), scl_slope, scl_inter).dtype
    check_size(str(path), shape, dtype.itemsize, memory_itemsize=memory.itemsize,
               max_voxels=max_voxels)
    offset = int(hdr.get_data_offset())
    if offset > MAX_HEADER_BYTES:
        raise ImageTooLarge(f"{path}: the voxel data starts at byte {offset}, after more "
                            f"than {MAX_HEADER_BYTES} bytes of header extensions")
    return _NiftiHeader(klass, head, shape, dtype, scl_slope, scl_inter, max(offset, size))


_NIFTI_ERRORS = (OSError, EOFError, zlib.error, HeaderDataError, ValueError, TypeError,
                 OverflowError)


def check_header(path: str | os.PathLike, *, max_voxels: int | None = None,
                 ndim: int | None = 3) -> None:
    """Read only the header of an image file (or the first file of a DICOM folder) and refuse
    it as :func:`load` would before reading voxels: caps (:class:`ImageTooLarge`), dimensions,
    voxel type, unreadable header (:class:`InputError`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    lower = str(path).lower()
    if path.is_dir():
        _dicom_files(path, max_voxels)
    elif lower.endswith(NIFTI_SUFFIXES):
        try:
            with (gzip.open(path, "rb") if lower.endswith(".gz") else open(path, "rb")) as fh:
                _read_nifti_header(fh, path, max_voxels, ndim)
        except InputError:
            raise
        except _NIFTI_ERRORS as exc:
            raise InputError(f"{path}: not a readable NIfTI image ({_first_line(exc)})") from None
    elif lower.endswith(SITK_SUFFIXES):
        _sitk_reader(path, max_voxels)
    else:
        raise InputError(f"{path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)} "
                         "or a DICOM folder)")


def _load_nifti(path: Path, max_voxels: int | None, ndim: int | None) -> Volume:
    """A NIfTI-1/2 file, its header checked against the caps before any voxel is read.

    The same result as ``np.asanyarray(nib.load(path).dataobj)`` (scaling included),
    with the image data decompressed as a stream into one buffer of the announced size.
    """
    from nibabel.volumeutils import apply_read_scaling

    gz = str(path).lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            h = _read_nifti_header(fh, path, max_voxels, ndim)
            klass, head, shape, dtype, offset = h.klass, h.head, h.shape, h.dtype, h.offset
            count = int(np.prod(shape, dtype=np.int64))
            total = offset + count * dtype.itemsize
            # np.empty commits memory page by page as data arrives: a truncated file or a
            # lying header costs what the file holds, at most the capped size
            buf = np.empty(total, np.uint8)
            first = head[:total]
            buf[:len(first)] = np.frombuffer(first, np.uint8)
            got = len(first) + _read_into(fh, memoryview(buf)[len(first):])
    except InputError:
        raise
    except _NIFTI_ERRORS as exc:
        raise InputError(f"{path}: not a readable NIfTI image ({_first_line(exc)})") from None
    if got < total:
        raise InputError(f"{path}: the file is cut short: its header announces {total - offset} "
                         f"bytes of voxel data, the file holds {max(got - offset, 0)}")
    try:
        header = klass.from_fileobj(_io.BytesIO(buf[:offset].tobytes()))  # with its extensions
    except _NIFTI_ERRORS as exc:
        raise InputError(f"{path}: unreadable NIfTI header extensions ({_first_line(exc)})") from None
    raw = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape, order="F")
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN are refused by load()
        array = apply_read_scaling(raw, h.slope, h.inter)
    # the header as nib.load's image holds it (scaling and offset reset: the array is scaled)
    image_klass = nib.Nifti2Image if klass is nib.Nifti2Header else nib.Nifti1Image
    img = image_klass(array, None, header)
    return Volume(array=array, affine=header.get_best_affine(), header=img.header.copy())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sitk_itemsize(pixel_id: int) -> int:
    """Bytes of one component of a SimpleITK pixel type (complex counts twice)."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(pixel_id)
    bits = re.search(r"(\d+)-bit", name)
    size = int(bits.group(1)) // 8 if bits else 8
    return size * 2 if name.startswith("complex") else size


def _check_sitk_info(reader, shown: str, max_voxels: int | None, slices: int = 1) -> None:
    """Refuse what a SimpleITK reader's header (``ReadImageInformation``) says is too large."""
    size = tuple(int(v) for v in reader.GetSize())
    if slices > 1:
        size = size[:2] + (slices,)
    comps = int(reader.GetNumberOfComponents())
    shape = size + ((comps,) if comps > 1 else ())
    check_size(shown, shape, _sitk_itemsize(reader.GetPixelID()), max_voxels=max_voxels)


def _sitk_to_volume(image) -> Volume:
    import SimpleITK as sitk

    view = sitk.GetArrayViewFromImage(image)  # (k, j, i) order, no copy
    array = np.ascontiguousarray(np.transpose(view, tuple(range(view.ndim))[::-1]))
    del view
    ndim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(ndim, ndim)
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    affine = np.eye(4)
    d = min(ndim, 3)
    affine[:d, :d] = direction[:d, :d] * spacing[:d]
    affine[:d, 3] = origin[:d]
    # ITK uses LPS world coordinates; NIfTI uses RAS.
    affine[:2, :] *= -1
    return Volume(array=array, affine=affine, header=None)


def _sitk_reader(path: Path, max_voxels: int | None):
    """A SimpleITK reader of ``path`` whose header was read and checked against the caps."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable image ({_first_line(exc)})") from None
    _check_sitk_info(reader, str(path), max_voxels)
    return reader


def _load_sitk(path: Path, max_voxels: int | None = None) -> Volume:
    reader = _sitk_reader(path, max_voxels)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable image ({_first_line(exc)})") from None
    return _sitk_to_volume(image)


def _dicom_files(folder: Path, max_voxels: int | None) -> list[str]:
    """The files of the one DICOM series in ``folder``, its size checked against the caps."""
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if len(ids) > 1:
        raise InputError(f"{folder}: folder holds {len(ids)} DICOM series; give one series folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])
    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    try:
        info.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{folder}: unreadable DICOM series ({_first_line(exc)})") from None
    _check_sitk_info(info, str(folder), max_voxels, slices=len(files))
    return files


def _load_dicom(folder: Path, max_voxels: int | None = None) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(_dicom_files(folder, max_voxels))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{folder}: unreadable DICOM series ({_first_line(exc)})") from None
    return _sitk_to_volume(image)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Nothing is left at ``path`` (nor the temporary) when the body raises.
    """
    path = Path(path)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and make sure a file can really be written there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: output path exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create output folder ({exc.strerror})") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        raise InputError(f"{path}: output folder is not writable") from None
    return path


def save(volume: Volume, path: str | os.PathLike, *, dtype=None,
         metadata: dict[str, str] | None = None) -> Path:
    """Write ``volume`` atomically (temp file + rename).

    NIfTI keeps the stored affine and header (qform/sform codes); with ``dtype``
    the array is cast and the header's data type and scaling updated. NRRD/MHA
    go through SimpleITK (LPS conversion of the affine); ``metadata`` are header fields
    written as they are (NRRD: ``key:=value`` lines), refused for NIfTI.
    """
    path = Path(path)
    array = volume.array if dtype is None else np.asarray(volume.array).astype(dtype, copy=False)
    lower = str(path).lower()
    with atomic_path(path) as tmp:
        if lower.endswith(NIFTI_SUFFIXES):
            if metadata:
                raise InputError(f"{path}: NIfTI has no free-form header fields; write .nrrd or .mha")
            header = volume.header.copy() if volume.header is not None else None
            img = nib.Nifti1Image(array, volume.affine, header=header)
            if header is not None:
                img.set_data_dtype(array.dtype)
                img.header.set_slope_inter(None, None)
                qcode = int(header["qform_code"])
                scode = int(header["sform_code"])
                if qcode or scode:  # keep the file's codes; 0 stays 0
                    img.set_qform(volume.affine if qcode else None, code=qcode)
                    img.set_sform(volume.affine if scode else None, code=scode)
            nib.save(img, str(tmp))
        elif lower.endswith(SITK_SUFFIXES):
            _save_sitk(volume.with_array(array), tmp, metadata)
        else:
            raise InputError(f"{path}: unsupported output format")
    return path


def _save_sitk(volume: Volume, path: Path, metadata: dict[str, str] | None = None) -> None:
    import SimpleITK as sitk

    array = np.asarray(volume.array)
    image = sitk.GetImageFromArray(np.transpose(array, tuple(range(array.ndim))[::-1]).copy())
    affine = volume.affine.copy()
    affine[:2, :] *= -1
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in affine[:3, 3]))
    image.SetDirection(tuple(float(d) for d in (affine[:3, :3] / spacing).ravel()))
    for key, value in (metadata or {}).items():
        image.SetMetaData(str(key), str(value))
    sitk.WriteImage(image, str(path), useCompression=bool(metadata))


def list_images(path: str | os.PathLike) -> list[Path]:
    """A file, or the image files of a folder in name order."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise InputError(f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files
