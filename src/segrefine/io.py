"""Volume I/O: NIfTI through nibabel (affine, header and dtype kept exactly),
NRRD/MHA and DICOM series through SimpleITK, and atomic writes.

Array convention: a volume's ``array`` is indexed ``(i, j, k)`` in the file's
own voxel order (no reorientation); ``spacing`` holds one number per axis in
the same order, in millimetres.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from segrefine.errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES


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


def load(path: str | os.PathLike, *, ndim: int | None = 3, finite: bool = True) -> Volume:
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

    Raises
    ------
    InputError
        One line naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        vol = _load_dicom(path)
    elif str(path).lower().endswith(NIFTI_SUFFIXES):
        try:
            img = nib.load(str(path))
            array = np.asanyarray(img.dataobj)
        except Exception as exc:  # nibabel raises many types for corrupt files
            raise InputError(f"{path}: not a readable NIfTI image ({_first_line(exc)})") from None
        vol = Volume(array=array, affine=img.affine.copy(), header=img.header.copy())
    elif str(path).lower().endswith(SITK_SUFFIXES):
        vol = _load_sitk(path)
    else:
        raise InputError(
            f"{path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)} "
            "or a DICOM folder)"
        )
    if ndim is not None and vol.array.ndim != ndim:
        raise InputError(
            f"{path}: expected a {ndim}D image, got {vol.array.ndim}D of shape {vol.array.shape}"
        )
    if finite and np.issubdtype(vol.array.dtype, np.floating):
        bad = ~np.isfinite(vol.array)
        if bad.any():
            raise InputError(f"{path}: {int(bad.sum())} voxels are NaN or inf")
    return vol


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sitk_to_volume(image) -> Volume:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # (k, j, i) order
    array = np.ascontiguousarray(np.transpose(array, tuple(range(array.ndim))[::-1]))
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


def _load_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable image ({_first_line(exc)})") from None
    return _sitk_to_volume(image)


def _load_dicom(folder: Path) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if len(ids) > 1:
        raise InputError(f"{folder}: folder holds {len(ids)} DICOM series; give one series folder")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
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


def save(volume: Volume, path: str | os.PathLike, *, dtype=None) -> Path:
    """Write ``volume`` atomically (temp file + rename).

    NIfTI keeps the stored affine and header (qform/sform codes); with ``dtype``
    the array is cast and the header's data type and scaling updated. NRRD/MHA
    go through SimpleITK (LPS conversion of the affine).
    """
    path = Path(path)
    array = volume.array if dtype is None else np.asarray(volume.array).astype(dtype, copy=False)
    lower = str(path).lower()
    with atomic_path(path) as tmp:
        if lower.endswith(NIFTI_SUFFIXES):
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
            _save_sitk(volume.with_array(array), tmp)
        else:
            raise InputError(f"{path}: unsupported output format")
    return path


def _save_sitk(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    array = np.asarray(volume.array)
    image = sitk.GetImageFromArray(np.transpose(array, tuple(range(array.ndim))[::-1]).copy())
    affine = volume.affine.copy()
    affine[:2, :] *= -1
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in affine[:3, 3]))
    image.SetDirection(tuple(float(d) for d in (affine[:3, :3] / spacing).ravel()))
    sitk.WriteImage(image, str(path))


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
