"""Dense CRF baseline (segrefine.refine.crf)."""

import math

import numpy as np
import pytest

from segrefine.errors import InputError
from segrefine.metrics import dice
from segrefine.refine.crf import dense_crf


def noisy_ellipsoid(seed=0, shape=(32, 32, 24)):
    """An ellipsoid, an image that shows it with noise, and a very noisy expectation of it."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    truth = (i / 10) ** 2 + (j / 9) ** 2 + (k / 7) ** 2 < 1
    image = (100 + 40 * truth + rng.normal(0, 10, shape)).astype(np.float32)
    e = np.clip(np.where(truth, 0.7, 0.3) + rng.normal(0, 0.25, shape), 0, 1).astype(np.float32)
    return image, e, truth


def test_crf_smooths_a_noisy_expectation_toward_the_shape():
    image, e, truth = noisy_ellipsoid()
    before = (image.copy(), e.copy())
    out = dense_crf(image, e)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1}
    assert dice(e > 0.5, truth) < 0.75
    assert dice(out, truth) > 0.9
    np.testing.assert_array_equal(image, before[0])  # inputs untouched
    np.testing.assert_array_equal(e, before[1])


def test_crf_without_pairwise_terms_is_the_threshold():
    image, e, _ = noisy_ellipsoid()
    out = dense_crf(image, e, w_gauss=0, w_bilateral=0, iterations=1)
    np.testing.assert_array_equal(out, (e > 0.5).astype(np.uint8))


def test_crf_spacing_is_in_millimetres():
    # the same object sampled at half the resolution along K with spacing 2 mm
    image, e, truth = noisy_ellipsoid(shape=(32, 32, 24))
    out = dense_crf(image[:, :, ::2], e[:, :, ::2], spacing=(1.0, 1.0, 2.0))
    assert dice(out, truth[:, :, ::2]) > 0.85


def test_crf_confident_expectation_is_kept():
    image, _, truth = noisy_ellipsoid()
    e = np.where(truth, 0.99, 0.01).astype(np.float32)
    out = dense_crf(image, e)
    assert (out != truth).mean() < 1e-3  # at most a few protruding surface voxels smoothed away


def test_crf_bad_input():
    image, e, _ = noisy_ellipsoid(shape=(8, 8, 6))
    with pytest.raises(InputError, match="`image` must be a 3D"):
        dense_crf(image[0], e[0])
    with pytest.raises(InputError, match=r"`expectation` \(shape \(8, 8, 5\)\) must have the same shape as `image`"):
        dense_crf(image, e[:, :, :5])
    with pytest.raises(InputError, match=r"`expectation` must be a probability in \[0, 1\]"):
        dense_crf(image, e + 1)
    bad = e.copy()
    bad[0, 0, 0] = math.nan
    with pytest.raises(InputError, match="`expectation` must be finite"):
        dense_crf(image, bad)
    with pytest.raises(InputError, match="`spacing` must be 3 positive numbers"):
        dense_crf(image, e, spacing=(1, 1))
    with pytest.raises(InputError, match="`iterations` must be an integer >= 1"):
        dense_crf(image, e, iterations=0)
    with pytest.raises(InputError, match="`sxyz` must be a number > 0"):
        dense_crf(image, e, sxyz=0)
    with pytest.raises(InputError, match="`w_gauss` must be a number >= 0"):
        dense_crf(image, e, w_gauss=-1)
    with pytest.raises(InputError, match=r"`clip` must be a number in \(0, 0.5\)"):
        dense_crf(image, e, clip=0.7)
