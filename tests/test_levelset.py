import numpy as np
import pytest
from scipy import ndimage

from segrefine.errors import InputError
from segrefine.metrics import dice
from segrefine.refine.levelset import idrlse, idrlse_numpy, interaction_likelihood

H = 96
YY, XX = np.mgrid[:H, :H]
DISC = (YY - 48) ** 2 + (XX - 40) ** 2 < 20**2


def agreeing_prob(mask):
    """A CNN-like probability that agrees with ``mask`` (blurred, kept off 0 and 1)."""
    return np.clip(ndimage.gaussian_filter(mask.astype(float), 2.0), 0.02, 0.98)


def load_levelset_case(shared, name):
    from skimage.io import imread

    folder = shared / "levelset_2d"
    image = imread(folder / f"{name}img.png").astype(np.float64)
    seg = imread(folder / f"{name}seg.png") > 0
    raw = imread(folder / f"{name}scrb.png")
    scribbles = np.zeros(raw.shape, np.uint8)
    scribbles[raw == 127] = 1
    scribbles[raw == 255] = 2
    # the demo ships no CNN probability: a blurred initial segmentation stands in for it
    return image, seg, scribbles, agreeing_prob(seg)


@pytest.mark.parametrize("name", ["a03_04_11", "a10_12_22"])
def test_numba_and_numpy_agree_on_the_demo_slices(shared, name):
    image, seg, scribbles, prob = load_levelset_case(shared, name)
    fast, info_fast = idrlse(prob, scribbles, init=seg, image=image)
    slow, info_slow = idrlse_numpy(prob, scribbles, init=seg, image=image)
    assert dice(fast, slow) > 0.99
    # full 200 iterations: the narrow band of the kernel stays close to the full grid
    fast, _ = idrlse(prob, scribbles, init=seg, image=image, tol=0, window=200)
    slow, _ = idrlse_numpy(prob, scribbles, init=seg, image=image, tol=0, window=200)
    assert dice(fast, slow) > 0.99
    for mask in (fast, slow):
        assert mask[scribbles == 1].all() and not mask[scribbles == 2].any()
    # the scribbles change the segmentation, but only locally
    changed = fast ^ seg
    assert changed.any()
    assert dice(fast, seg) > 0.85
    assert info_fast["iterations"] == info_slow["iterations"] <= 200


def test_demo_scribbles_fix_the_marked_errors(shared):
    # a03_04_11: a foreground dot in a bright region the CNN missed
    image, seg, scribbles, prob = load_levelset_case(shared, "a03_04_11")
    mask, _ = idrlse(prob, scribbles, init=seg, image=image)
    grown = mask & ~seg
    labels, _ = ndimage.label(grown)
    at_dot = labels[scribbles == 1]
    assert (at_dot > 0).all()
    assert (labels == at_dot[0]).sum() > 5 * (scribbles == 1).sum()
    # a10_12_22: a background stroke through a wrongly segmented blob
    image, seg, scribbles, prob = load_levelset_case(shared, "a10_12_22")
    mask, _ = idrlse(prob, scribbles, init=seg, image=image)
    removed = seg & ~mask
    assert removed.sum() > 3 * (scribbles == 2).sum()


def test_scribbles_are_hard_constraints():
    rng = np.random.default_rng(0)
    prob = agreeing_prob(DISC)
    scribbles = np.zeros((H, H), np.uint8)
    # foreground scribbles where the network is sure of background, and vice versa
    outside = np.argwhere(~DISC)
    inside = np.argwhere(DISC)
    for r, c in outside[rng.choice(len(outside), 30, replace=False)]:
        scribbles[r, c] = 1
    for r, c in inside[rng.choice(len(inside), 30, replace=False)]:
        scribbles[r, c] = 2
    scribbles[48, 30:50] = 2  # a stroke across the disc
    scribbles[10, 70:90] = 1  # a stroke far outside
    for fn in (idrlse, idrlse_numpy):
        for max_iter in (0, 1, 7, 200):
            mask, info = fn(prob, scribbles, max_iter=max_iter)
            assert mask.dtype == bool and mask.shape == (H, H)
            assert mask[scribbles == 1].all()
            assert not mask[scribbles == 2].any()
            assert info["iterations"] <= max_iter


def test_no_scribbles_keep_the_initial_mask_when_prob_agrees():
    prob = agreeing_prob(DISC)
    scribbles = np.zeros((H, H), np.uint8)
    for fn in (idrlse, idrlse_numpy):
        mask, info = fn(prob, scribbles, init=DISC)
        assert dice(mask, DISC) > 0.98
        assert info["converged"]
        mask, _ = fn(prob, scribbles)  # init = prob > 0.5
        assert dice(mask, DISC) > 0.98


def test_a_foreground_scribble_in_an_empty_region_grows_a_region():
    prob = agreeing_prob(DISC)
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[46:51, 78:83] = 1  # 25 pixels, far right of the disc, P ≈ 0.02 there
    for fn in (idrlse, idrlse_numpy):
        mask, _ = fn(prob, scribbles)
        new = mask & ~DISC
        labels, _ = ndimage.label(new)
        region = labels == labels[48, 80]
        assert labels[48, 80] > 0
        assert region.sum() > 4 * 25  # grew well beyond the scribble...
        assert region.sum() < 600  # ...but only within the geodesic reach D
        assert dice(mask & DISC, DISC) > 0.98  # the rest is untouched


def test_the_image_steers_the_growth():
    # with an image holding a bright blob around the scribble, the region follows the blob
    prob = agreeing_prob(DISC)
    blob = (YY - 48) ** 2 + (XX - 78) ** 2 < 8**2
    image = DISC + 1.0 * blob
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[46:51, 76:81] = 1
    mask, _ = idrlse(prob, scribbles, image=image)
    new = mask & ~DISC
    assert (new & ~ndimage.binary_dilation(blob, iterations=2)).sum() == 0
    assert (new & blob).sum() > 0.6 * blob.sum()


def test_a_background_stroke_removes_part_of_the_object():
    prob = agreeing_prob(DISC)
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[48, 30:51] = 2
    mask, _ = idrlse(prob, scribbles)
    removed = DISC & ~mask
    assert removed.sum() > 5 * 21
    assert removed.sum() < 0.5 * DISC.sum()


def test_likelihood_eta():
    image = np.random.default_rng(1).random((30, 40))
    none = np.zeros((30, 40), np.uint8)
    np.testing.assert_allclose(interaction_likelihood(image, none), 0.5)
    scr = none.copy()
    scr[5, 5] = 1
    scr[25, 35] = 2
    eta = interaction_likelihood(image, scr, D=4.0)
    assert eta[5, 5] == pytest.approx(1.0 / (1.0 + np.exp(-4.0)))
    assert eta[25, 35] == pytest.approx(1.0 / (1.0 + np.exp(4.0)))
    assert eta[15, 20] == pytest.approx(0.5)  # beyond D from both
    assert ((eta > 0) & (eta < 1)).all()
    # a huge D: η is clipped to [1e-6, 1 - 1e-6] so that log(η) stays finite
    eta = interaction_likelihood(image, scr, D=100.0, gradient_weight=0.0)
    assert eta.min() == pytest.approx(1e-6) and eta.max() == pytest.approx(1 - 1e-6)


def test_callback_spacing_and_inputs_untouched():
    prob = agreeing_prob(DISC).astype(np.float32)
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[46:51, 78:83] = 1
    init = DISC.copy()
    copies = [a.copy() for a in (prob, scribbles, init)]
    seen = []

    def callback(iteration, phi):
        assert not phi.flags.writeable
        seen.append((iteration, float((phi > 0).sum())))

    mask, info = idrlse(prob, scribbles, init=init, spacing=(2.0, 1.0), iter_callback=callback)
    assert [s[0] for s in seen] == list(range(1, info["iterations"] + 1))
    assert set(info) == {"iterations", "converged", "seconds", "D_pixels", "scribbles_violated"}
    assert info["seconds"] > 0 and info["D_pixels"] == 4.0 and info["scribbles_violated"] == 0
    for a, b in zip((prob, scribbles, init), copies):
        np.testing.assert_array_equal(a, b)
    # coarser rows: the scribble's reach is shorter along axis 0 than along axis 1
    grown = mask & ~DISC
    rows, cols = np.nonzero(grown)
    assert np.ptp(rows) < np.ptp(cols)


BAD = [
    ({"prob": np.full((4, 5), 0.5)}, "`scribbles` \\(shape"),
    ({"scribbles": np.full((10, 10), 3, np.uint8)}, "only 0 \\(none\\), 1 \\(foreground\\) and 2"),
    ({"scribbles": np.full((10, 10), -1)}, "got -1"),
    ({"prob": np.full((10, 10), 1.5)}, "`prob` must be a probability in \\[0, 1\\]"),
    ({"prob": np.full((10, 10), -0.1)}, "`prob` must be a probability"),
    ({"prob": np.where(np.eye(10) > 0, np.nan, 0.5)}, "`prob` must be finite, got 10 NaN"),
    ({"prob": np.full(10, 0.5)}, "`prob` must be a 2D"),
    ({"prob": np.full((2, 10), 0.5), "scribbles": np.zeros((2, 10))}, "at least 3x3"),
    ({"init": np.zeros((10, 11), bool)}, "`init` \\(shape"),
    ({"init": np.full((10, 10), 2)}, "`init` must be a binary mask"),
    ({"image": np.zeros((9, 10))}, "`image` \\(shape"),
    ({"image": np.full((10, 10), np.inf)}, "`image` must be finite"),
    ({"spacing": (1.0, 0.0)}, "`spacing`"),
    ({"alpha": -1.0}, "`alpha` must be a number >= 0"),
    ({"max_iter": 2.5}, "`max_iter` must be an integer"),
    ({"epsilon": 0.0}, "`epsilon` must be a number > 0"),
    ({"D": float("nan")}, "`D` must be a number"),
    ({"gradient_weight": 2.0}, "`gradient_weight`"),
    ({"iter_callback": 3}, "`iter_callback` must be callable"),
]


@pytest.mark.parametrize("fn", [idrlse, idrlse_numpy])
@pytest.mark.parametrize("kwargs, match", BAD)
def test_bad_input_raises(fn, kwargs, match):
    args = {"prob": np.full((10, 10), 0.5), "scribbles": np.zeros((10, 10), np.uint8)}
    args.update(kwargs)
    prob, scribbles = args.pop("prob"), args.pop("scribbles")
    with pytest.raises(InputError, match=match):
        fn(prob, scribbles, **args)


def test_numpy_version_rejects_unknown_options():
    with pytest.raises(InputError, match="unknown option"):
        idrlse_numpy(np.full((5, 5), 0.5), np.zeros((5, 5), np.uint8), alpah=0.2)


@pytest.mark.parametrize("user_term", ["paper", "authors"])
def test_scribbles_hold_inside_the_loop(user_term):
    """The hard constraint acts after every iteration (seen through iter_callback), not only
    through the final overwrite: φ >= 0.5 on foreground, <= -0.5 on background strokes."""
    prob = agreeing_prob(DISC).astype(np.float32)
    scribbles = np.zeros((H, H), np.uint8)
    scribbles[30:34, 20:60] = 2  # inside the disc: must stay background
    scribbles[46:51, 78:83] = 1  # outside: must stay foreground
    fg, bg = scribbles == 1, scribbles == 2
    worst = []

    def callback(iteration, phi):
        worst.append((float(phi[fg].min()), float(phi[bg].max())))

    idrlse(prob, scribbles, init=DISC, iter_callback=callback, user_term=user_term, max_iter=40, tol=0)
    assert len(worst) > 0
    assert min(w[0] for w in worst) >= 0.5 and max(w[1] for w in worst) <= -0.5
