"""Several structures in one session, on real hippocampus cases (1 = anterior, 2 = posterior):
the lock/overwrite rule of strokes and refinement, suggestions per structure, persistence
(journal replay, old single-label sessions) and a multi-segment DICOM SEG."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from segrefine import io
from segrefine.datasets import dataset_labels
from segrefine.errors import InputError
from segrefine.persist import read_snapshot, write_snapshot
from segrefine.session import Session
from segrefine.structures import merge, scribble_codes, structure_regions

CASES = ("hippocampus_004", "hippocampus_006")


@pytest.fixture(scope="module")
def cases(hippo):
    """Per case: image path, label map and the shipped MG-Net's maps (one forward pass each)."""
    from segrefine.uncertainty import shared_predictor

    predictor = shared_predictor("mgnet", None, 2)
    out = {}
    for name in CASES:
        image = hippo / "imagesTr" / f"{name}.nii.gz"
        labels = np.asarray(nib.load(hippo / "labelsTr" / f"{name}.nii.gz").dataobj).astype(np.uint8)
        pred = predictor(io.load(image).array)
        out[name] = (image, labels, pred.prob, pred.uncertainty)
    return out


def _session(tmp_path, hippo, case, method="idrlse"):
    image, labels, prob, unc = case
    s = Session.create(tmp_path / "s", image, method=method, labels=labels, names=dataset_labels(hippo))
    s.set_maps(prob, unc)  # a session with two structures keeps its label map
    return s


def _crossing_slice(labels):
    """A slice (axis 2) where both structures touch, and a stroke (pixels) from deep inside
    the anterior part across into the posterior one."""
    for k in np.argsort([-((labels[:, :, k] == 1).sum() * (labels[:, :, k] == 2).sum())
                         for k in range(labels.shape[2])]):
        a, p = labels[:, :, k] == 1, labels[:, :, k] == 2
        ra, ca = np.argwhere(a).mean(0).round().astype(int)
        rp, cp = np.argwhere(p).mean(0).round().astype(int)
        n = 2 * max(abs(ra - rp), abs(ca - cp)) + 1
        line = {(round(ra + t * (rp - ra)), round(ca + t * (cp - ca))) for t in np.linspace(0, 1, n)}
        pts = sorted(line)
        if sum(p[r, c] for r, c in pts) >= 3 and a[ra, ca]:
            return int(k), pts
    raise AssertionError("no slice holds both structures")


def test_structures_from_dataset_json(tmp_path, hippo, cases):
    s = _session(tmp_path, hippo, cases["hippocampus_004"])
    assert [(x["id"], x["name"]) for x in s.status()["structures"]] == [(1, "anterior"), (2, "posterior")]
    assert np.array_equal(s.mask, cases["hippocampus_004"][1])


@pytest.mark.parametrize("method", ["idrlse", "graphcut"])
@pytest.mark.parametrize("case", CASES)
def test_lock_keeps_the_other_structure_and_overwrite_takes_it(tmp_path, hippo, cases, case, method):
    s = _session(tmp_path, hippo, cases[case], method)
    labels = cases[case][1]
    k, pts = _crossing_slice(labels)
    before = s.mask.copy()
    s.add_scribble(k, pts, 1, structure=1)
    assert set(np.unique(s.slice_scribbles(k))) == {0, scribble_codes(1)[0]}
    ch = s.refine(k, structure=1)  # default: the other structure is locked
    after = s.mask
    # posterior untouched on every slice, including where the anterior stroke crossed it
    assert np.array_equal(after == 2, before == 2)
    assert all(after[r, c, k] == 2 for r, c in pts if before[r, c, k] == 2)
    assert all(after[r, c, k] == 1 for r, c in pts if before[r, c, k] != 2)  # the stroke's own pixels
    assert ch.bbox is not None or np.array_equal(after, before)
    assert np.array_equal(np.delete(after, k, 2), np.delete(before, k, 2))  # only slice k changed
    s.undo()
    assert np.array_equal(s.mask[:, :, k], before[:, :, k])
    s.redo()
    s.undo()
    s.refine(k, structure=1, overwrite=True)
    taken = [(r, c) for r, c in pts if before[r, c, k] == 2]
    assert all(s.mask[r, c, k] == 1 for r, c in taken)  # overwrite: the stroke takes them
    assert np.array_equal(np.delete(s.mask, k, 2), np.delete(before, k, 2))


def test_background_stroke_and_erase_touch_only_the_active_structure(tmp_path, hippo, cases):
    s = _session(tmp_path, hippo, cases["hippocampus_004"], "paint")
    labels = cases["hippocampus_004"][1]
    k, pts = _crossing_slice(labels)
    post = [(r, c) for r, c in pts if labels[r, c, k] == 2]
    s.add_scribble(k, post, 1, structure=2)  # a posterior stroke, kept apart from anterior's
    s.add_scribble(k, pts, 2, structure=1)  # anterior background over the whole line
    s.refine(k, structure=1)
    assert all(s.mask[r, c, k] == 2 for r, c in post)  # anterior's background never erases posterior
    assert all(s.mask[r, c, k] == 0 for r, c in pts if labels[r, c, k] == 1)
    s.add_scribble(k, pts, 0, structure=2)  # erase posterior's strokes: anterior's remain
    assert set(np.unique(s.slice_scribbles(k))) == {0, scribble_codes(1)[1]}
    with pytest.raises(InputError, match="`structure` 3 is not one of this session's structures"):
        s.add_scribble(k, pts, 1, structure=3)
    with pytest.raises(InputError, match="`structure` must be a structure id"):
        s.refine(k, structure=0)


def test_merge_rule_explicit():
    labels = np.array([[0, 1, 2], [1, 1, 2], [0, 2, 2]], np.uint8)
    new = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 0]], bool)
    assert merge(labels, new, 1).tolist() == [[1, 0, 2], [1, 1, 2], [0, 2, 2]]
    assert merge(labels, new, 1, overwrite=True).tolist() == [[1, 0, 1], [1, 1, 1], [0, 2, 2]]


def test_regions_give_each_voxel_to_the_nearest_structure():
    labels = np.zeros((9, 1, 1), np.uint8)
    labels[1, 0, 0], labels[6, 0, 0] = 1, 2
    got = structure_regions(labels, spacing=(1.0, 1.0, 1.0), band_mm=2.0)[:, 0, 0].tolist()
    assert got == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    got = structure_regions(labels, spacing=(1.0, 1.0, 1.0), band_mm=1.0)[:, 0, 0].tolist()
    assert got == [1, 1, 1, 0, 0, 2, 2, 2, 0]


@pytest.mark.parametrize("case", CASES)
def test_suggestions_per_structure(tmp_path, hippo, cases, case):
    s = _session(tmp_path, hippo, cases[case])
    labels = cases[case][1]
    ranked = {sid: s.structure_suggestions(sid) for sid in (1, 2)}
    for sid, sugg in ranked.items():
        assert sugg["structure"] == sid and sugg["order"] == "gain"
        top = [x["index"] for x in sugg["slices"][:3]]
        assert all((labels[:, :, k] == sid).any() for k in top), (sid, top)
    # the two parts split the expected errors near the mask: together at most the volume's
    total = ranked[1]["total_expected_errors"] + ranked[2]["total_expected_errors"]
    assert 0 < total <= s.suggestions["total_expected_errors"] + 1e-6
    # the most anterior (lowest) and most posterior slices rank where their structure lies
    centre = {sid: np.argwhere(labels == sid)[:, 2].mean() for sid in (1, 2)}
    first = {sid: ranked[sid]["slices"][0]["index"] for sid in (1, 2)}
    assert (first[1] - first[2]) * (centre[1] - centre[2]) >= 0
    # per-structure queues walk their own ranking and persist (journal replay)
    k1 = s.next_suggestion(structure=1)
    k2 = s.next_suggestion(structure=2)
    assert (k1, k2) == (first[1], first[2])
    s.accept(k2, needed_refinement=False, structure=2)
    s2 = Session.open(tmp_path / "s")
    assert s2.squeues.queues[2].shown == [k2] and s2.squeues.queues[2].streak == 1
    assert s2.structure_suggestions(1) == ranked[1]
    s2.compact()
    s3 = Session.open(tmp_path / "s")
    assert s3.next_suggestion(structure=1) == ranked[1]["slices"][1]["index"]


def test_add_structure_persists_and_validates(tmp_path, hippo, cases):
    s = _session(tmp_path, hippo, cases["hippocampus_006"])
    s.add_structure("lesion", color=(255, 0, 0))
    k, _ = _crossing_slice(cases["hippocampus_006"][1])
    s.add_scribble(k, [(0, 0), (0, 1), (1, 0)], 1, structure=3)  # background: free to take
    s.refine(k, structure=3, method="paint")
    s2 = Session.open(tmp_path / "s")  # from the journal
    assert [(x.id, x.name, x.color) for x in s2.structures][2] == (3, "lesion", (255, 0, 0))
    assert np.array_equal(s2.mask, s.mask) and (s2.mask == 3).any()
    for bad, match in ((("anterior",), "already has a structure of that name"),
                       (("x",), None), (("",), "structure name")):
        if match is None:
            s2.add_structure(*bad, id=9)
            with pytest.raises(InputError, match="`id` 9: the session already has"):
                s2.add_structure("y", id=9)
        else:
            with pytest.raises(InputError, match=match):
                s2.add_structure(*bad)
    with pytest.raises(InputError, match="`color` must be three integers"):
        s2.add_structure("z", color=(1, 2, 300))
    with pytest.raises(InputError, match=r"`labels` values must lie in 0\.\.127"):
        s2.set_labels(np.full(s2.image.shape, 200))
    out = s2.save_mask(tmp_path / "all.nii.gz")  # every id, the image's affine exactly
    img = nib.load(out)
    assert np.array_equal(np.asarray(img.dataobj), s2.mask) and set(np.unique(img.dataobj)) == {0, 1, 2, 3}
    assert np.array_equal(img.affine, nib.load(cases["hippocampus_006"][0]).affine)


def test_old_single_label_session_still_loads(tmp_path, hippo, cases):
    image, labels, prob, unc = cases["hippocampus_004"]
    s = Session.create(tmp_path / "s", image)
    s.set_maps(prob, unc)
    k = int(np.argmax((labels > 0).sum((0, 1))))
    s.add_scribble(k, [(5, 5), (5, 6)], 2)
    s.compact()
    # the snapshot as the single-label code wrote it: no structures in its state
    path = tmp_path / "s" / "snapshot.npz"
    mask, scr, state, history = read_snapshot(path, s.image.shape)
    state = {key: v for key, v in state.items() if key not in ("structures", "structure_queues")}
    write_snapshot(path, mask, scr, state, history)
    old = Session.open(tmp_path / "s")
    assert [x.to_dict()["id"] for x in old.structures] == [1]
    assert set(np.unique(old.scribbles)) == {0, 2}  # structure 1's background stroke
    old.add_scribble(k, [(6, 6)], 1)
    old.refine(k)
    assert set(np.unique(old.mask)) <= {0, 1}
    assert json.loads((tmp_path / "s" / "meta.json").read_text(encoding="utf-8"))["format"] == "segrefine-session/2"


def test_dicom_seg_has_one_segment_per_structure(tmp_path, hippo, cases):
    pytest.importorskip("highdicom")
    from segrefine.dicomseg import read_seg, write_seg, write_series

    image, labels = cases["hippocampus_004"][:2]
    write_series(io.load(image), tmp_path / "series")
    s = Session.create(tmp_path / "s", tmp_path / "series", labels=labels, names=dataset_labels(hippo))
    assert np.allclose(s.volume.affine, nib.load(image).affine, atol=1e-4)
    write_seg(s.mask, tmp_path / "series", tmp_path / "seg.dcm", label_names=s.label_names())
    back, names = read_seg(tmp_path / "seg.dcm", tmp_path / "series")
    assert names == {"anterior": 1, "posterior": 2} and np.array_equal(back, labels)
    shutil.rmtree(tmp_path / "series")


def test_maps_with_a_multi_label_or_0_255_segmentation(tmp_path, hippo, cases):
    image, labels, prob, unc = cases["hippocampus_006"]
    s = Session.create(tmp_path / "s", image)
    s.set_maps(prob, unc, labels, names={2: "posterior"})
    assert [(x.id, x.name) for x in s.structures] == [(1, "foreground"), (2, "posterior")]
    assert np.array_equal(s.mask, labels)
    s.set_maps(prob, unc, (labels > 0).astype(np.uint8) * 255)  # a binary mask stored as 0/255
    assert np.array_equal(s.mask, (labels > 0).astype(np.uint8))
    with pytest.raises(InputError, match=r"`segmentation` values must lie in 0\.\.127"):
        s.set_maps(prob, unc, labels.astype(np.int16) * 100)
