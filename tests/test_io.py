import gzip
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hostile import gzip_bomb, lying_header_gz, nifti_header
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from segrefine import io
from segrefine.errors import InputError


def _all_shared_niftis(shared):
    return sorted(p for p in shared.rglob("*.nii*"))


def test_roundtrip_every_shared_nifti(shared, tmp_path):
    files = _all_shared_niftis(shared)
    assert len(files) > 200
    for path in files:
        vol = io.load(path, finite=False)
        out = io.save(vol, tmp_path / "rt.nii.gz")
        a, b = nib.load(str(path)), nib.load(str(out))
        assert np.array_equal(a.affine, b.affine), path
        assert a.get_data_dtype() == b.get_data_dtype(), path
        assert nib.aff2axcodes(a.affine) == nib.aff2axcodes(b.affine)
        assert int(a.header["qform_code"]) == int(b.header["qform_code"]), path
        assert int(a.header["sform_code"]) == int(b.header["sform_code"]), path
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), path


def test_spacing_from_affine(shared):
    vol = io.load(shared / "fetal_stacks" / "images" / "a26_12.nii.gz")
    assert np.allclose(vol.spacing, (1.484375, 1.484375, 6.0), atol=1e-4)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_sitk_roundtrip_keeps_geometry(shared, tmp_path, suffix):
    src = io.load(shared / "fetal_stacks" / "images" / "a26_12.nii.gz")
    path = io.save(src, tmp_path / f"x{suffix}")
    back = io.load(path)
    assert np.array_equal(back.array, src.array)
    assert np.allclose(back.affine, src.affine, atol=1e-4)


def test_dicom_series(tmp_path):
    import SimpleITK as sitk

    arr = (np.arange(4 * 5 * 6).reshape(6, 5, 4) % 200).astype(np.int16)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.7, 2.0))
    folder = tmp_path / "dcm"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(arr.shape[0]):
        sl = img[:, :, z]
        sl.SetMetaData("0020|0032", f"0\\0\\{2.0 * z}")
        sl.SetMetaData("0020|0013", str(z))
        sl.SetMetaData("0020|000e", "1.2.3.4")
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(sl)
    vol = io.load(folder)
    assert vol.shape == (4, 5, 6)
    assert np.array_equal(vol.array, np.transpose(arr, (2, 1, 0)))
    assert np.allclose(vol.spacing, (0.5, 0.7, 2.0), atol=1e-3)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        io.load(tmp_path / "missing.nii.gz")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match="not an image file"):
        io.load(txt)
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        io.load(fake)
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match="expected a 3D image, got 2D"):
        io.load(tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), str(tmp_path / "t.nii.gz"))
    with pytest.raises(InputError, match="got 4D"):
        io.load(tmp_path / "t.nii.gz")
    bad = np.zeros((4, 4, 4), np.float32)
    bad[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(InputError, match="NaN or inf"):
        io.load(tmp_path / "nan.nii.gz")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- header checks and caps
# (issue 13: memory sized from the header; Hypothesis for headers with odd shapes, dtypes,
# affines and for truncated or corrupted files)
DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32,
          np.float64]
FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


def _nib_load(path: Path):
    img = nib.load(str(path))
    return img, np.asanyarray(img.dataobj)


def test_lying_headers_and_bombs_refused_before_reading(tmp_path):
    for name, data in (("lie.nii.gz", lying_header_gz()), ("bomb.nii.gz", gzip_bomb())):
        path = tmp_path / name
        path.write_bytes(data)
        for check in (io.load, io.check_header):
            with pytest.raises(io.ImageTooLarge, match=r"\(512, 512, 1024\) needs 2147483648 bytes"):
                check(path)
    # the same header as int16 holds 512 MiB: within the default caps, past a smaller one
    path = tmp_path / "int16.nii.gz"
    path.write_bytes(lying_header_gz(dtype=np.int16))
    io.check_header(path)
    with pytest.raises(io.ImageTooLarge, match="more than the cap of 1000000"):
        io.check_header(path, max_voxels=1_000_000)
    with pytest.raises(InputError, match="cut short: its header announces 536870912 bytes of voxel "
                                         "data, the file holds 0"):
        io.load(path)  # nothing is committed for the bytes the file does not hold
    # a scaled int16 image (a CT's intercept) is float32 in memory: the byte cap counts that
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((100, 100, 100))
    hdr.set_data_dtype(np.int16)
    hdr.set_slope_inter(1.0, -1024.0)
    path = tmp_path / "scaled.nii"
    path.write_bytes(hdr.binaryblock + bytes(4) + bytes(2 * 10**6))
    io.check_header(path, max_voxels=10**6)
    vol = io.load(path)
    assert vol.array.dtype == np.float32 and (vol.array == -1024).all()
    # scaled int32 is float64 in memory: 4 bytes a voxel stored, 8 counted against the cap
    hdr.set_data_dtype(np.int32)
    path.write_bytes(hdr.binaryblock + bytes(4) + bytes(4 * 10**6))
    with pytest.raises(io.ImageTooLarge, match="needs 8000000 bytes"):
        io.check_header(path, max_voxels=10**6)
    hdr.set_data_dtype(np.int16)
    # a 512x512x1000 CT stored as int16 with an intercept fits the default caps
    hdr.set_data_shape((512, 512, 1000))
    path.write_bytes(hdr.binaryblock + bytes(4))
    io.check_header(path)


def test_a_bomb_behind_an_honest_header_inflates_only_the_announced_bytes(tmp_path):
    path = tmp_path / "trailing.nii.gz"
    path.write_bytes(gzip_bomb((32, 32, 32), np.int16, zero_bytes=2**30))  # 1 GiB after the data
    vol = io.load(path)
    assert vol.shape == (32, 32, 32) and vol.array.dtype == np.int16 and not vol.array.any()


@FUZZ
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=5), dtype=st.sampled_from(DTYPES),
       slope=st.sampled_from([None, 1.0, 0.5, -3.0, 1e-3]), inter=st.sampled_from([0.0, -1024.0, 7.5]),
       spacing=st.tuples(*[st.floats(0.1, 8.0)] * 3), perm=st.permutations([0, 1, 2]),
       flips=st.tuples(*[st.sampled_from([-1, 1])] * 3), shear=st.floats(-0.3, 0.3),
       origin=st.tuples(*[st.floats(-500, 500)] * 3), gz=st.booleans(), seed=st.integers(0, 2**16))
def test_reader_matches_nibabel_on_valid_files(shape, dtype, slope, inter, spacing, perm, flips,
                                               shear, origin, gz, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    data = (rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, size=shape).astype(dtype)
            if info else rng.normal(size=shape).astype(dtype))
    aff = np.eye(4)  # any orientation (axis permutation, flips), oblique, any spacing
    aff[:3, :3] = (np.eye(3)[list(perm)] * np.multiply(spacing, flips))
    aff[0, 1] += shear
    aff[:3, 3] = origin
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("x.nii.gz" if gz else "x.nii")
        try:
            img = nib.Nifti1Image(data, aff, dtype=dtype)
            if slope is not None:
                img.header.set_slope_inter(slope, inter)
            nib.save(img, str(path))
        except nib.spatialimages.HeaderDataError:  # nibabel cannot write a singular affine
            assume(False)
        ref, arr = _nib_load(path)
        vol = io.load(path, ndim=None, finite=False)
        io.check_header(path, ndim=None)
    assert vol.array.shape == arr.shape
    if slope is not None and np.dtype(dtype).itemsize <= 2 and np.dtype(dtype).kind in "iu":
        assert vol.array.dtype == np.float32  # scaled small integers: float32, not float64
        np.testing.assert_allclose(vol.array, arr, rtol=1e-6, atol=1e-3)
    else:
        assert vol.array.dtype == arr.dtype
        np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_array_equal(vol.affine, ref.affine)
    assert vol.header.binaryblock == ref.header.binaryblock


@FUZZ
@given(dims=st.lists(st.integers(-5, 2**15 - 1), min_size=8, max_size=8),
       datatype=st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536,
                                 1792, 2048, 2304, 77]),
       vox_offset=st.sampled_from([0.0, 352.0, 353.0, 1e9, -1.0, float("nan")]),
       pixdim=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=8, max_size=8),
       body=st.binary(max_size=256), gz=st.booleans())
def test_odd_headers_give_an_input_error_or_a_checked_volume(dims, datatype, vox_offset, pixdim,
                                                            body, gz):
    """Any header: the reader refuses it with an InputError (ImageTooLarge past the caps) or
    returns a volume within the caps; never another exception, never a large allocation."""
    hdr = np.zeros((), dtype=nib.Nifti1Header.template_dtype)
    hdr["sizeof_hdr"] = 348
    hdr["magic"] = b"n+1"
    hdr["dim"] = dims
    hdr["datatype"] = datatype
    hdr["bitpix"] = 8
    hdr["vox_offset"] = vox_offset
    hdr["pixdim"] = pixdim
    hdr["qform_code"] = 1
    raw = hdr.tobytes() + bytes(4) + body
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("odd.nii.gz" if gz else "odd.nii")
        path.write_bytes(gzip.compress(raw) if gz else raw)
        try:
            vol = io.load(path, ndim=None, max_voxels=10**6)
        except InputError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        else:
            assert vol.array.size <= 10**6 and np.isfinite(vol.affine).all()


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), flips=st.lists(st.integers(0, 10**6), max_size=4),
       case=st.sampled_from(["hippocampus/imagesTr/hippocampus_004.nii.gz",
                             "fetal_stacks/images/a26_12.nii.gz"]))
def test_truncated_or_corrupted_gzip_gives_an_input_error(shared, cut, flips, case):
    data = bytearray((shared / case).read_bytes())
    data = data[: int(len(data) * cut)]
    for f in flips:
        if data:
            data[f % len(data)] ^= 0xFF
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "broken.nii.gz"
        path.write_bytes(bytes(data))
        with pytest.raises(InputError) as err:
            io.load(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_nan_affine_refused(tmp_path):
    path = tmp_path / "nan.nii.gz"
    affine = np.eye(4)
    affine[1, 3] = np.inf
    path.write_bytes(gzip.compress(nifti_header((4, 4, 4), np.uint8, affine) + bytes(64)))
    with pytest.raises(InputError, match="affine\\) holds NaN or inf"):
        io.load(path)
