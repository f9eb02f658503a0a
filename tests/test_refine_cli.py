import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli


@pytest.fixture()
def fetal_inputs(shared, tmp_path):
    img_path = shared / "fetal_stacks" / "images" / "a26_12.nii.gz"
    img = nib.load(str(img_path))
    seg = np.asarray(nib.load(str(shared / "fetal_stacks" / "reference_mgnet" / "a26_12_seg.nii.gz")).dataobj)
    prob = np.where(seg > 0, 0.8, 0.2).astype(np.float32)
    prob_path = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(prob, img.affine), str(prob_path))
    return img_path, img, seg, prob_path


def _scribbles(seg, k):
    scr = np.zeros(seg.shape, np.uint8)
    ys, xs = np.nonzero(seg[:, :, k])
    cy, cx = int(ys.mean()), int(xs.mean())
    scr[cy - 2:cy + 3, cx, k] = 1
    scr[2:6, 2, k] = 2
    return scr, (cy, cx)


@pytest.mark.parametrize("method", ["idrlse", "graphcut"])
def test_refine_cli_refines_only_scribbled_slices(fetal_inputs, tmp_path, method):
    img_path, img, seg, prob_path = fetal_inputs
    k = int(np.argmax((seg > 0).sum((0, 1))))
    scr, (cy, cx) = _scribbles(seg, k)
    scr_path = tmp_path / "scr.nii.gz"
    nib.save(nib.Nifti1Image(scr, img.affine), str(scr_path))
    out = tmp_path / "refined.nii.gz"
    proc = run_cli("refine", "-i", img_path, "--prob", prob_path, "--scribbles", scr_path, "-o", out,
                   "--method", method, check=True)
    assert f"refined 1 slices ({k})" in proc.stderr
    res = nib.load(str(out))
    assert np.array_equal(res.affine, img.affine) and res.get_data_dtype() == np.uint8
    arr = np.asarray(res.dataobj)
    others = [i for i in range(seg.shape[2]) if i != k]
    assert np.array_equal(arr[:, :, others] > 0, seg[:, :, others] > 0)
    assert arr[cy, cx, k] == 1 and arr[3, 2, k] == 0


def test_refine_cli_bad_input(fetal_inputs, tmp_path):
    img_path, img, seg, prob_path = fetal_inputs
    out = tmp_path / "o.nii.gz"
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), img.affine), str(small))
    bad_vals = tmp_path / "vals.nii.gz"
    nib.save(nib.Nifti1Image(np.full(seg.shape, 3, np.uint8), img.affine), str(bad_vals))
    bad_prob = tmp_path / "p2.nii.gz"
    nib.save(nib.Nifti1Image(np.full(seg.shape, 1.5, np.float32), img.affine), str(bad_prob))
    nan_prob = tmp_path / "p3.nii.gz"
    arr = np.full(seg.shape, 0.5, np.float32)
    arr[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), str(nan_prob))
    good_scr = tmp_path / "scr.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(seg.shape, np.uint8), img.affine), str(good_scr))
    cases = [
        (["--prob", prob_path, "--scribbles", small], "differs from the image's"),
        (["--prob", prob_path, "--scribbles", bad_vals], "values must be 0 (none), 1 (foreground) or 2"),
        (["--prob", bad_prob, "--scribbles", good_scr], "[0, 1]"),
        (["--prob", nan_prob, "--scribbles", good_scr], "NaN or inf"),
        (["--prob", prob_path, "--scribbles", good_scr, "--method", "magic"], "--method must be one of"),
    ]
    for args, msg in cases:
        proc = run_cli("refine", "-i", img_path, *args, "-o", out)
        assert proc.returncode == 2 and msg in proc.stderr, (args, proc.stderr)
        assert not out.exists()


def test_refine_cli_preset_and_painting(fetal_inputs, tmp_path):
    img_path, img, seg, prob_path = fetal_inputs
    k = int(np.argmax((seg > 0).sum((0, 1))))
    scr, _ = _scribbles(seg, k)
    scr_path = tmp_path / "scr.nii.gz"
    nib.save(nib.Nifti1Image(scr, img.affine), str(scr_path))
    out = tmp_path / "painted.nii.gz"
    proc = run_cli("refine", "-i", img_path, "--prob", prob_path, "--scribbles", scr_path, "-o", out,
                   "--method", "paint", check=True)
    assert "(preset default)" in proc.stderr
    expected = np.asarray(nib.load(str(prob_path)).dataobj) > 0.5
    expected[scr == 1], expected[scr == 2] = True, False
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj) > 0, expected)
    proc = run_cli("refine", "-i", img_path, "--prob", prob_path, "--scribbles", scr_path, "-o", out,
                   "--preset", "fancy")
    assert proc.returncode == 2 and "--preset must be one of default, paper, hippocampus" in proc.stderr
