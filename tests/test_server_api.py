"""The HTTP API (segrefine.server) on real shared files: sessions, editing verbs,
persistence across restarts, input validation, path traversal, size limits, and a
bounded load test against a real uvicorn server on loopback."""

from __future__ import annotations

import base64
import io
import json
import statistics
import threading
import time
import warnings
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi")
with warnings.catch_warnings():  # starlette prefers httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

from server_util import make_session, running_server, synthetic_maps

from segrefine.server import make_app
from segrefine.server.store import ID_PATTERN, new_id
from segrefine.session import Session

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HIPPO = "hippocampus/imagesTr/hippocampus_004.nii.gz"
FETAL = "fetal_stacks/images/a26_12.nii.gz"


@pytest.fixture()
def workspace(tmp_path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture()
def client(shared, workspace) -> TestClient:
    return TestClient(make_app(data_root=shared, workspace=workspace))


def _decode(sl: dict, key: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(sl[key]), np.uint8).reshape(sl["shape"])


def _with_maps(client: TestClient, workspace: Path, rel: str = HIPPO) -> str:
    """A session with synthetic maps written to the workspace; the app opens it lazily."""
    return make_session(workspace, client.app.state.data_root / rel)


def _map_files(shared: Path, tmp_path: Path) -> dict:
    """Synthetic probability and uncertainty maps of the HIPPO case as multipart files."""
    ref = nib.load(shared / HIPPO)
    prob, unc = synthetic_maps(ref.shape)
    files = {}
    for name, arr in (("prob", prob), ("uncertainty", unc)):
        nib.save(nib.Nifti1Image(arr, ref.affine), str(tmp_path / f"{name}.nii.gz"))
        files[name] = (f"{name}.nii.gz", (tmp_path / f"{name}.nii.gz").read_bytes())
    return files


def _nifti(tmp_path: Path, array: np.ndarray, name: str) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


# ---------------------------------------------------------------------- sessions
def test_create_from_path_and_status(client, shared):
    r = client.post("/api/sessions", json={"path": FETAL, "axis": 2, "method": "graphcut", "budget": 0.5})
    assert r.status_code == 201, r.text
    st = r.json()
    assert ID_PATTERN.fullmatch(st["id"])
    assert st["name"] == "a26_12" and st["shape"] == [192, 192, 19] and st["method"] == "graphcut"
    assert st["has_maps"] is False and st["queue"] is None
    np.testing.assert_allclose(st["affine"], nib.load(shared / FETAL).affine, atol=1e-5)
    listed = client.get("/api/sessions").json()
    assert [s["id"] for s in listed] == [st["id"]]
    r = client.get(f"/api/sessions/{st['id']}/suggestions")
    assert r.status_code == 400 and "no prediction yet" in r.json()["detail"]


def test_refinement_preset_choice(client, shared):
    from segrefine.refine.slice import DEFAULT_PRESET

    st = client.post("/api/sessions", json={"path": FETAL}).json()
    assert st["preset"] == DEFAULT_PRESET  # the benchmarked default when the page sends none
    st = client.post("/api/sessions", json={"path": FETAL, "preset": "paper"}).json()
    assert st["preset"] == "paper"
    r = client.post("/api/sessions", json={"path": FETAL, "preset": "fancy"})
    assert r.status_code == 422 and "preset" in r.text


def test_slice_order_choice(client, shared, tmp_path):
    from typing import get_args

    from segrefine.guidance import ORDERS
    from segrefine.server.models import Order

    assert set(get_args(Order)) == set(ORDERS)
    files = _map_files(shared, tmp_path)
    for order, key in (("gain", "score"), ("nu", "nu")):
        st = client.post("/api/sessions", json={"path": HIPPO, **({"order": order} if order != "gain" else {})})
        assert st.status_code == 201 and st.json()["order"] == order  # gain: the default
        sid = st.json()["id"]
        assert client.post(f"/api/sessions/{sid}/maps", files=files).status_code == 200
        sugg = client.get(f"/api/sessions/{sid}/suggestions").json()
        assert sugg["order"] == order
        scores = [sl[key] for sl in sugg["slices"]]
        assert scores == sorted(scores, reverse=True)
    r = client.post("/api/sessions", json={"path": HIPPO, "order": "alphabetical"})
    assert r.status_code == 422 and "order" in r.text


def test_ids_are_random_and_unknown_ids_404(client, workspace):
    ids = {client.post("/api/sessions", json={"path": HIPPO}).json()["id"] for _ in range(3)}
    assert len(ids) == 3 and all(ID_PATTERN.fullmatch(i) for i in ids)
    assert {p.name for p in workspace.iterdir() if not p.name.startswith(".")} == ids
    unknown = new_id()
    for bad in (unknown, "abc", "..", "%2e%2e", "a" * 21 + ".", "AAAAAAAAAAAAAAAAAAAAA%2F"):
        for method, route in (("get", ""), ("get", "/suggestions"), ("post", "/undo"),
                              ("get", "/download"), ("get", "/slices/2/0"), ("get", "/arrays/mask")):
            r = getattr(client, method)(f"/api/sessions/{bad}{route}")
            assert r.status_code == 404, (bad, route, r.status_code)
    r = client.post(f"/api/sessions/{unknown}/scribbles", json={"index": 0, "label": 1, "points": [[0, 0]]})
    assert r.status_code == 404 and "no session" in r.json()["detail"]


def test_scribble_refine_undo_redo_accept_download(client, workspace, shared, tmp_path):
    sid = _with_maps(client, workspace)
    sugg = client.get(f"/api/sessions/{sid}/suggestions").json()
    assert sugg["budget"] == 0.6 and len(sugg["slices"]) == 38
    scores = [s["score"] for s in sugg["slices"]]  # ranked by the session's order, highest first
    assert scores == sorted(scores, reverse=True)
    # the queue says which stop rule it runs (the viewer shows it): the order's own
    assert (sugg["queue"]["stop_dice"] is not None) == (sugg["order"] == "gain")
    assert sugg["queue"]["follow"] == (sugg["order"] == "gain")
    assert (sugg["queue"]["patience"] is not None) == (sugg["order"] != "gain")
    nxt = client.post(f"/api/sessions/{sid}/next").json()
    k = nxt["index"]
    assert k == sugg["slices"][0]["index"] and nxt["queue"]["shown"] == [k]

    before = _decode(client.get(f"/api/sessions/{sid}/slices/2/{k}").json(), "mask")
    # a foreground scribble far outside the blob, a background one through its centre
    fg = [[2, c] for c in range(2, 8)]
    bg = [[18, c] for c in range(22, 30)]
    r = client.post(f"/api/sessions/{sid}/scribbles", json={"index": k, "label": 1, "points": fg})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [c["kind"] for c in out["changes"]] == ["scribble"] and out["changes"][0]["bbox"] == [2, 3, 2, 8]
    assert (_decode(out["slice"], "scribbles")[2, 2:8] == 1).all()
    r = client.post(f"/api/sessions/{sid}/scribbles",
                    json={"index": k, "label": 2, "points": bg, "refine": True})
    out = r.json()
    assert r.status_code == 200 and [c["kind"] for c in out["changes"]] == ["scribble", "refine"]
    refined = _decode(out["slice"], "mask")
    assert refined[2, 2:8].all() and not refined[18, 22:30].any()  # scribbles are hard constraints
    assert not np.array_equal(refined, before)

    out = client.post(f"/api/sessions/{sid}/undo").json()  # the refinement
    assert out["changes"][0]["kind"] == "undo" and np.array_equal(_decode(out["slice"], "mask"), before)
    assert out["status"]["can_redo"]
    out = client.post(f"/api/sessions/{sid}/redo").json()
    assert np.array_equal(_decode(out["slice"], "mask"), refined)

    out = client.post(f"/api/sessions/{sid}/accept", json={"index": k, "needed_refinement": True}).json()
    assert out["status"]["accepted"] == [k] and out["status"]["queue"]["streak"] == 0

    r = client.get(f"/api/sessions/{sid}/download")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="hippocampus_004_mask.nii.gz"'
    (tmp_path / "mask.nii.gz").write_bytes(r.content)
    img = nib.load(tmp_path / "mask.nii.gz")
    ref = nib.load(shared / HIPPO)
    assert img.get_data_dtype() == np.uint8 and img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine)
    data = np.asarray(img.dataobj)
    assert np.array_equal(data[:, :, k], refined) and set(np.unique(data)) <= {0, 1}

    # the same mask through the raw array endpoint (Fortran order) and the viewer volume
    r = client.get(f"/api/sessions/{sid}/arrays/mask")
    shape = tuple(int(x) for x in r.headers["x-shape"].split(","))
    assert np.array_equal(np.frombuffer(r.content, np.uint8).reshape(shape, order="F"), data)
    r = client.get(f"/api/sessions/{sid}/volumes/scribbles.nii.gz")
    (tmp_path / "scr.nii.gz").write_bytes(r.content)
    scr = np.asarray(nib.load(tmp_path / "scr.nii.gz").dataobj)
    assert (scr[2, 2:8, k] == 1).all() and (scr[18, 22:30, k] == 2).all() and (scr > 0).sum() == 14


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_scribbles_as_png(client, workspace):
    sid = _with_maps(client, workspace)
    url = f"/api/sessions/{sid}/scribbles/png"
    labels = np.zeros((36, 52), np.uint8)
    labels[18, 20:30] = 127  # the UGIR demo's convention: 127 foreground, 255 background
    labels[1:3, 1:3] = 255
    r = client.post(url, files={"file": ("s.png", _png(labels))}, data={"index": "7", "refine": "true"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [c["kind"] for c in out["changes"]] == ["scribble", "scribble", "refine"]
    scr = _decode(out["slice"], "scribbles")
    assert np.array_equal(scr, np.select([labels == 127, labels == 255], [1, 2], 0))
    assert _decode(out["slice"], "mask")[18, 20:30].all()
    for data, text in [
        (_png(np.zeros((36, 51), np.uint8)), "PNG of 36x51 pixels, the slice has 36x52"),
        (_png(np.full((36, 52), 7, np.uint8)), "values must be 0/1/2 or 0/127/255"),
        (_png(np.zeros((36, 52), np.uint8)), "holds no scribble"),
        (b"GIF89a....", "not a PNG file"),
        (b"\x89PNG\r\n\x1a\n broken", "unreadable PNG"),
    ]:
        r = client.post(url, files={"file": ("s.png", data)}, data={"index": "7"})
        assert r.status_code == 400 and text in r.json()["detail"], r.text
    r = client.post(url, files={"file": ("s.png", _png(labels))}, data={"index": "70"})
    assert r.status_code == 400 and "outside 0..37" in r.json()["detail"]


def test_viewer_volumes_carry_an_explicit_sform(client, shared, tmp_path):
    # a26_12 stores only a qform whose quaternion has b²+c²+d² > 1 after float32
    # rounding; NiiVue then computes a NaN affine. The viewer's copy has an sform.
    sid = client.post("/api/sessions", json={"path": FETAL}).json()["id"]
    r = client.get(f"/api/sessions/{sid}/volumes/image.nii.gz")
    (tmp_path / "img.nii.gz").write_bytes(r.content)
    img, ref = nib.load(tmp_path / "img.nii.gz"), nib.load(shared / FETAL)
    assert int(img.header["sform_code"]) >= 1
    np.testing.assert_allclose(img.header.get_sform(), ref.affine, atol=1e-4)
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(ref.dataobj))
    assert client.get(f"/api/sessions/{sid}/volumes/uncertainty.nii.gz").status_code == 400
    assert client.get(f"/api/sessions/{sid}/volumes/..%2Fmeta.json").status_code == 404


def test_bad_editing_requests(client, workspace):
    sid = _with_maps(client, workspace)
    url = f"/api/sessions/{sid}/scribbles"
    cases = [
        ({"index": 3, "label": 3, "points": [[1, 1]]}, 422, "label"),
        ({"index": 3, "label": 1, "points": []}, 422, "points"),
        ({"index": 3, "label": 1, "points": [[1.5, 1]]}, 422, "points"),
        ({"index": 3, "label": 1, "points": [[1, 1]], "extra": 1}, 422, "extra"),
        ({"index": 3, "label": 1, "points": [[40, 1]]}, 400, "outside the 36x52 slice"),
        ({"index": 99, "label": 1, "points": [[1, 1]]}, 400, "slice index 99 outside 0..37"),
        ({"index": 3, "label": 1, "points": [[1, 1]], "method": "magic"}, 422, "method"),
    ]
    for body, status, text in cases:
        r = client.post(url, json=body)
        assert r.status_code == status and text in r.json()["detail"], (body, r.text)
    r = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.get(f"/api/sessions/{sid}/slices/5/0")
    assert r.status_code == 400 and "`axis` must be 0, 1 or 2" in r.json()["detail"]
    r = client.post(f"/api/sessions/{sid}/accept", json={"index": -1})
    assert r.status_code == 422
    assert client.get(f"/api/sessions/{sid}/arrays/image").status_code == 404
    assert client.post(f"/api/sessions/{sid}/refine", json={"index": 3}).status_code == 200


def test_maps_upload_and_from_path(client, workspace, shared, tmp_path):
    sid = client.post("/api/sessions", json={"path": HIPPO}).json()["id"]
    files = _map_files(shared, tmp_path)
    r = client.post(f"/api/sessions/{sid}/maps", files=files)
    assert r.status_code == 200, r.text
    assert r.json()["status"]["has_maps"] and r.json()["status"]["queue"]["budget_slices"] == 23
    bad = dict(files, uncertainty=("u.nii.gz", _nifti(tmp_path, np.zeros((3, 3, 3), np.float32),
                                                      "u.nii.gz").read_bytes()))
    r = client.post(f"/api/sessions/{sid}/maps", files=bad)
    assert r.status_code == 400 and "uncertainty shape (3, 3, 3) differs" in r.json()["detail"]
    # a label map from the data root as "probability" (values 0..2 are not probabilities)
    r = client.post(f"/api/sessions/{sid}/maps/from-path",
                    json={"prob": "hippocampus/labelsTr/hippocampus_004.nii.gz",
                          "uncertainty": "hippocampus/labelsTr/hippocampus_004.nii.gz"})
    assert r.status_code == 400 and "prob values must lie in [0, 1]" in r.json()["detail"]
    r = client.post(f"/api/sessions/{sid}/maps/from-path", json={"prob": "../x.nii.gz", "uncertainty": HIPPO})
    assert r.status_code == 403


# ---------------------------------------------------------------------- uploads
def _upload(client, name: str, data: bytes, **form):
    return client.post("/api/sessions/upload", files={"file": (name, data)},
                       data={k: str(v) for k, v in form.items()})


def test_upload_formats(client, shared, tmp_path):
    import SimpleITK as sitk

    raw = (shared / HIPPO).read_bytes()
    r = _upload(client, "hippo.nii.gz", raw, axis=1, budget=0.3)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "hippo" and r.json()["axis"] == 1
    arr = np.asarray(nib.load(shared / HIPPO).dataobj)
    for suffix in (".mha", ".nrrd"):
        path = tmp_path / f"case{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(arr.T.copy()), str(path))
        r = _upload(client, path.name, path.read_bytes())
        assert r.status_code == 201, r.text
        assert r.json()["shape"] == list(arr.shape)
    # name with folders and odd characters: only a cleaned base name is used
    r = _upload(client, "../../evil dir/x y.nii.gz", raw)
    assert r.status_code == 201 and r.json()["name"] == "x_y"

    for name, data, status, text in [
        ("scan.png", b"\x89PNG....", 415, "scan.png: not an accepted image"),
        ("scan.dcm", b"DICM", 415, "expected NIfTI (.nii, .nii.gz), NRRD (.nrrd) or MHA (.mha)"),
        ("case.mhd", b"NDims = 3", 415, "not an accepted image"),
        ("garbage.nii.gz", b"this is not an image", 400, "garbage.nii.gz: not a readable NIfTI image"),
        ("empty.nii", b"", 400, "empty.nii: the uploaded file is empty"),
        ("", raw, 422, "file"),
    ]:
        r = _upload(client, name, data)
        assert r.status_code == status and text in r.json()["detail"], (name, r.text)
    r = _upload(client, "hippo.nii.gz", raw, axis=3)
    assert r.status_code == 422 and "axis" in r.json()["detail"]
    r = _upload(client, "hippo.nii.gz", raw, method="magic")
    assert r.status_code == 422
    # nothing was left behind by the refused uploads
    tmp = client.app.state.store.workspace / ".tmp"
    assert not any(tmp.iterdir())


def test_upload_2d_and_4d_refused_with_message(client, tmp_path):
    for shape, text in (((20, 20), "expected a 3D image, got 2D of shape (20, 20)"),
                        ((8, 8, 8, 2), "expected a 3D image, got 4D of shape (8, 8, 8, 2)")):
        path = _nifti(tmp_path, np.zeros(shape, np.float32), "vol.nii.gz")
        r = _upload(client, "vol.nii.gz", path.read_bytes())
        assert r.status_code == 400
        assert r.json()["detail"] == f"vol.nii.gz: {text}"  # the upload's name, no server path
    path = _nifti(tmp_path, np.full((4, 4, 4), np.nan, np.float32), "nan.nii.gz")
    r = _upload(client, "nan.nii.gz", path.read_bytes())
    assert r.status_code == 400 and "NaN or inf" in r.json()["detail"]


def test_detached_headers_refused(client):
    nrrd = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: /etc/hostname\n\n"
    r = _upload(client, "x.nrrd", nrrd)
    assert r.status_code == 400 and "detached data file" in r.json()["detail"]
    mha = b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = /etc/hostname\n"
    r = _upload(client, "x.mha", mha)
    assert r.status_code == 400 and "ElementDataFile = LOCAL" in r.json()["detail"]


def test_upload_and_json_size_limits(shared, workspace):
    app = make_app(data_root=shared, workspace=workspace, max_upload_mb=0.5, max_json_mb=0.01)
    client = TestClient(app)
    big = (shared / FETAL).read_bytes()
    assert len(big) > 0.5 * 2**20
    r = _upload(client, "a26_12.nii.gz", big)
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed bytes are counted
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = client.post("/api/sessions/upload", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    sid = client.post("/api/sessions", json={"path": HIPPO}).json()["id"]
    pts = [[i % 36, i % 52] for i in range(5000)]
    r = client.post(f"/api/sessions/{sid}/scribbles", json={"index": 0, "label": 1, "points": pts})
    assert r.status_code == 413
    assert not any(p for p in workspace.iterdir() if p.name not in (".tmp", sid))


# ---------------------------------------------------------------------- paths
def test_path_traversal_refused(client, shared):
    for path, status in [
        ("../../etc/passwd", 403),
        ("hippocampus/../../../etc/passwd", 403),
        ("hippocampus/imagesTr/../../../SPEC.md", 403),
        ("/etc/passwd", 400),
        (str(shared / HIPPO), 400),
        ("..\\..\\etc\\passwd", 400),
        ("C:/Windows/win.ini", 400),
        ("hippocampus/\x00.nii.gz", 400),
        ("hippocampus/dataset.json", 415),
        ("hippocampus/nope.nii.gz", 404),
        ("", 422),
    ]:
        r = client.post("/api/sessions", json={"path": path})
        assert r.status_code == status, (path, r.status_code, r.text)
        assert r.json()["detail"]
    assert not any(p for p in client.app.state.store.workspace.iterdir() if p.name != ".tmp")


def test_symlink_out_of_the_data_root_refused(shared, tmp_path):
    root = tmp_path / "root"
    (root / "cases").mkdir(parents=True)
    (root / "cases" / "ok.nii.gz").write_bytes((shared / HIPPO).read_bytes())
    (root / "cases" / "evil.nii.gz").symlink_to(shared / HIPPO)
    (root / "linked").symlink_to(shared / "hippocampus", target_is_directory=True)
    client = TestClient(make_app(data_root=root, workspace=tmp_path / "ws"))
    assert client.post("/api/sessions", json={"path": "cases/ok.nii.gz"}).status_code == 201
    for path in ("cases/evil.nii.gz", "linked/imagesTr/hippocampus_004.nii.gz"):
        r = client.post("/api/sessions", json={"path": path})
        assert r.status_code == 403 and "outside the data root" in r.json()["detail"]
    assert [f["path"] for f in client.get("/api/files").json()] == ["cases/ok.nii.gz"]


def test_no_data_root_and_host_check(tmp_path, shared):
    client = TestClient(make_app(data_root=None, workspace=tmp_path / "ws"))
    r = client.post("/api/sessions", json={"path": HIPPO})
    assert r.status_code == 404 and "no data root" in r.json()["detail"]
    assert client.get("/api/files").json() == []
    app = make_app(data_root=shared, workspace=tmp_path / "ws2", allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/sessions").status_code == 200
    assert TestClient(app, base_url="http://localhost").get("/api/sessions").status_code == 200
    assert TestClient(app, base_url="http://rebound.example.com").get("/api/sessions").status_code == 400


# ---------------------------------------------------------------------- persistence
def test_restart_reopens_the_session_at_its_last_state(shared, workspace):
    c1 = TestClient(make_app(data_root=shared, workspace=workspace))
    sid = _with_maps(c1, workspace)
    k = c1.post(f"/api/sessions/{sid}/next").json()["index"]
    c1.post(f"/api/sessions/{sid}/scribbles", json={"index": k, "label": 1, "points": [[18, 26]]})
    out = c1.post(f"/api/sessions/{sid}/scribbles",
                  json={"index": k, "label": 2, "points": [[1, 1], [1, 2]], "refine": True}).json()
    c1.post(f"/api/sessions/{sid}/accept", json={"index": k, "needed_refinement": True})
    before = c1.get(f"/api/sessions/{sid}").json()
    mask_before = c1.get(f"/api/sessions/{sid}/arrays/mask").content
    del c1

    c2 = TestClient(make_app(data_root=shared, workspace=workspace))  # a new server process
    assert [s["id"] for s in c2.get("/api/sessions").json()] == [sid]
    after = c2.get(f"/api/sessions/{sid}").json()
    assert after == before and after["accepted"] == [k] and after["queue"]["shown"] == [k]
    assert c2.get(f"/api/sessions/{sid}/arrays/mask").content == mask_before
    sl = c2.get(f"/api/sessions/{sid}/slices/2/{k}").json()
    assert sl == out["slice"]
    undone = c2.post(f"/api/sessions/{sid}/undo").json()  # history survived too
    assert undone["changes"][0]["kind"] == "undo" and undone["status"]["can_redo"]
    # the next suggestion continues the queue instead of starting again
    assert c2.post(f"/api/sessions/{sid}/next").json()["queue"]["shown"][0] == k


def test_eviction_keeps_sessions_consistent(shared, workspace):
    client = TestClient(make_app(data_root=shared, workspace=workspace, max_open_sessions=1))
    a, b = _with_maps(client, workspace), _with_maps(client, workspace)
    for i in range(3):
        for sid in (a, b):
            r = client.post(f"/api/sessions/{sid}/scribbles", json={"index": 5, "label": 1, "points": [[i, i]]})
            assert r.status_code == 200
    assert len(client.app.state.store._open) == 1
    for sid in (a, b):
        scr = _decode(client.get(f"/api/sessions/{sid}/slices/2/5").json(), "scribbles")
        assert scr[0, 0] == scr[1, 1] == scr[2, 2] == 1 and scr.sum() == 3


# ---------------------------------------------------------------------- load
def test_bounded_load_8_sessions_x_50_scribbles(shared, tmp_path, capsys):
    """8 concurrent sessions × 50 scribble requests (every 5th refines) on a real server."""
    n_sessions, n_requests = 8, 50
    workspace = tmp_path / "ws"
    workspace.mkdir()
    cases = sorted((shared / "hippocampus" / "imagesTr").glob("*.nii.gz"))[:n_sessions]
    sids = [make_session(workspace, case, method="graphcut", seed=i) for i, case in enumerate(cases)]
    shapes = [Session.open(workspace / sid).image.shape for sid in sids]
    expected: list[dict] = [{} for _ in sids]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    with running_server(workspace, shared) as url:
        def worker(w: int) -> None:
            rng = np.random.default_rng(w)
            h, wd, depth = shapes[w]
            with httpx.Client(base_url=url, timeout=60) as http:
                for i in range(n_requests):
                    k = int(rng.integers(depth))
                    r_, c_ = int(rng.integers(h)), int(rng.integers(wd))
                    label = 1 + i % 2
                    body = {"index": k, "label": label, "points": [[r_, c_]], "refine": i % 5 == 4}
                    t0 = time.perf_counter()
                    try:
                        resp = http.post(f"/api/sessions/{sids[w]}/scribbles", json=body)
                    except httpx.HTTPError as exc:
                        errors.append(f"session {w} request {i}: {exc!r}")
                        continue
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                    if resp.status_code != 200:
                        errors.append(f"session {w} request {i}: {resp.status_code} {resp.text[:200]}")
                    expected[w][(r_, c_, k)] = label

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        wall = time.perf_counter() - start
        assert not any(t.is_alive() for t in threads), "load test did not finish in time"
        assert errors == []
        assert len(latencies) == n_sessions * n_requests

        def check_all(base: str) -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                for w, sid in enumerate(sids):
                    r = http.get(f"/api/sessions/{sid}/arrays/scribbles")
                    scr = np.frombuffer(r.content, np.uint8).reshape(shapes[w], order="F")
                    got = {tuple(map(int, idx)): int(scr[tuple(idx)]) for idx in np.argwhere(scr)}
                    assert got == expected[w], f"session {w}: lost or extra scribbles"
                    st = http.get(f"/api/sessions/{sid}").json()
                    assert st["can_undo"] and not st["can_redo"]

        check_all(url)
        url.proc.kill()  # crash the server mid-session ...
        url.proc.wait(timeout=10)
    with running_server(workspace, shared) as url2:  # ... and restart it on the same workspace
        check_all(url2)
    for w, sid in enumerate(sids):  # every action is in the persisted history
        assert Session.open(workspace / sid).pointer == n_requests + n_requests // 5

    ms = np.array(latencies) * 1000
    report = {"sessions": n_sessions, "requests_per_session": n_requests, "wall_s": round(wall, 2),
              "requests_per_s": round(len(ms) / wall, 1),
              **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)},
              "max_ms": round(float(ms.max()), 1), "mean_ms": round(statistics.fmean(ms), 1)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load_test.json").write_text(json.dumps(report, indent=1))
    with capsys.disabled():
        print(f"\nload test {n_sessions} sessions x {n_requests} scribbles: {report}")
    assert report["p99_ms"] < 10_000
