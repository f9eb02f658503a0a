"""Several structures over the HTTP API, on the real hippocampus case 004 and the shipped
MG-Net: a session started with its label map (names from dataset.json), suggestions and
queues per structure, a stroke of one structure that leaves the other untouched, overwrite,
a new structure, label map uploads and the export of every id."""

from __future__ import annotations

import base64
import warnings

import nibabel as nib
import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi")
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

from test_structures import _crossing_slice

from segrefine.server import make_app

IMAGE = "hippocampus/imagesTr/hippocampus_004.nii.gz"
LABELS = "hippocampus/labelsTr/hippocampus_004.nii.gz"


def _mask(client, sid) -> np.ndarray:
    raw = client.get(f"/api/sessions/{sid}/arrays/mask")
    shape = tuple(map(int, raw.headers["X-Shape"].split(",")))
    return np.frombuffer(raw.content, np.uint8).reshape(shape, order="F")


def test_structures_over_the_api(shared, tmp_path):
    client = TestClient(make_app(data_root=shared, workspace=tmp_path / "ws"))
    labels = np.asarray(nib.load(shared / LABELS).dataobj).astype(np.uint8)
    r = client.post("/api/sessions", json={"path": IMAGE, "labels": LABELS})
    assert r.status_code == 201, r.text
    st = r.json()
    sid = st["id"]
    assert [(x["id"], x["name"]) for x in st["structures"]] == [(1, "anterior"), (2, "posterior")]
    assert client.post(f"/api/sessions/{sid}/predict").status_code == 200
    assert np.array_equal(_mask(client, sid), labels)  # MG-Net's maps; the label map is kept

    sugg = client.get(f"/api/sessions/{sid}/suggestions", params={"structure": 2}).json()
    assert sugg["structure"] == 2 and sugg["band_mm"] == 5.0 and sugg["slices"]
    nxt = client.post(f"/api/sessions/{sid}/next", params={"structure": 2}).json()
    assert nxt["index"] == sugg["slices"][0]["index"] and nxt["queue"]["shown"] == [nxt["index"]]
    assert client.get(f"/api/sessions/{sid}/suggestions").json()["structure"] is None

    k, pts = _crossing_slice(labels)
    body = {"index": k, "label": 1, "points": [list(p) for p in pts], "refine": True, "structure": 1}
    r = client.post(f"/api/sessions/{sid}/scribbles", json=body)
    assert r.status_code == 200, r.text
    mask = _mask(client, sid)
    assert np.array_equal(mask == 2, labels == 2)  # posterior untouched (lock)
    sl = r.json()["slice"]
    got = np.frombuffer(base64.b64decode(sl["mask"]), np.uint8).reshape(sl["shape"])
    assert np.array_equal(got, mask[:, :, k])
    client.post(f"/api/sessions/{sid}/undo")
    client.post(f"/api/sessions/{sid}/undo")
    r = client.post(f"/api/sessions/{sid}/scribbles", json={**body, "overwrite": True})
    assert all(_mask(client, sid)[r_, c, k] == 1 for r_, c in pts)  # overwrite: the stroke takes them

    r = client.post(f"/api/sessions/{sid}/structures", json={"name": "lesion", "color": [255, 0, 0]})
    assert r.status_code == 200 and r.json()["status"]["structures"][2] == {"id": 3, "name": "lesion",
                                                                          "color": [255, 0, 0]}
    r = client.post(f"/api/sessions/{sid}/structures", json={"name": "lesion"})
    assert r.status_code == 400 and "already has a structure of that name" in r.json()["detail"]
    r = client.post(f"/api/sessions/{sid}/scribbles", json={**body, "structure": 9})
    assert r.status_code == 400 and "`structure` 9 is not one of" in r.json()["detail"]
    assert client.post(f"/api/sessions/{sid}/scribbles", json={**body, "structure": 0}).status_code == 422

    r = client.get(f"/api/sessions/{sid}/download")
    (tmp_path / "d.nii.gz").write_bytes(r.content)
    img = nib.load(tmp_path / "d.nii.gz")
    assert set(np.unique(img.dataobj)) == {0, 1, 2}
    assert np.array_equal(img.affine, nib.load(shared / IMAGE).affine)

    r = client.post(f"/api/sessions/{sid}/labels",
                    files={"file": ("x.nii.gz", (shared / LABELS).read_bytes(), "application/gzip")})
    assert r.status_code == 200 and np.array_equal(_mask(client, sid), labels)
    names = [x["name"] for x in r.json()["status"]["structures"]]
    assert names == ["anterior", "posterior"]  # the session's names for the ids it had
    r = client.post(f"/api/sessions/{sid}/labels/from-path", json={"path": IMAGE})
    assert r.status_code == 400 and "`labels` values must lie in 0..127" in r.json()["detail"]
    r = client.post(f"/api/sessions/{sid}/labels/from-path", json={"path": "../x.nii.gz"})
    assert r.status_code == 403


def test_structure_id_bound_matches_the_library():
    from segrefine.server import models as m
    from segrefine.structures import MAX_ID

    field = m.ScribbleRequest.model_fields["structure"]
    assert m.ScribbleRequest(index=0, label=1, points=[(0, 0)], structure=MAX_ID).structure == MAX_ID
    with pytest.raises(Exception, match="less than or equal to 127"):
        m.ScribbleRequest(index=0, label=1, points=[(0, 0)], structure=MAX_ID + 1)
    assert field.default is None


def test_dicom_seg_of_a_session_with_two_structures(shared, tmp_path):
    pytest.importorskip("highdicom")
    from segrefine import io
    from segrefine.dicomseg import read_seg, write_series

    root = tmp_path / "root"
    write_series(io.load(shared / IMAGE), root / "series" / "h4")
    (root / "labels").mkdir()
    (root / "labels" / "h4.nii.gz").write_bytes((shared / LABELS).read_bytes())
    client = TestClient(make_app(data_root=root, workspace=tmp_path / "ws"))
    r = client.post("/api/sessions", json={"path": "series/h4", "labels": "labels/h4.nii.gz"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert [x["name"] for x in r.json()["structures"]] == ["label 1", "label 2"]  # no dataset.json
    r = client.get(f"/api/sessions/{sid}/dicom-seg", params={"series": "series/h4"})
    assert r.status_code == 200, r.text
    (tmp_path / "s.dcm").write_bytes(r.content)
    back, names = read_seg(tmp_path / "s.dcm", root / "series" / "h4")
    labels = np.asarray(nib.load(shared / LABELS).dataobj)
    assert names == {"label 1": 1, "label 2": 2} and np.array_equal(back, labels)


def test_slicer_segmentation_download(shared, tmp_path):
    """``download?format=seg.nrrd`` read by slicerio (3D Slicer's own Python reader of
    segmentation files): segment names, colours and values, the voxels and the geometry."""
    slicerio = pytest.importorskip("slicerio")
    client = TestClient(make_app(data_root=shared, workspace=tmp_path / "ws"))
    sid = client.post("/api/sessions", json={"path": IMAGE, "labels": LABELS}).json()["id"]
    client.post(f"/api/sessions/{sid}/structures", json={"name": "lesion", "color": [255, 0, 0]})
    r = client.get(f"/api/sessions/{sid}/download", params={"format": "seg.nrrd"})
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('_mask.seg.nrrd"')
    (tmp_path / "s.seg.nrrd").write_bytes(r.content)
    seg = slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"))
    got = [(s["name"], s["labelValue"], [round(c * 255) for c in s["color"]]) for s in seg["segments"]]
    assert got == [("anterior", 1, [128, 174, 128]), ("posterior", 2, [241, 214, 145]), ("lesion", 3, [255, 0, 0])]
    ref = nib.load(shared / IMAGE)
    labels = np.asarray(nib.load(shared / LABELS).dataobj)
    assert np.array_equal(seg["voxels"], labels)
    lps = np.diag([-1.0, -1.0, 1.0]) @ ref.affine[:3]  # the file's space is LPS
    assert np.allclose(seg["ijkToLPS"][:3], lps, atol=1e-5)
    assert client.get(f"/api/sessions/{sid}/download", params={"format": "png"}).status_code == 422
