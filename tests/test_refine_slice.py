"""refine_slice, painting, the presets and the I-DRLSE options chosen on val."""

import numpy as np
import pytest
from scipy import ndimage
from test_levelset import agreeing_prob, load_levelset_case

from segrefine.errors import InputError
from segrefine.preprocess import normalise
from segrefine.refine.levelset import idrlse, stroke_width, user_force
from segrefine.refine.slice import (
    DEFAULT_PRESET,
    PRESETS,
    REFINE_METHODS,
    paint,
    preset_params,
    refine_slice,
)
from segrefine.refine.volume import refine_volume

H = 64
YY, XX = np.mgrid[:H, :H]
DISC = (YY - 32) ** 2 + (XX - 28) ** 2 < 12**2


def test_paint_sets_only_the_stroke_pixels():
    init = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0]], bool)
    scr = np.array([[2, 0, 0], [1, 2, 0], [0, 0, 1]], np.uint8)
    expected = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]], bool)
    np.testing.assert_array_equal(paint(init, scr), expected)
    before = init.copy()
    out = refine_slice("paint", np.zeros((3, 3)), np.full((3, 3), 0.5), init, scr)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(init, before)  # inputs untouched


def test_methods_and_presets_are_checked():
    assert "paint" in REFINE_METHODS and DEFAULT_PRESET in PRESETS
    with pytest.raises(InputError, match="refine method must be one of"):
        refine_slice("magic", np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((5, 5), bool), np.zeros((5, 5)))
    with pytest.raises(InputError, match="preset must be one of"):
        preset_params("fancy", "idrlse")
    with pytest.raises(InputError, match="preset must be one of"):
        refine_volume(np.zeros((8, 8, 2)), np.zeros((8, 8, 2)), np.zeros((8, 8, 2), np.uint8), preset="fancy")


def test_server_preset_choices_match_the_presets():
    from typing import get_args

    from segrefine.server.models import Method, Preset

    assert set(get_args(Preset)) == set(PRESETS)
    assert set(get_args(Method)) == set(REFINE_METHODS)


def test_refine_volume_uses_the_preset():
    """The same strokes refined with two presets differ: the preset reaches the slice refiner."""
    image = np.stack([agreeing_prob(DISC)] * 2, axis=2).astype(np.float32)
    prob = image.copy()
    scr = np.zeros(image.shape, np.uint8)
    scr[28:37, 44:47, 1] = 1  # a stroke just outside the disc on slice 1
    init = np.stack([DISC] * 2, axis=2)
    out_default, refined = refine_volume(image, prob, scr, init=init)
    out_paper, _ = refine_volume(image, prob, scr, init=init, preset="paper")
    assert refined == [1]
    np.testing.assert_array_equal(out_default[:, :, 0], DISC)  # unscribbled slices are copied
    norm = normalise(image)[:, :, 1]
    expected = refine_slice("idrlse", norm, prob[:, :, 1], DISC, scr[:, :, 1], preset=DEFAULT_PRESET)
    np.testing.assert_array_equal(out_default[:, :, 1] > 0, expected)
    assert (out_paper[:, :, 1] != out_default[:, :, 1]).any()


def test_user_terms_are_the_paper_text_and_the_authors_code():
    g_f = np.array([0.0, 1.0, 2.0, 4.0])
    g_b = np.array([4.0, 4.0, 1.0, 4.0])
    np.testing.assert_allclose(user_force(g_f, g_b, "paper"), g_b - g_f, atol=1e-9)
    # the authors: P_f = e^{e^{-G_F}} / (e^{e^{-G_F}} + e^{e^{-G_B}}), force log(P_f / (1 - P_f))
    pf = np.exp(np.exp(-g_f)) / (np.exp(np.exp(-g_f)) + np.exp(np.exp(-g_b)))
    np.testing.assert_allclose(user_force(g_f, g_b, "authors"), np.log(pf / (1 - pf)), atol=1e-12)
    assert np.abs(user_force(g_f, g_b, "authors")).max() < 1.0  # bounded by β


def test_empty_initial_mask_works_with_every_preset():
    """The authors' code gives an all-NaN level set on an empty initial mask; ours grows the strokes."""
    scr = np.zeros((H, H), np.uint8)
    scr[30:35, 26:31] = 1
    for preset in PRESETS:
        params = preset_params(preset, "idrlse")
        mask, info = idrlse(agreeing_prob(DISC), scr, init=np.zeros((H, H), bool), image=agreeing_prob(DISC), **params)
        assert mask[scr == 1].all() and info["scribbles_violated"] == 0 and info["iterations"] >= 1


def test_reach_grows_with_the_structure_and_min_iter_holds():
    scr = np.zeros((H, H), np.uint8)
    scr[30:33, 41:44] = 1
    prob = agreeing_prob(DISC)
    _, small = idrlse(prob, scr, init=DISC, D=1.5, D_rel=0.1)
    assert small["D_pixels"] == 1.5  # radius 12: a tenth is below the floor
    _, large = idrlse(prob, scr, init=DISC, D=1.0, D_rel=0.25)
    radius = np.sqrt((DISC | (scr == 1)).sum() / np.pi)
    assert large["D_pixels"] == pytest.approx(0.25 * radius)
    _, info = idrlse(prob, np.zeros((H, H), np.uint8), init=DISC, min_iter=50, tol=10**6)
    assert info["iterations"] == 50  # the stop rule fires at the first check allowed after min_iter
    with pytest.raises(InputError, match="`user_term` must be one of"):
        idrlse(prob, scr, user_term="mine")
    with pytest.raises(InputError, match="`D_rel` must be a number >= 0"):
        idrlse(prob, scr, D_rel=-1.0)


def test_reach_is_divided_by_the_stroke_width():
    line = np.zeros((H, H), bool)
    line[30, 10:40] = True
    assert stroke_width(line) == 1.0 and stroke_width(np.zeros((H, H), bool)) == 1.0
    brush = ndimage.binary_dilation(line)  # a brush of radius 1: 3 pixels wide
    assert 2.5 < stroke_width(brush) < 3.5
    scr = np.zeros((H, H), np.uint8)
    scr[brush] = 1
    _, fixed = idrlse(agreeing_prob(DISC), scr, init=DISC, D=3.0)
    _, divided = idrlse(agreeing_prob(DISC), scr, init=DISC, D=3.0, reach_by_width=True)
    assert fixed["D_pixels"] == 3.0 and divided["D_pixels"] == pytest.approx(3.0 / stroke_width(brush))
    scr[brush] = 0
    scr[line] = 1
    _, divided = idrlse(agreeing_prob(DISC), scr, init=DISC, D=3.0, reach_by_width=True)
    assert divided["D_pixels"] == 3.0  # a one-pixel line keeps the full reach


def test_per_label_reach_force_vanishes_beyond_each_reach():
    g = np.array([0.0, 0.5, 1.0, 2.0])
    force = user_force(np.minimum(g, 1.0), np.full(4, 2.0), "paper", reach=(1.0, 2.0))
    np.testing.assert_allclose(force, [1.0, 0.5, 0.0, 0.0])
    # equal reaches: the same force as the single-cap form
    g_f, g_b = np.minimum(g, 2.0), np.minimum(g[::-1], 2.0)
    for term in ("paper", "authors"):
        np.testing.assert_allclose(user_force(g_f, g_b, term, reach=(2.0, 2.0)), user_force(g_f, g_b, term),
                                   atol=1e-12)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_contour_moves_with_foreground_and_background_strokes_together(preset):
    """Issue 12 saw the contour frozen when a slice held both labels: here a foreground stroke
    outside the disc and a background stroke inside it both move the contour beyond painting."""
    truth = (YY - 32) ** 2 + (XX - 34) ** 2 < 12**2  # the disc shifted right by 6 px
    init = DISC
    scr = np.zeros((H, H), np.uint8)
    scr[28:37, 43] = 1  # in the missed part, right
    scr[28:37, 19] = 2  # in the extra part, left
    image = agreeing_prob(truth)  # the intensities show the truth; P is the shifted CNN output
    out = refine_slice("idrlse", image, agreeing_prob(init), init, scr, preset=preset)
    painted = paint(init, scr)
    grown = out & ~painted
    removed = painted & ~out
    assert grown[:, 36:].any() and removed[:, :28].any()


@pytest.mark.parametrize("name", ["a03_04_11", "a10_12_22"])
def test_default_preset_numba_and_numpy_agree(shared, name):
    from segrefine.metrics import dice
    from segrefine.refine.levelset import idrlse_numpy

    image, seg, scr, prob = load_levelset_case(shared, name)
    params = preset_params(DEFAULT_PRESET, "idrlse")
    fast, _ = idrlse(prob, scr, init=seg, image=image, **params)
    slow, _ = idrlse_numpy(prob, scr, init=seg, image=image, **params)
    assert dice(fast, slow) > 0.99 and (fast != paint(seg, scr)).any()
