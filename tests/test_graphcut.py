import numpy as np
import pytest
from scipy import ndimage

from segrefine.errors import InputError
from segrefine.metrics import dice

pytest.importorskip("maxflow")

from segrefine.refine.graphcut import (
    graphcut_from_scratch,
    graphcut_refine,
    intensity_unaries,
    pairwise_weights,
)

H = 128
YY, XX = np.mgrid[:H, :H]
DISC = (YY - 64) ** 2 + (XX - 60) ** 2 < 25**2


def noisy_disc(seed=0, noise=0.35):
    rng = np.random.default_rng(seed)
    return DISC * 1.0 + rng.normal(0.0, noise, (H, H))


def test_from_scratch_segments_a_bright_disc_from_two_scribbles():
    image = noisy_disc()
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[62:66, 55:65] = 1  # one short stroke inside
    scribbles[10, 10:30] = 2  # one outside
    mask = graphcut_from_scratch(image, scribbles)
    assert dice(mask, DISC) > 0.98
    assert mask[scribbles == 1].all() and not mask[scribbles == 2].any()
    # 4-connectivity works too, a little rougher
    assert dice(graphcut_from_scratch(image, scribbles, connectivity=4), DISC) > 0.95


def test_from_scratch_without_scribbles_is_empty_and_one_label_still_cuts():
    image = noisy_disc()
    assert not graphcut_from_scratch(image, np.zeros((H, H), np.uint8)).any()
    # one label only: the other gets a flat histogram, and the cut still finds the disc
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[5, 5:120], scribbles[120, 5:120], scribbles[5:120, 5] = 2, 2, 2
    assert dice(graphcut_from_scratch(image, scribbles), DISC) > 0.98
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[62:66, 55:65] = 1
    assert dice(graphcut_from_scratch(image, scribbles), DISC) > 0.98


def test_refine_with_lam_zero_thresholds_the_probability():
    rng = np.random.default_rng(3)
    prob = rng.random((40, 50))
    scribbles = np.zeros((40, 50), np.uint8)
    scribbles[5, 5:15] = 1
    scribbles[30, 20:40] = 2
    mask = graphcut_refine(prob, scribbles, smoothness=0.0)
    expected = prob > 0.5
    expected[scribbles == 1] = True
    expected[scribbles == 2] = False
    np.testing.assert_array_equal(mask, expected)


def test_the_cut_follows_the_intensity_edge_when_prob_is_uninformative():
    image = np.zeros((30, 40))
    image[:, 23:] = 1.0
    prob = np.full(image.shape, 0.5)
    scribbles = np.zeros(image.shape, np.uint8)
    scribbles[15, 35] = 1
    scribbles[15, 3] = 2
    for connectivity in (4, 8):
        mask = graphcut_refine(prob, scribbles, image=image, connectivity=connectivity)
        np.testing.assert_array_equal(mask, image > 0.5)


def test_refine_keeps_an_agreeing_segmentation_and_fixes_marked_errors():
    image = noisy_disc(1)
    prob = np.clip(ndimage.gaussian_filter(DISC * 1.0, 2) * 0.9 + 0.05, 0, 1)
    none = np.zeros((H, H), np.uint8)
    assert dice(graphcut_refine(prob, none, image=image), DISC) > 0.98
    # the CNN misses a bite of the disc and adds a blob; one stroke each
    bite = DISC & ((YY - 64) ** 2 + (XX - 85) ** 2 < 12**2)
    blob = (YY - 20) ** 2 + (XX - 100) ** 2 < 8**2
    init = (DISC & ~bite) | blob
    prob = np.clip(ndimage.gaussian_filter(init * 1.0, 2) * 0.9 + 0.05, 0, 1)
    scribbles = none.copy()
    scribbles[64, 78:84] = 1
    scribbles[20, 96:104] = 2
    mask = graphcut_refine(prob, scribbles, image=image)
    assert mask[scribbles == 1].all() and not mask[scribbles == 2].any()
    assert dice(mask, DISC) > dice(init, DISC) + 0.03
    assert not (mask & blob).any()  # the blob is gone entirely


def test_refine_on_a_demo_slice(shared):
    from skimage.io import imread

    folder = shared / "levelset_2d"
    image = imread(folder / "a10_12_22img.png").astype(float)
    seg = imread(folder / "a10_12_22seg.png") > 0
    raw = imread(folder / "a10_12_22scrb.png")
    scribbles = np.where(raw == 255, 2, np.where(raw == 127, 1, 0)).astype(np.uint8)
    prob = np.clip(ndimage.gaussian_filter(seg * 1.0, 1.5), 0, 1)  # stand-in for the CNN
    mask = graphcut_refine(prob, scribbles, image=image)
    assert not mask[scribbles == 2].any()
    removed = seg & ~mask
    assert removed.sum() > 3 * (scribbles == 2).sum()  # the stroke takes its blob along
    assert dice(mask, seg) > 0.85  # the brain itself is kept


def test_pairwise_weights_and_unaries():
    flat = np.zeros((5, 6))
    weights = dict(pairwise_weights(flat, spacing=(2.0, 1.0)))
    assert weights[(0, 1)][0, 0] == pytest.approx(1.0)
    assert weights[(1, 0)][0, 0] == pytest.approx(0.5)
    assert weights[(1, 1)][0, 0] == pytest.approx(1 / np.sqrt(5))
    assert weights[(0, 1)][:, -1].max() == 0.0 and weights[(1, 0)][-1].max() == 0.0
    assert weights[(1, -1)][:, 0].max() == 0.0
    step = np.zeros((4, 4))
    step[:, 2:] = 1.0
    w = dict(pairwise_weights(step, sigma=0.5, connectivity=4))[(0, 1)]
    assert w[0, 1] == pytest.approx(np.exp(-1.0 / (2 * 0.25)))
    assert w[0, 0] == pytest.approx(1.0)
    # histogram unaries: add-one smoothed, flat for a label without scribbles
    image = np.tile(np.linspace(0, 1, 8), (4, 1))
    scribbles = np.zeros((4, 8), np.uint8)
    scribbles[0, :2] = 1
    cost_fg, cost_bg = intensity_unaries(image, scribbles, bins=4)
    np.testing.assert_allclose(cost_bg, np.log(4.0))
    assert cost_fg[0, 0] == pytest.approx(-np.log(3 / 6))
    assert cost_fg[0, -1] == pytest.approx(-np.log(1 / 6))


def test_inputs_are_not_modified():
    image = noisy_disc(2).astype(np.float32)
    prob = np.clip(DISC * 0.8 + 0.1, 0, 1)
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[64, 60] = 1
    scribbles[5, 5] = 2
    copies = [a.copy() for a in (image, prob, scribbles)]
    graphcut_refine(prob, scribbles, image=image)
    graphcut_from_scratch(image, scribbles)
    for a, b in zip((image, prob, scribbles), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scribbles": np.zeros((9, 10), np.uint8)}, "`scribbles` \\(shape"),
        ({"scribbles": np.full((10, 10), 5, np.uint8)}, "only 0 \\(none\\)"),
        ({"prob": np.full((10, 10), 1.2)}, "`prob` must be a probability in \\[0, 1\\]"),
        ({"prob": np.full((10, 10), np.nan)}, "`prob` must be finite"),
        ({"image": np.zeros((10, 9))}, "`image` \\(shape"),
        ({"smoothness": -1.0}, "`smoothness` must be a number >= 0"),
        ({"sigma": 0.0}, "`sigma` must be a number > 0"),
        ({"connectivity": 6}, "`connectivity` must be 4 or 8"),
        ({"spacing": (1.0,)}, "`spacing`"),
    ],
)
def test_refine_bad_input_raises(kwargs, match):
    args = {"prob": np.full((10, 10), 0.5), "scribbles": np.zeros((10, 10), np.uint8)}
    args.update(kwargs)
    prob, scribbles = args.pop("prob"), args.pop("scribbles")
    with pytest.raises(InputError, match=match):
        graphcut_refine(prob, scribbles, **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": np.zeros((3, 4, 5))}, "`image` must be a 2D"),
        ({"image": np.full((10, 10), np.inf)}, "`image` must be finite"),
        ({"scribbles": np.full((10, 10), 0.5)}, "only 0 \\(none\\)"),
        ({"bins": 1}, "`bins` must be an integer >= 2"),
        ({"smoothness": "high"}, "`smoothness` must be a number"),
    ],
)
def test_from_scratch_bad_input_raises(kwargs, match):
    args = {"image": np.zeros((10, 10)), "scribbles": np.zeros((10, 10), np.uint8)}
    args.update(kwargs)
    image, scribbles = args.pop("image"), args.pop("scribbles")
    with pytest.raises(InputError, match=match):
        graphcut_from_scratch(image, scribbles, **args)
