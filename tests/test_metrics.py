import numpy as np
import pytest
import torch

from segrefine import io, metrics

monai_metrics = pytest.importorskip("monai.metrics")


def _monai(fn, pred, ref, spacing, **kw):
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    return float(fn(p, r, spacing=list(spacing), **kw).item())


def _erode_pair(ref):
    from scipy import ndimage

    pred = ndimage.binary_dilation(ref, iterations=1)
    pred[: pred.shape[0] // 3] = False  # a large error too
    return pred


def test_against_monai_on_real_volumes(hippo, shared):
    lab = io.load(hippo / "labelsTr" / "hippocampus_004.nii.gz").array > 0
    fetal = io.load(shared / "fetal_stacks" / "reference_mgnet" / "a26_12_seg.nii.gz")
    for ref, spacing in ((lab, (1.0, 1.0, 1.0)), (fetal.array > 0, fetal.spacing)):
        pred = _erode_pair(ref)
        p = torch.from_numpy(pred[None, None].astype(np.float32))
        r = torch.from_numpy(ref[None, None].astype(np.float32))
        d_monai = float(monai_metrics.compute_dice(p, r, include_background=True).item())
        assert metrics.dice(pred, ref) == pytest.approx(d_monai, abs=1e-6)
        a = _monai(monai_metrics.compute_average_surface_distance, pred, ref, spacing, symmetric=True)
        h = _monai(monai_metrics.compute_hausdorff_distance, pred, ref, spacing, percentile=95)
        assert metrics.assd(pred, ref, spacing) == pytest.approx(a, rel=1e-4)
        assert metrics.hd95(pred, ref, spacing) == pytest.approx(h, rel=1e-4)


def test_known_sphere_distances_anisotropic():
    z, y, x = np.mgrid[:40, :40, :40]
    r = np.sqrt((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)
    ref = r <= 10
    pred = r <= 12
    assert metrics.dice(ref, ref) == 1.0
    assert 1.5 < metrics.assd(pred, ref) < 2.5
    # doubling the spacing doubles distances
    assert metrics.assd(pred, ref, (2, 2, 2)) == pytest.approx(2 * metrics.assd(pred, ref))


def test_empty_structures():
    empty = np.zeros((5, 5, 5), bool)
    full = empty.copy()
    full[2, 2, 2] = True
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.dice(full, empty) == 0.0
    assert np.isnan(metrics.assd(full, empty))
    assert np.isnan(metrics.hd95(empty, full))
    m, sd, nan = metrics.nanmean_sd([1.0, np.nan, 3.0])
    assert (m, nan) == (2.0, 1)


def test_uncertainty_metrics():
    err = np.zeros((10, 10), bool)
    err[2:5, 2:5] = True
    unc = err * 0.9 + 0.05
    assert metrics.ueo(unc, err, 0.5) == 1.0
    assert metrics.rve(unc, err, 0.5) == 0.0
    assert metrics.rve(unc, err, 0.01) == pytest.approx((100 - 9) / 9)
    assert metrics.auroc(unc, err) == 1.0
    assert metrics.auroc(-unc, err) == 0.0
    rng = np.random.default_rng(0)
    assert metrics.auroc(rng.random(20000), rng.random(20000) < 0.3) == pytest.approx(0.5, abs=0.02)
    t = metrics.best_ueo_threshold([unc], [err])
    assert 0.05 <= t < 0.95
