"""The MONAI Label protocol with the real client (``monailabel``'s ``MONAILabelClient``, as
3D Slicer's module uses it) against the real server on loopback, in the module's call
order: info, train status, next sample, infer segmentation, infer scribbles, save label,
info; then the DICOM path (a series in the datastore, ``/infer?output=dicom_seg``)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import shutil
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
client_mod = pytest.importorskip("monailabel.client.client")

from server_util import running_server

from segrefine import io
from segrefine.dicomseg import read_seg, write_series
from segrefine.uncertainty import Predictor

CASES = ("hippocampus_004", "hippocampus_006")
LABEL_INFO = [{"name": "hippocampus", "id": 1}, {"name": "foreground_scribbles", "id": 2},
              {"name": "background_scribbles", "id": 3}]


@pytest.fixture(scope="module")
def served(hippo, tmp_path_factory):
    """A data root holding two hippocampus images (and their labels, which the datastore must
    not list) and one DICOM series written from a third case, and the server on it."""
    root = tmp_path_factory.mktemp("root")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    for case in CASES:
        shutil.copy(hippo / "imagesTr" / f"{case}.nii.gz", root / "imagesTr")
        shutil.copy(hippo / "labelsTr" / f"{case}.nii.gz", root / "labelsTr")
    write_series(io.load(hippo / "imagesTr" / "hippocampus_007.nii.gz"), root / "series" / "hippo7")
    workspace = tmp_path_factory.mktemp("ws")
    with running_server(workspace, root, timeout=120) as url:
        yield url, root, workspace


def _gain(path) -> float:
    pred = Predictor("mgnet")(io.load(path).array)
    return float(np.minimum(pred.prob, 1 - pred.prob).sum())


def test_slicer_call_order_with_the_real_client(served, hippo, tmp_path):
    url, root, _ = served
    client = client_mod.MONAILabelClient(url, tmpdir=str(tmp_path), client_id="slicer-test")

    # fetch info: models, strategies, datastore; no top-level config (Slicer refuses it)
    assert client.auth_enabled() is False
    info = client.info()
    assert "config" not in info
    assert info["models"]["segmentation"]["type"] == "segmentation"
    assert {m["type"] for m in info["models"].values()} == {"segmentation", "scribbles"}
    assert info["labels"] == ["hippocampus"]
    assert set(info["strategies"]) == {"gain", "uncertainty"}
    assert info["datastore"] == {"total": 3, "completed": 0, "label_tags": {}}  # labelsTr not listed

    assert client.train_status(check_if_running=True) is False
    with pytest.raises(client_mod.MONAILabelClientException) as refused:
        client.train_start("segmentation", {})
    assert "not offered" in str(refused.value.msg)

    # next sample: the image whose MG-Net prediction expects the most wrong voxels
    sample = client.next_sample("gain", {})
    paths = {f"imagesTr/{c}": root / "imagesTr" / f"{c}.nii.gz" for c in CASES}
    paths["series/hippo7"] = root / "series" / "hippo7"
    gains = {i: _gain(p) for i, p in paths.items()}
    assert sample["id"] == max(gains, key=gains.get)
    assert sample["expected_errors"] == pytest.approx(gains[sample["id"]], rel=1e-4)
    scores = [s["score"] for s in sample["slices"]]  # expected wrong voxels with the end prior
    assert scores == sorted(scores, reverse=True) and len(scores) >= 1
    assert all(s["score"] >= s["expected_errors"] for s in sample["slices"])
    image_id = sample["id"]

    # Slicer downloads the image under sample["name"]
    got = httpx.get(f"{url}/datastore/image", params={"image": image_id}, timeout=60)
    assert got.status_code == 200
    local = tmp_path / sample["name"]
    local.write_bytes(got.content)
    volume = io.load(local)
    assert np.array_equal(volume.array, io.load(paths[image_id]).array)

    # infer segmentation: a .nii.gz file part and the params
    result, params = client.infer("segmentation", image_id, {})
    assert result.endswith(".nii.gz") and params["label_names"] == {"hippocampus": 1}
    seg = io.load(result).array
    expected = Predictor("mgnet")(volume.array).label
    assert np.array_equal(seg > 0, expected > 0)
    assert [s["index"] for s in params["slices"]] == [s["index"] for s in sample["slices"]]

    # infer scribbles: Slicer's label map of all segments (label 1, strokes 2 and 3)
    case = "hippocampus_007" if image_id == "series/hippo7" else image_id.split("/")[-1]
    truth = io.load(hippo / "labelsTr" / f"{case}.nii.gz").array > 0
    k = int(sample["slices"][0]["index"])
    missed = truth[:, :, k] & ~(seg[:, :, k] > 0)
    extra = ~truth[:, :, k] & (seg[:, :, k] > 0)
    labelmap = (seg > 0).astype(np.uint8)
    labelmap[:, :, k][missed] = 2
    labelmap[:, :, k][extra] = 3
    assert missed.any() or extra.any()
    strokes = tmp_path / "scribbles.nii.gz"
    nib.save(nib.Nifti1Image(labelmap, volume.affine), str(strokes))
    result, params = client.infer("scribbles", image_id, {
        "label_info": LABEL_INFO, "selected_label_name": "hippocampus", "roi": [],
        "result_extension": ".nrrd", "result_dtype": "uint8"}, label_in=str(strokes))
    assert result.endswith(".nrrd") and params["refined_slices"] == [k]
    refined = io.load(result).array
    assert refined.shape == seg.shape
    assert refined[:, :, k][missed].all() and not refined[:, :, k][extra].any()
    others = [j for j in range(seg.shape[2]) if j != k]
    assert np.array_equal(refined[:, :, others] > 0, seg[:, :, others] > 0)
    before = (seg[:, :, k] > 0) ^ truth[:, :, k]
    after = (refined[:, :, k] > 0) ^ truth[:, :, k]
    assert after.sum() < before.sum()

    # save label twice: two versions, the first kept
    first = client.save_label(image_id, result, params={"label_info": [{"name": "hippocampus", "idx": 1}],
                                                         "model": "scribbles"})
    assert first == {"image": image_id, "label": image_id, "tag": "final", "version": 1}
    second_file = tmp_path / "second.nii.gz"
    nib.save(nib.Nifti1Image((seg > 0).astype(np.uint8), volume.affine), str(second_file))
    assert client.save_label(image_id, str(second_file), params={})["version"] == 2
    assert np.array_equal(io.load(client.download_label(image_id, "final")).array, seg > 0)
    v1 = httpx.get(f"{url}/datastore/label", params={"label": image_id, "tag": "final", "version": 1})
    (tmp_path / "v1.nii.gz").write_bytes(v1.content)
    assert np.array_equal(io.load(tmp_path / "v1.nii.gz").array, refined)
    original = client.download_label(image_id, "original")
    assert np.array_equal(io.load(original).array > 0, expected > 0)
    objects = client.datastore()["objects"]
    assert objects[image_id]["labels"]["original"]["info"]["params"]["label_names"] == {"hippocampus": 1}

    info = client.info()
    assert info["datastore"]["completed"] == 1
    assert info["datastore"]["label_tags"] == {"final": 1, "original": 1}

    # the next sample is another image; once every image has a final label: {}
    rest = sorted((i for i in gains if i != image_id), key=gains.get, reverse=True)
    for other in rest:
        nxt = client.next_sample("gain", {})
        assert nxt["id"] == other
        lab = tmp_path / "empty.nii.gz"
        vol = io.load(paths[other])
        nib.save(nib.Nifti1Image(np.zeros(vol.shape, np.uint8), vol.affine), str(lab))
        client.save_label(other, str(lab), params={})
    assert client.next_sample("gain", {}) == {}
    assert client.next_sample("uncertainty", {}) == {}


def test_dicom_series_in_the_datastore_and_dicom_seg_out(served, tmp_path):
    url, root, _ = served
    series = root / "series" / "hippo7"
    volume = io.load(series)
    expected = Predictor("mgnet")(volume.array).label > 0
    with httpx.Client(base_url=url, timeout=120) as http:
        got = http.get("/datastore/image", params={"image": "series/hippo7"})
        assert got.status_code == 200
        (tmp_path / "s.nii.gz").write_bytes(got.content)
        assert np.array_equal(io.load(tmp_path / "s.nii.gz").array, volume.array)

        # a correction first, so that the SEG records a corrected slice
        k = volume.shape[2] // 2
        labelmap = expected.astype(np.uint8)
        labelmap[:, :, k][expected[:, :, k]] = 3  # background strokes over the whole slice's mask
        labelmap[0, 0, k] = 3
        strokes = tmp_path / "strokes.nii.gz"
        nib.save(nib.Nifti1Image(labelmap, volume.affine), str(strokes))
        params = '{"label_info": %s, "selected_label_name": "hippocampus"}' % str(LABEL_INFO).replace("'", '"')
        with open(strokes, "rb") as fh:
            r = http.post("/infer/scribbles_graphcut", params={"image": "series/hippo7", "output": "dicom_seg"},
                          data={"params": params}, files={"label": ("strokes.nii.gz", fh)})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/dicom"
        seg_path = tmp_path / "refined.dcm"
        seg_path.write_bytes(r.content)
        mask, names = read_seg(seg_path, series)
        assert names == {"hippocampus": 1}
        want = expected.copy()
        want[:, :, k] = False
        assert np.array_equal(mask > 0, want)
        import pydicom

        ds = pydicom.dcmread(seg_path)
        algo = ds.SegmentSequence[0]
        assert algo.SegmentAlgorithmType == "SEMIAUTOMATIC"
        recorded = http.get("/datastore/image/info", params={"image": "series/hippo7"}).json()["corrected_slices"]
        assert k in recorded  # (the first test corrected one slice of this image too when it picked it)
        assert f"slices corrected by a person: {','.join(map(str, recorded))} " in ds.ImageComments
        assert ds.SegmentSequence[0].SegmentLabel == "hippocampus"
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(
            next(series.glob("*.dcm"))).SeriesInstanceUID

        # OHIF names the image by its SeriesInstanceUID
        uid = str(pydicom.dcmread(next(series.glob("*.dcm"))).SeriesInstanceUID)
        r = http.post("/infer/segmentation", params={"image": uid, "output": "json"})
        assert r.status_code == 200 and r.json()["image"] == "series/hippo7"

        r = http.post("/infer/segmentation", params={"image": "imagesTr/hippocampus_004", "output": "dicom_seg"})
        assert r.status_code == 400 and "not a DICOM series" in r.json()["detail"]


def test_slicer_session_for_a_locally_loaded_volume(served, hippo, tmp_path):
    """A volume loaded in Slicer (not from the datastore) goes through /session/."""
    url, _, _ = served
    client = client_mod.MONAILabelClient(url, tmpdir=str(tmp_path), client_id="slicer-test")
    local = tmp_path / "tmpvolume.nii.gz"
    shutil.copy(hippo / "imagesTr" / "hippocampus_008.nii.gz", local)
    session = client.create_session(str(local))
    sid = session["session_id"]
    assert client.get_session(sid)["session_id"] == sid
    result, params = client.infer("segmentation", "MRHead", {}, session_id=sid)
    expected = Predictor("mgnet")(io.load(local).array).label > 0
    assert np.array_equal(io.load(result).array > 0, expected)
    assert sid not in client.datastore()["objects"]  # a session image is not a datastore image
    client.remove_session(sid)
    with pytest.raises(client_mod.MONAILabelClientException):
        client.get_session(sid)
    r = httpx.post(f"{url}/infer/segmentation", params={"image": "x", "session_id": sid})
    assert r.status_code == 404 and "expired or removed" in r.json()["detail"]


def test_scribbles_keep_other_segments_unless_overwrite(served, tmp_path):
    """Two segments: refining one (Graph Cut: it follows MG-Net's probability, not the current
    segment) does not take the other's voxels (lock), unless overwrite."""
    url, root, _ = served
    image_id = f"imagesTr/{CASES[1]}"
    volume = io.load(root / "imagesTr" / f"{CASES[1]}.nii.gz")
    seg = Predictor("mgnet")(volume.array).label > 0
    k = int(np.argmax(seg.sum((0, 1))))
    ys, xs = np.nonzero(seg[:, :, k])
    labelmap = seg.astype(np.uint8)
    other = np.zeros(seg.shape, bool)
    other[:, :, k] = seg[:, :, k] & (np.arange(seg.shape[0])[:, None] >= np.median(ys))  # half the mask
    labelmap[other] = 5
    labelmap[ys[0], xs[0], k] = 2  # a foreground stroke inside the kept half
    strokes = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(labelmap, volume.affine), str(strokes))
    info = LABEL_INFO + [{"name": "other", "id": 5}]
    results = {}
    for overwrite in (False, True):
        params = {"label_info": info, "selected_label_name": "hippocampus", "overwrite": overwrite,
                  "result_extension": ".nii.gz"}
        with httpx.Client(base_url=url, timeout=120) as http, open(strokes, "rb") as fh:
            r = http.post("/infer/scribbles_graphcut", params={"image": image_id, "output": "all"},
                          data={"params": json.dumps(params)}, files={"label": ("two.nii.gz", fh)})
        assert r.status_code == 200, r.text
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {r.headers['content-type']}\r\n\r\n".encode() + r.content)
        parts = list(msg.iter_parts())
        (tmp_path / f"r{overwrite}.nii.gz").write_bytes(parts[1].get_payload(decode=True))
        results[overwrite] = io.load(tmp_path / f"r{overwrite}.nii.gz").array > 0
    assert not (results[False] & other).any()
    assert (results[True] & other).any()  # the refinement does reach into the other segment
    assert np.array_equal(results[False], results[True] & ~other)


@pytest.fixture(scope="module")
def served_one(hippo, tmp_path_factory):
    """A Decathlon folder holding one hippocampus image and its dataset.json (labels
    1 = anterior, 2 = posterior), and the server on it."""
    root = tmp_path_factory.mktemp("root1")
    (root / "imagesTr").mkdir()
    shutil.copy(hippo / "imagesTr" / "hippocampus_004.nii.gz", root / "imagesTr")
    shutil.copy(hippo / "dataset.json", root)
    workspace = tmp_path_factory.mktemp("ws1")
    with running_server(workspace, root, timeout=120) as url:
        yield url, root


def test_next_sample_ranks_slices_per_structure(served_one, hippo, tmp_path):
    """A two-label label saved over the protocol: next sample ranks the slices of each structure
    (its part of the uncertainty: voxels nearest to it within 5 mm) beside the whole mask's."""
    from scipy import ndimage

    from segrefine import structures as st

    url, root = served_one
    client = client_mod.MONAILabelClient(url, tmpdir=str(tmp_path), client_id="slicer-test")
    image_id = "imagesTr/hippocampus_004"
    first = client.next_sample("gain", {})
    assert first["id"] == image_id and first["structures"] == [] and first["structures_label"] is None

    truth_path = hippo / "labelsTr" / "hippocampus_004.nii.gz"
    truth = io.load(truth_path)
    labels = np.rint(truth.array).astype(np.uint8)
    assert set(np.unique(labels)) == {0, 1, 2}
    # no label_info: the names come from the dataset.json of the image's folder
    saved = client.save_label(image_id, str(truth_path), tag="draft", params={})
    assert saved["tag"] == "draft" and saved["version"] == 1
    sample = client.next_sample("gain", {})
    assert sample["id"] == image_id  # a draft is not a final label: the image is still to label
    assert sample["slices"] == first["slices"]  # the whole mask's ranking is unchanged
    assert sample["structures_label"] == {"tag": "draft", "version": 1}
    got = {s["id"]: s for s in sample["structures"]}
    assert sorted(got) == [1, 2]
    assert got[1]["name"] == "anterior" and got[2]["name"] == "posterior"

    pred = Predictor("mgnet")(io.load(root / "imagesTr" / "hippocampus_004.nii.gz").array)
    errors = np.minimum(pred.prob, 1 - pred.prob)
    spacing = tuple(truth.spacing)
    for sid, entry in got.items():
        assert entry["voxels"] == int((labels == sid).sum())
        ranked = entry["slices"]
        assert ranked, f"structure {sid}: no ranked slice"
        scores = [s["score"] for s in ranked]
        assert scores == sorted(scores, reverse=True)
        values = [s["expected_errors"] for s in ranked]
        near = ndimage.distance_transform_edt(labels != sid, sampling=spacing) <= st.BAND_MM
        for s in ranked:
            k = s["index"]
            assert near[:, :, k].any(), f"structure {sid}: slice {k} lies outside its 5 mm band"
            # its share of the slice's expected wrong voxels, at most those within its band
            assert 0 <= s["expected_errors"] <= errors[:, :, k][near[:, :, k]].sum() * (1 + 1e-5)
        # the same numbers as the web session's split of the same maps
        want = st.structure_suggestions(pred.uncertainty, pred.prob, labels, sid, spacing=spacing, axis=2)
        want = [w for w in want["slices"] if w["in_budget"]]
        assert [s["index"] for s in ranked] == [w["index"] for w in want]
        assert values == pytest.approx([w["expected_errors"] for w in want], rel=1e-4)
    # the parts do not overlap: a slice's errors given to both structures add up to at most the band's
    band = ndimage.distance_transform_edt(labels == 0, sampling=spacing) <= st.BAND_MM
    per_slice: dict[int, float] = {}
    for entry in got.values():
        for s in entry["slices"]:
            per_slice[s["index"]] = per_slice.get(s["index"], 0.0) + s["expected_errors"]
    for k, total in per_slice.items():
        assert total <= errors[:, :, k][band[:, :, k]].sum() * (1 + 1e-5)

    # the names the client gives with the label come first
    info = [{"name": "head", "id": 1}, {"name": "tail", "id": 2}]
    client.save_label(image_id, str(truth_path), tag="edit", params={"label_info": info})
    named = client.next_sample("gain", {})
    assert named["structures_label"] == {"tag": "edit", "version": 1}
    assert [(s["id"], s["name"]) for s in named["structures"]] == [(1, "head"), (2, "tail")]
    assert [s["slices"] for s in named["structures"]] == [got[1]["slices"], got[2]["slices"]]

    # a newer one-structure label: the whole mask's ranking only
    one = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image((labels > 0).astype(np.uint8), truth.affine), str(one))
    client.save_label(image_id, str(one), tag="draft", params={})
    single = client.next_sample("gain", {})
    assert single["structures"] == [] and single["structures_label"] == {"tag": "draft", "version": 2}
    assert single["slices"] == first["slices"]

    client.save_label(image_id, str(truth_path), params={"label_info": info})  # final: nothing left
    assert client.next_sample("gain", {}) == {}
