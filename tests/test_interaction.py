import numpy as np
import pytest
from scipy import ndimage

from segrefine.errors import InputError
from segrefine.interaction import error_components, simulate_scribbles

H = 100
YY, XX = np.mgrid[:H, :H]
GT = (YY - 50) ** 2 + (XX - 50) ** 2 < 30**2
HOLE = (YY - 50) ** 2 + (XX - 62) ** 2 < 9**2  # inside GT, missed by the segmentation
BLOB = (YY - 12) ** 2 + (XX - 85) ** 2 < 7**2  # outside GT, wrongly segmented
R, ANGLE = np.hypot(YY - 50, XX - 50), np.arctan2(YY - 50, XX - 50)
ARC = GT & (R > 19) & (R < 28) & (ANGLE > 0.2) & (ANGLE < 2.6)  # a curved missing band


def inner_distance(region):
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def n_components(mask):
    return ndimage.label(mask, structure=np.ones((3, 3)))[1]


def test_missing_disc_gets_a_foreground_stroke_deep_inside():
    scribbles = simulate_scribbles(GT & ~HOLE, GT)
    assert scribbles.dtype == np.uint8 and scribbles.shape == GT.shape
    stroke = scribbles == 1
    assert not (scribbles == 2).any()
    assert stroke.sum() >= 5  # a stroke, not a dot
    assert HOLE[stroke].all()  # entirely inside the missing region
    depth = inner_distance(HOLE)
    assert depth[stroke].min() >= 0.5 * depth.max()  # far from its border
    assert n_components(stroke) == 1  # one contiguous stroke


def test_extra_blob_gets_a_background_stroke_and_both_errors_are_marked():
    scribbles = simulate_scribbles((GT & ~HOLE) | BLOB, GT, seed=3)
    fg, bg = scribbles == 1, scribbles == 2
    assert HOLE[fg].all() and fg.any()
    assert BLOB[bg].all() and bg.any()
    depth = inner_distance(BLOB)
    assert depth[bg].min() >= 0.5 * depth.max()
    # largest first: with max_strokes=1 only the (larger) hole is marked
    one = simulate_scribbles((GT & ~HOLE) | BLOB, GT, max_strokes=1)
    assert (one == 1).any() and not (one == 2).any()


def test_a_curved_region_gets_a_stroke_along_its_ridge():
    scribbles = simulate_scribbles(GT & ~ARC, GT, max_length=20)
    stroke = scribbles == 1
    assert ARC[stroke].all()
    assert stroke.sum() == 20
    assert n_components(stroke) == 1
    depth = inner_distance(ARC)
    assert depth[stroke].min() >= 0.5 * depth.max()
    # it bends with the band: its pixels do not lie on one straight line
    rows, cols = np.nonzero(stroke)
    residual = np.linalg.lstsq(np.c_[cols, np.ones_like(cols)], rows, rcond=None)[1]
    assert residual.size == 0 or residual[0] > 1.0


def test_nothing_to_fix_gives_empty_scribbles():
    assert not simulate_scribbles(GT, GT).any()
    assert not simulate_scribbles(np.zeros((H, H), bool), np.zeros((H, H), bool)).any()
    # errors below min_size are ignored...
    small = (YY - 50) ** 2 + (XX - 50) ** 2 < 2**2  # 9 pixels
    assert not simulate_scribbles(GT & ~small, GT, min_size=20).any()
    assert simulate_scribbles(GT & ~small, GT, min_size=5).any()
    # ...and so are one-pixel slivers along the contour, however long
    sliver = GT & ~ndimage.binary_erosion(GT)
    assert sliver.sum() > 100
    assert not simulate_scribbles(GT & ~sliver, GT).any()


def test_the_seed_makes_it_deterministic():
    seg = (GT & ~ARC & ~HOLE) | BLOB
    a = simulate_scribbles(seg, GT, seed=7)
    b = simulate_scribbles(seg, GT, seed=7)
    np.testing.assert_array_equal(a, b)
    outcomes = {simulate_scribbles(GT & ~ARC, GT, seed=s).tobytes() for s in range(8)}
    assert len(outcomes) > 1  # the start among the near-deepest ridge pixels is random


def test_click_mode_gives_one_point_per_component():
    seg = (GT & ~HOLE) | BLOB
    clicks = simulate_scribbles(seg, GT, mode="click")
    assert (clicks == 1).sum() == 1 and (clicks == 2).sum() == 1
    for label, region in ((1, HOLE), (2, BLOB)):
        (i, j), = np.argwhere(clicks == label)
        depth = inner_distance(region)
        assert depth[i, j] == depth.max()  # at the deepest pixel
    discs = simulate_scribbles(seg, GT, mode="click", click_radius=2)
    assert (discs == 1).sum() == 13 and n_components(discs == 1) == 1
    assert HOLE[discs == 1].all() and BLOB[discs == 2].all()


def test_error_components_and_inputs_untouched():
    seg = ((GT & ~HOLE) | BLOB).astype(np.uint8)
    gt = GT.astype(np.uint8)
    seg0, gt0 = seg.copy(), gt.copy()
    comps = error_components(seg, gt)
    assert [label for label, _, _ in comps] == [1, 2]
    np.testing.assert_array_equal(comps[0][1], HOLE)
    simulate_scribbles(seg, gt)
    np.testing.assert_array_equal(seg, seg0)
    np.testing.assert_array_equal(gt, gt0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gt": np.zeros((H, H + 1), bool)}, "`gt` \\(shape"),
        ({"seg": np.zeros((4, 4, 4), bool)}, "`seg` must be a 2D"),
        ({"seg": np.full((H, H), 2)}, "`seg` must be a binary mask"),
        ({"mode": "lasso"}, "`mode` must be one of scribble, click"),
        ({"min_size": 0}, "`min_size` must be an integer >= 1"),
        ({"max_strokes": -1}, "`max_strokes`"),
        ({"depth_fraction": 1.5}, "`depth_fraction`"),
        ({"seed": "a"}, "`seed` must be an integer"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"seg": GT & ~HOLE, "gt": GT}
    args.update(kwargs)
    seg, gt = args.pop("seg"), args.pop("gt")
    with pytest.raises(InputError, match=match):
        simulate_scribbles(seg, gt, **args)
