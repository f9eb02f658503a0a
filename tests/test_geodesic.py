import itertools

import numpy as np
import pytest
from scipy import ndimage, sparse
from scipy.sparse.csgraph import dijkstra

from segrefine.errors import InputError
from segrefine.geodesic import geodesic_distance, geodesic_distance_numpy


def exact_geodesic(img, seeds, spacing, gradient_weight):
    """Dijkstra on the 8- (2D) / 26- (3D) connected graph with the same edge cost."""
    shape = img.shape
    idx = np.arange(img.size).reshape(shape)
    rows, cols, weights = [], [], []
    for off in itertools.product((-1, 0, 1), repeat=img.ndim):
        if not any(off):
            continue
        src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(off, shape))
        dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(off, shape))
        e2 = sum((o * s) ** 2 for o, s in zip(off, spacing))
        # + 1e-12: csgraph drops explicit zero weights (flat regions at gradient_weight = 1)
        cost = np.sqrt((1 - gradient_weight) * e2 + gradient_weight * (img[src] - img[dst]) ** 2) + 1e-12
        rows.append(idx[src].ravel())
        cols.append(idx[dst].ravel())
        weights.append(cost.ravel())
    graph = sparse.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(img.size, img.size),
    )
    return dijkstra(graph, indices=np.flatnonzero(seeds), min_only=True).reshape(shape)


def smooth_case(shape, seed, sigma=3.0, n_seeds=3):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(shape), sigma)
    img = (img - img.mean()) / img.std()
    seeds = np.zeros(shape, bool)
    for _ in range(n_seeds):
        seeds[tuple(rng.integers(0, n) for n in shape)] = True
    return img, seeds


def relative_errors(approx, exact):
    far = exact > 1e-6
    return (approx[far] - exact[far]) / exact[far]


# Measured on these cases (3 seeds per image, 3 images each): gradient_weight = 0 is exact;
# gradient_weight = 0.5 mean < 0.01 %, max < 0.6 %; gradient_weight = 0.9 mean < 0.3 %, max < 6 %
# (2D, 2 iterations). The tolerances below leave about a factor 2 of margin.
@pytest.mark.parametrize(
    "gradient_weight, mean_tol, max_tol", [(0.0, 1e-6, 1e-5), (0.5, 1e-3, 0.01), (0.9, 5e-3, 0.1)]
)
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 2.5)])
def test_2d_raster_scan_close_to_dijkstra(gradient_weight, mean_tol, max_tol, spacing):
    for case in range(3):
        img, seeds = smooth_case((64, 64), case)
        exact = exact_geodesic(img, seeds, spacing, gradient_weight)
        approx = geodesic_distance(img, seeds, spacing=spacing, gradient_weight=gradient_weight, iterations=2)
        rel = relative_errors(approx, exact)
        assert rel.mean() < mean_tol
        assert rel.max() < max_tol
        # a raster scan only relaxes real paths: it never goes below the true distance
        assert (approx >= exact - 1e-4).all()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0)])
def test_3d_raster_scan_close_to_dijkstra(spacing):
    # measured max relative error with 4 iterations: gradient_weight 0.5 < 0.01 %, gradient_weight 0.9 < 0.1 %
    for gradient_weight, max_tol in ((0.0, 1e-5), (0.5, 1e-3), (0.9, 5e-3)):
        img, seeds = smooth_case((14, 20, 18), 7)
        exact = exact_geodesic(img, seeds, spacing, gradient_weight)
        approx = geodesic_distance(img, seeds, spacing=spacing, gradient_weight=gradient_weight)
        rel = relative_errors(approx, exact)
        assert rel.max() < max_tol
        assert (approx >= exact - 1e-4).all()


def test_more_iterations_reach_the_exact_distance_for_pure_intensity():
    # gradient_weight = 1 paths wind along intensity valleys: 2 scans are far off, more converge
    img, seeds = smooth_case((48, 48), 3, sigma=1.5)
    exact = exact_geodesic(img, seeds, (1.0, 1.0), 1.0)
    errors = []
    for it in (1, 2, 4, 30):
        approx = geodesic_distance(img, seeds, gradient_weight=1.0, iterations=it)
        errors.append(np.abs(approx - exact).max())
    assert errors == sorted(errors, reverse=True)
    assert errors[1] > 1e-2
    np.testing.assert_allclose(
        geodesic_distance(img, seeds, gradient_weight=1.0, iterations=30), exact, rtol=1e-5, atol=1e-4
    )


def test_numpy_reference_gives_the_same_result():
    img, seeds = smooth_case((40, 57), 1, sigma=1.0)
    for gradient_weight in (0.0, 0.3, 1.0):
        a = geodesic_distance(img, seeds, spacing=(1.0, 1.7), gradient_weight=gradient_weight)
        b = geodesic_distance_numpy(img, seeds, spacing=(1.0, 1.7), gradient_weight=gradient_weight)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)
    vol, vseeds = smooth_case((9, 13, 11), 2, sigma=1.0)
    for gradient_weight in (0.0, 0.7):
        a = geodesic_distance(vol, vseeds, spacing=(2.0, 1.0, 0.8), gradient_weight=gradient_weight, iterations=2)
        b = geodesic_distance_numpy(vol, vseeds, spacing=(2.0, 1.0, 0.8), gradient_weight=gradient_weight, iterations=2)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


def test_lamb_zero_single_seed_is_close_to_euclidean():
    shape = (81, 81)
    seeds = np.zeros(shape, bool)
    seeds[40, 40] = True
    img = np.random.default_rng(0).random(shape)  # ignored at gradient_weight = 0
    d = geodesic_distance(img, seeds, gradient_weight=0.0)
    euclid = ndimage.distance_transform_edt(~seeds)
    # exact along the axes and the diagonals
    assert d[40, 80] == pytest.approx(40.0)
    assert d[0, 0] == pytest.approx(40.0 * np.sqrt(2), rel=1e-6)
    # 8-neighbour chamfer: never below Euclid, at most 1/cos(22.5°) - 1 = 8.2 % above
    far = euclid > 0
    ratio = d[far] / euclid[far]
    assert ratio.min() >= 1.0 - 1e-6
    assert ratio.max() <= 1.0 / np.cos(np.pi / 8) + 1e-6
    assert ratio.mean() < 1.06  # measured 1.053 (the mean chamfer error over all angles)


def test_spacing_is_respected():
    shape = (30, 30)
    seeds = np.zeros(shape, bool)
    seeds[0, 0] = True
    img = np.zeros(shape)
    d = geodesic_distance(img, seeds, spacing=(2.0, 0.5), gradient_weight=0.0)
    assert d[10, 0] == pytest.approx(20.0)
    assert d[0, 10] == pytest.approx(5.0)
    assert d[3, 3] == pytest.approx(3 * np.hypot(2.0, 0.5), rel=1e-6)
    # anisotropic chamfer against the anisotropic Euclidean distance
    seeds = np.zeros((41, 41), bool)
    seeds[20, 20] = True
    d = geodesic_distance(np.zeros((41, 41)), seeds, spacing=(1.0, 2.0), gradient_weight=0.0)
    euclid = ndimage.distance_transform_edt(~seeds, sampling=(1.0, 2.0))
    ratio = d[euclid > 0] / euclid[euclid > 0]
    # the widest angle between neighbouring steps, (1, 0) and (1, 1) in mm = (1, 2),
    # is atan(2); the chamfer error is at most 1 / cos(atan(2) / 2) - 1 = 17.6 %
    assert ratio.min() >= 1.0 - 1e-6
    assert ratio.max() <= 1.0 / np.cos(np.arctan(2.0) / 2) + 1e-6
    # 3D: the first axis is 3 times coarser
    vol = np.zeros((6, 6, 6))
    vseeds = np.zeros(vol.shape, bool)
    vseeds[0, 0, 0] = True
    d3 = geodesic_distance(vol, vseeds, spacing=(3.0, 1.0, 1.0), gradient_weight=0.0)
    assert d3[5, 0, 0] == pytest.approx(15.0)
    assert d3[0, 5, 0] == pytest.approx(5.0)
    assert d3[0, 0, 5] == pytest.approx(5.0)


def test_intensity_only_distance_is_zero_inside_a_flat_region_and_counts_edges():
    img = np.zeros((20, 20))
    img[:, 10:] = 3.0  # a step of 3
    seeds = np.zeros(img.shape, bool)
    seeds[5, 2] = True
    d = geodesic_distance(img, seeds, gradient_weight=1.0)
    assert np.allclose(d[:, :10], 0.0)
    assert np.allclose(d[:, 10:], 3.0)


def test_empty_seeds_give_inf_and_inputs_are_not_modified():
    img = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    seeds = np.zeros((10, 12), bool)
    img0, seeds0 = img.copy(), seeds.copy()
    d = geodesic_distance(img, seeds)
    assert d.dtype == np.float32 and d.shape == img.shape
    assert np.isinf(d).all() and (d > 0).all()
    assert np.isinf(geodesic_distance_numpy(img, seeds)).all()
    seeds[3, 4] = True
    seeds0[3, 4] = True
    geodesic_distance(img, seeds)
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(seeds, seeds0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": np.zeros((4, 4, 4, 4)), "seeds": np.zeros((4, 4, 4, 4))}, "`image` must be a 2D"),
        ({"seeds": np.zeros((5, 4))}, "`seeds`"),
        ({"spacing": (1.0,)}, "`spacing`"),
        ({"spacing": (1.0, -1.0)}, "`spacing`"),
        ({"spacing": "ab"}, "`spacing`"),
        ({"gradient_weight": 1.5}, "`gradient_weight`"),
        ({"iterations": 0}, "`iterations`"),
        ({"iterations": 1.5}, "`iterations`"),
        ({"image": np.full((4, 4), np.nan)}, "NaN"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"image": np.zeros((4, 4)), "seeds": np.ones((4, 4), bool)}
    args.update(kwargs)
    image, seeds = args.pop("image"), args.pop("seeds")
    with pytest.raises(InputError, match=match):
        geodesic_distance(image, seeds, **args)
    with pytest.raises(InputError, match=match):
        geodesic_distance_numpy(image, seeds, **args)


def test_matches_fastgeodis_when_available():
    fastgeodis = pytest.importorskip("FastGeodis")
    torch = pytest.importorskip("torch")
    img, seeds = smooth_case((48, 56), 5, sigma=2.0)
    # FastGeodis's edge cost is (1 - gradient_weight) * |step| + gradient_weight * |dI|: the same as ours
    # at gradient_weight = 0 and gradient_weight = 1; enough iterations make both exact on the 8-graph.
    image_t = torch.from_numpy(img.astype(np.float32))[None, None]
    mask_t = torch.from_numpy((~seeds).astype(np.float32))[None, None]
    for gradient_weight in (0.0, 1.0):
        ref = fastgeodis.generalised_geodesic2d(image_t, mask_t, 1e10, gradient_weight, 20)
        ref = ref.numpy()[0, 0]
        ours = geodesic_distance(img, seeds, gradient_weight=gradient_weight, iterations=20)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)
