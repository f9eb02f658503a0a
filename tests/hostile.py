"""Hostile image files for the reader and server tests: lying headers, gzip bombs, bad affines."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np

#: the shape and type the issue's hostile uploads claim: 2 GiB of float64
BIG_SHAPE = (512, 512, 1024)
BIG_DTYPE = np.float64


def nifti_header(shape, dtype, affine=None) -> bytes:
    """A single-file NIfTI-1 header (348 bytes + 4 extension bytes) for ``shape`` and ``dtype``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    aff = np.eye(4) if affine is None else np.asarray(affine, float)
    hdr.set_sform(aff, code=1)
    if np.isfinite(aff).all():
        hdr.set_qform(aff, code=1)
    else:  # nibabel cannot make a quaternion of a NaN matrix: write the sform rows only
        hdr["qform_code"] = 0
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\0\0\0\0"


def lying_header_gz(shape=BIG_SHAPE, dtype=BIG_DTYPE) -> bytes:
    """A .nii.gz of a header only, claiming ``shape`` x ``dtype`` (the issue's 89-byte upload)."""
    return gzip.compress(nifti_header(shape, dtype), compresslevel=9, mtime=0)


def gzip_bomb(shape=BIG_SHAPE, dtype=BIG_DTYPE, *, zero_bytes: int | None = None) -> bytes:
    """A .nii.gz whose stream inflates to the header plus ``zero_bytes`` of zeros (default: all
    the voxels the header announces), built from repeated gzip members of 8 MiB of zeros:
    about 1 KB compressed per 1 MiB inflated (2 GiB of zeros in about 2 MB)."""
    if zero_bytes is None:
        zero_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    chunk = 8 * 2**20
    n_full, rest = divmod(zero_bytes, chunk)
    member = gzip.compress(bytes(chunk), compresslevel=9, mtime=0)
    parts = [gzip.compress(nifti_header(shape, dtype), compresslevel=9, mtime=0)]
    parts += [member] * n_full
    if rest:
        parts.append(gzip.compress(bytes(rest), compresslevel=9, mtime=0))
    return b"".join(parts)


def nan_affine_nifti(path: Path, shape=(8, 8, 8)) -> Path:
    """A small valid image whose sform (its affine) holds a NaN."""
    affine = np.eye(4)
    affine[0, 0] = np.nan
    data = np.arange(int(np.prod(shape)), dtype=np.int16).tobytes(order="F")
    Path(path).write_bytes(gzip.compress(nifti_header(shape, np.int16, affine) + data))
    return Path(path)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc status")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmRSS in /proc status")


def can_measure_memory() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/status")
