"""segrefine.validate: one pytest.raises per kind of bad input, and what good input returns."""

import math

import numpy as np
import pytest

from segrefine.errors import InputError
from segrefine.validate import (
    as_array,
    as_axis,
    as_choice,
    as_mask,
    as_nonnegative,
    as_number,
    as_probability,
    as_scribbles,
    as_slice,
    as_spacing,
    as_volume,
    binary_mask,
    image_map,
)


@pytest.mark.parametrize("value, kwargs, match", [
    ("1", {}, r"`x` must be a number, got '1'"),
    (True, {}, "`x` must be a number, got True"),
    (math.nan, {}, "`x` must be a number, got nan"),
    (math.inf, {}, "got inf"),
    (1.5, {"integer": True}, "`x` must be an integer, got 1.5"),
    (-1, {"low": 0}, "`x` must be a number >= 0, got -1"),
    (0.0, {"low": 0, "low_open": True}, "`x` must be a number > 0, got 0.0"),
    (2, {"high": 1}, "`x` must be a number <= 1, got 2"),
    (1.0, {"low": 0, "high": 1, "high_open": True}, r"`x` must be a number in \[0, 1\), got 1.0"),
    (0.0, {"low": 0, "high": 1, "low_open": True}, r"`x` must be a number in \(0, 1\], got 0.0"),
    (None, {}, "`x` must be a number, got None"),
])
def test_as_number_refuses(value, kwargs, match):
    with pytest.raises(InputError, match=match):
        as_number(value, "x", **kwargs)


def test_as_number_returns():
    assert as_number(3, "x", integer=True) == 3 and isinstance(as_number(3, "x", integer=True), int)
    assert as_number(np.int64(2), "x", low=0, integer=True) == 2
    assert isinstance(as_number(1, "x"), float)
    assert as_number(None, "x", allow_none=True) is None
    assert as_number(1.0, "x", low=0, high=1) == 1.0


def test_as_choice():
    assert as_choice("b", "mode", ("a", "b")) == "b"
    assert as_choice(None, "mode", ("a",), allow_none=True) is None
    with pytest.raises(InputError, match="`mode` must be one of a, b, got 'c'"):
        as_choice("c", "mode", ("a", "b"))
    with pytest.raises(InputError, match="or None, got 3"):
        as_choice(3, "mode", ("a",), allow_none=True)
    with pytest.raises(InputError, match="got None"):
        as_choice(None, "mode", ("a",))


@pytest.mark.parametrize("axis", [3, -1, 1.0, True, "0", None])
def test_as_axis_refuses(axis):
    with pytest.raises(InputError, match=f"`axis` must be 0, 1 or 2, got {axis!r}"):
        as_axis(axis)


@pytest.mark.parametrize("spacing", [(1.0,), (1.0, 0.0), (1.0, -2.0), (1.0, math.nan), "ab", 3])
def test_as_spacing_refuses(spacing):
    with pytest.raises(InputError, match="`spacing` must be 2 positive numbers"):
        as_spacing(spacing, 2)


def test_as_spacing_returns():
    assert as_spacing(None, 3) == (1.0, 1.0, 1.0)
    assert as_spacing(np.array([0.5, 2]), 2) == (0.5, 2.0)


@pytest.mark.parametrize("value, kwargs, match", [
    (np.zeros(4), {"ndim": 2}, r"`a` must be a 2D \(H, W\) array, got shape \(4,\)"),
    (np.zeros((2, 2)), {"ndim": (3, 4)}, r"must be a 3D \(I, J, K\) or 4D array"),
    (np.zeros((4, 4)), {"ndim": 2, "shape": (4, 5), "ref": "prob"},
     r"`a` \(shape \(4, 4\)\) must have the same shape as `prob` \(shape \(4, 5\)\)"),
    (np.zeros((0, 4)), {"ndim": 2}, "`a` must not be empty"),
    (np.zeros((2, 4)), {"ndim": 2, "min_size": 3}, "`a` must be at least 3x3"),
    (np.array([["x", "y"]]), {"ndim": 2}, "`a` must hold real numbers, got dtype <U1"),
    (np.ones((2, 2), complex), {"ndim": 2}, "must hold real numbers, got dtype complex128"),
    (np.array([[1.0, np.nan], [np.inf, 0]]), {"ndim": 2}, "`a` must be finite, got 2 NaN/inf values"),
])
def test_as_array_refuses(value, kwargs, match):
    with pytest.raises(InputError, match=match):
        as_array(value, "a", **kwargs)


def test_arrays_returned_in_the_callers_form():
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    s = as_slice(a, "s")
    assert s.dtype == np.float64 and np.array_equal(s, a) and s is not a
    assert as_array(np.array([[np.nan]]), "a", ndim=2, finite=False).shape == (1, 1)
    v = as_volume(np.zeros((2, 2, 2), bool), "v")
    assert v.dtype == bool
    with pytest.raises(InputError, match=r"`v` must be a 3D \(I, J, K\) array"):
        as_volume(np.zeros((2, 2)), "v")


def test_as_probability_and_nonnegative():
    p = as_probability(np.array([[0.0, 1.0]], np.float32), "p")
    assert p.dtype == np.float64
    with pytest.raises(InputError, match=r"`p` must be a probability in \[0, 1\], got values in \[0, 1.5\]"):
        as_probability(np.array([[0.0, 1.5]]), "p")
    with pytest.raises(InputError, match="`p` must be finite"):
        as_probability(np.array([[np.nan, 0.5]]), "p")
    with pytest.raises(InputError, match="`u` must be non-negative, got a minimum of -0.1"):
        as_nonnegative(np.full((2, 2, 2), -0.1), "u")


def test_masks_and_scribbles():
    assert as_mask(np.array([[0, 1]]), "m", ndim=2).dtype == bool
    with pytest.raises(InputError, match="`m` must be a binary mask holding 0 and 1, got 2"):
        as_mask(np.array([[0, 2]]), "m")
    with pytest.raises(InputError, match="`m` must be a binary mask, got dtype <U1"):
        binary_mask(np.array(["a"]), "m")
    with pytest.raises(InputError, match=r"`m` must be a 2D \(H, W\) mask, got shape \(2,\)"):
        as_mask(np.zeros(2), "m", ndim=2)
    with pytest.raises(InputError, match=r"`m` \(shape \(1, 2\)\) must have the same shape as `seg`"):
        as_mask(np.zeros((1, 2)), "m", shape=(2, 2), ref="seg")
    s = as_scribbles(np.array([[0, 1, 2]], np.int64), (1, 3))
    assert s.dtype == np.uint8 and s.tolist() == [[0, 1, 2]]
    with pytest.raises(InputError, match="must hold only 0 \\(none\\), 1 \\(foreground\\) and 2"):
        as_scribbles(np.array([[0, 3]]), (1, 2))
    with pytest.raises(InputError, match="`scribbles` must hold integer labels 0/1/2, got dtype <U1"):
        as_scribbles(np.array([["a"]]), (1, 1))
    with pytest.raises(InputError, match=r"`scribbles` \(shape \(1, 2\)\) must have the same shape"):
        as_scribbles(np.zeros((1, 2)), (2, 2))


def test_image_map_names_the_file():
    assert image_map(np.zeros((2, 2)), "prob a.nii.gz:", (2, 2)).dtype == np.float32
    with pytest.raises(InputError, match=r"prob a.nii.gz: shape \(2, 2\) differs from the image's \(2, 3\)"):
        image_map(np.zeros((2, 2)), "prob a.nii.gz:", (2, 3))
    with pytest.raises(InputError, match="holds NaN or inf values"):
        image_map(np.full((2, 2), np.nan), "x:", (2, 2))
    with pytest.raises(InputError, match=r"values must lie in \[0, 1\]"):
        image_map(np.full((2, 2), 2.0), "x:", (2, 2), unit_interval=True)


def test_renamed_keywords_still_work_with_a_warning():
    """The three λ now have one name per meaning; the old keywords warn and give the same result."""
    from segrefine.geodesic import geodesic_distance
    from segrefine.refine.graphcut import graphcut_refine
    from segrefine.refine.levelset import idrlse

    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, 24))
    prob = np.clip(rng.normal(0.5, 0.3, size=(24, 24)), 0, 1)
    scribbles = np.zeros((24, 24), np.uint8)
    scribbles[10:13, 5:15] = 1
    scribbles[2, 2:20] = 2
    with pytest.warns(DeprecationWarning, match="`lamb` is renamed `gradient_weight`"):
        old = geodesic_distance(image, scribbles == 1, lamb=0.3)
    assert np.array_equal(old, geodesic_distance(image, scribbles == 1, gradient_weight=0.3))
    with pytest.warns(DeprecationWarning, match="`lam` is renamed `length_weight`"):
        old, _ = idrlse(prob, scribbles, lam=0.6, max_iter=20)
    assert np.array_equal(old, idrlse(prob, scribbles, length_weight=0.6, max_iter=20)[0])
    with pytest.warns(DeprecationWarning, match="`lam` is renamed `smoothness`"):
        old = graphcut_refine(prob, scribbles, lam=2.0)
    assert np.array_equal(old, graphcut_refine(prob, scribbles, smoothness=2.0))
