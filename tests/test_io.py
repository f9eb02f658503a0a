import nibabel as nib
import numpy as np
import pytest

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
