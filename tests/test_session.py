import numpy as np
import pytest

from segrefine import io
from segrefine.errors import InputError
from segrefine.session import Session


def _phantom_volume():
    from segrefine.phantom import make_phantom

    image, label = make_phantom(shape=(40, 48, 12), seed=1)
    return io.Volume(image), label


def _maps(label):
    # a deliberately wrong prediction on slice 6: the structure is missing there
    prob = np.where(label > 0, 0.9, 0.1).astype(np.float32)
    prob[:, :, 6] = 0.1
    unc = np.full(label.shape, 0.001, np.float32)
    unc[:, :, 6][label[:, :, 6] > 0] = 0.2
    return prob, unc


def test_full_cycle_persisted_and_reopened(tmp_path):
    vol, label = _phantom_volume()
    # the paper preset: D = 4 pixels lets a 3-pixel click regrow the missing disc
    # order ν: these maps are built for the uncertainty ranking (the expected-error order "gain"
    # ties every slice here, since each voxel's probability is 0.1 or 0.9)
    s = Session.create(tmp_path / "s", vol, method="idrlse", preset="paper", order="nu")
    prob, unc = _maps(label)
    s.set_maps(prob, unc)
    k = s.next_suggestion()
    assert k == 6  # the most uncertain slice comes first
    gt = label[:, :, k] > 0
    rows, cols = np.nonzero(gt)
    c = (int(rows.mean()), int(cols.mean()))
    ch = s.add_scribble(k, [c, (c[0], c[1] + 1), (c[0] + 1, c[1])], 1)
    assert ch.kind == "scribble" and ch.index == k and ch.bbox is not None
    ch = s.add_scribble(k, [(0, 0), (1, 1)], 2)
    ch = s.refine(k)
    assert ch.kind == "refine" and ch.bbox is not None
    refined = s.slice_mask(k) > 0
    assert refined[c] and not refined[0, 0]
    dice_after = 2 * (refined & gt).sum() / (refined.sum() + gt.sum())
    assert dice_after > 0.5

    # reopen: same mask, scribbles, undo history
    s2 = Session.open(tmp_path / "s")
    assert np.array_equal(s2.mask, s.mask) and np.array_equal(s2.scribbles, s.scribbles)
    assert s2.status()["can_undo"] and s2.queue.shown == [6]
    ch = s2.undo()  # undo the refinement
    assert ch.kind == "undo" and not s2.slice_mask(k).any()
    s2.undo()  # the background scribble
    assert s2.slice_scribbles(k)[0, 0] == 0
    s3 = Session.open(tmp_path / "s")  # undo state persisted too
    assert s3.pointer == 1 and s3.status()["can_redo"]
    s3.redo()
    s3.redo()
    assert np.array_equal(s3.mask, s.mask)
    s3.accept(k, needed_refinement=True)
    out = s3.save_mask(tmp_path / "mask.nii.gz")
    saved = io.load(out).array
    assert saved.dtype == np.uint8 and np.array_equal(saved, s3.mask)
    assert Session.open(tmp_path / "s").accepted == [k]


def test_new_action_drops_redo_tail(tmp_path):
    vol, label = _phantom_volume()
    s = Session.create(tmp_path / "s", vol)
    s.set_maps(*_maps(label))
    s.add_scribble(3, [(5, 5)], 1)
    s.add_scribble(3, [(6, 6)], 1)
    s.undo()
    s.add_scribble(3, [(7, 7)], 2)
    assert not s.status()["can_redo"]
    assert s.slice_scribbles(3)[6, 6] == 0 and s.slice_scribbles(3)[7, 7] == 2


def test_bad_input(tmp_path):
    vol, label = _phantom_volume()
    s = Session.create(tmp_path / "s", vol)
    with pytest.raises(InputError, match="no prediction yet"):
        s.next_suggestion()
    prob, unc = _maps(label)
    with pytest.raises(InputError, match="differs"):
        s.set_maps(prob[:-1], unc)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        s.set_maps(prob * 2, unc)
    s.set_maps(prob, unc)
    with pytest.raises(InputError, match="outside the 40x48 slice"):
        s.add_scribble(2, [(100, 3)], 1)
    with pytest.raises(InputError, match="slice index 99"):
        s.add_scribble(99, [(1, 1)], 1)
    with pytest.raises(InputError, match="scribble label"):
        s.add_scribble(2, [(1, 1)], 5)
    with pytest.raises(InputError, match="already exists"):
        Session.create(tmp_path / "s", vol)
    with pytest.raises(InputError, match="no session here"):
        Session.open(tmp_path / "nothing")


def test_queue_order_survives_reopen_with_external_segmentation(tmp_path):
    image = np.random.default_rng(0).normal(size=(20, 20, 8)).astype(np.float32)
    prob = np.zeros((20, 20, 8), np.float32)
    prob[5:15, 5:15] = 0.8
    unc = np.zeros_like(prob)
    unc[5:15, 5:15] = np.linspace(0.01, 0.2, 8)[None, None, :]
    seg = (prob > 0.5).astype(np.uint8)
    seg[:, :, 4:] = 0  # the external segmentation disagrees with prob > 0.5
    s = Session.create(tmp_path / "s", io.Volume(image))
    s.set_maps(prob, unc, seg)
    order = list(s.queue.order)
    s.next_suggestion()
    s2 = Session.open(tmp_path / "s")
    assert s2.queue.order == order and s2.queue.position == 1
