"""The MONAI Label protocol replayed byte for byte as 3D Slicer's module and OHIF's extension
send it (multipart field names, file names, params, query strings), against the real server
on loopback; and the same safety rules as ``/api`` (data-root confinement, voxel cap,
Origin check, one-line errors)."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus, urlsplit

import httpx
import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")

from server_util import REPO, free_port, running_server

from segrefine import io

CASE = "hippocampus_004"
IMAGE_ID = f"imagesTr/{CASE}"
#: the boundary Slicer's MONAILabelLib client writes
SLICER_BOUNDARY = "----------lImIt_of_THE_fIle_eW_$"


def slicer_multipart(fields: dict[str, str], files: dict[str, str]) -> tuple[str, bytes]:
    """The body Slicer's client builds: CRLF lines, fields first (no content type), then each
    file part with the file's full path as its file name and a guessed content type."""
    lines: list[bytes] = []
    for key, value in fields.items():
        lines += [f"--{SLICER_BOUNDARY}".encode(), f'Content-Disposition: form-data; name="{key}"'.encode(),
                  b"", value.encode()]
    for key, path in files.items():
        kind = "application/octet-stream"  # what mimetypes guesses for .nii.gz and .nrrd: nothing
        lines += [f"--{SLICER_BOUNDARY}".encode(),
                  f'Content-Disposition: form-data; name="{key}"; filename="{path}"'.encode(),
                  f"Content-Type: {kind}".encode(), b"", Path(path).read_bytes()]
    lines += [f"--{SLICER_BOUNDARY}--".encode(), b""]
    return f"multipart/form-data; boundary={SLICER_BOUNDARY}", b"\r\n".join(lines)


def raw(url: str, method: str, selector: str, body: bytes | None = None, headers: dict | None = None):
    """One request through http.client, as Slicer sends it: (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    headers = dict(headers or {})
    if body is not None:
        headers["content-length"] = str(len(body))
    conn.request(method, selector, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.headers, data


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """(field name, file name, bytes) of each part."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert msg.is_multipart()
    return [(p.get_param("name", header="content-disposition"), p.get_filename(),
             p.get_payload(decode=True)) for p in msg.iter_parts()]


@pytest.fixture(scope="module")
def root(hippo, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    (root / "imagesTr").mkdir()
    shutil.copy(hippo / "imagesTr" / f"{CASE}.nii.gz", root / "imagesTr")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(hippo / "imagesTr" / "hippocampus_006.nii.gz", outside / "secret.nii.gz")
    os.symlink(outside / "secret.nii.gz", root / "imagesTr" / "linked.nii.gz")  # points outside the root
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("ws"), root, timeout=120) as url:
        yield url


@contextlib.contextmanager
def capped_server(root: Path, workspace: Path, max_voxels: int):
    """``segrefine --max-voxels N serve`` on a free loopback port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workspace.parent / f"capped-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "segrefine.cli", "--max-voxels", str(max_voxels), "serve",
                             "--data-root", str(root), "--workspace", str(workspace), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (workspace.parent / f"capped-{port}.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def test_slicer_request_shapes(server, tmp_path):
    client_id = "user-xyz"
    # fetchInfo, then the auth and training probes
    status, _, body = raw(server, "GET", "/info/")
    assert status == 200 and "config" not in json.loads(body)
    assert raw(server, "GET", "/auth/")[0] != 200
    assert raw(server, "GET", "/train/?check_if_running=true")[0] != 200

    # onNextSampleButton: POST with the JSON params (client id only)
    status, _, body = raw(server, "POST", "/activelearning/gain", json.dumps({"client_id": client_id}).encode(),
                          {"content-type": "application/json"})
    sample = json.loads(body)
    assert status == 200 and sample["id"] == IMAGE_ID and sample["name"] == f"{CASE}.nii.gz"
    status, headers, body = raw(server, "GET", f"/datastore/image?image={quote_plus(IMAGE_ID)}")
    assert status == 200 and f'filename="{CASE}.nii.gz"' in headers["content-disposition"]

    # onClickSegmentation: multipart with only the params field; Slicer asks for .nrrd
    params = {"result_extension": ".nrrd", "result_dtype": "uint8", "client_id": client_id}
    kind, payload = slicer_multipart({"params": json.dumps(params)}, {})
    status, headers, body = raw(server, "POST", f"/infer/segmentation?image={quote_plus(IMAGE_ID)}", payload,
                                {"content-type": kind})
    assert status == 200 and headers["content-type"].startswith("multipart/form-data")
    parts = parse_multipart(headers["content-type"], body)
    assert [(name, filename) for name, filename, _ in parts] == [
        ("params", None), ("image", f"{CASE}_segmentation.nrrd")]
    out_params = json.loads(parts[0][2])
    assert out_params["label_names"] == {"hippocampus": 1}
    result = tmp_path / parts[1][1]
    result.write_bytes(parts[1][2])
    seg = io.load(result).array
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1} and seg.any()

    # onUpdateScribbles: the label map of every segment, label_info with "id", the selected segment
    k = int(out_params["slices"][0]["index"])
    labelmap = seg.copy()
    ys, xs = np.nonzero(seg[:, :, k])
    labelmap[ys[: len(ys) // 2], xs[: len(xs) // 2], k] = 3  # background strokes over half the mask
    labelmap[0, 0, k] = 2
    geometry = io.load(result)
    scribbles_in = tmp_path / "tmpq1w2e3r4.nii.gz"  # NamedTemporaryFile(suffix=".nii.gz")
    io.save(geometry.with_array(labelmap), scribbles_in, dtype=np.uint8)
    params = {"roi": [], "label_info": [{"name": "hippocampus", "id": 1}, {"name": "background", "id": 2},
                                        {"name": "foreground_scribbles", "id": 4},
                                        {"name": "background_scribbles", "id": 3}],
              "selected_label_name": "hippocampus", "result_extension": ".nrrd", "result_dtype": "uint8",
              "client_id": client_id}
    kind, payload = slicer_multipart({"params": json.dumps(params)}, {"label": str(scribbles_in)})
    status, headers, body = raw(server, "POST", f"/infer/scribbles?image={quote_plus(IMAGE_ID)}", payload,
                                {"content-type": kind})
    assert status == 200, body[:300]
    parts = parse_multipart(headers["content-type"], body)
    assert parts[1][1] == f"{CASE}_scribbles.nrrd"
    (tmp_path / parts[1][1]).write_bytes(parts[1][2])
    refined = io.load(tmp_path / parts[1][1]).array
    assert not refined[ys[: len(ys) // 2], xs[: len(xs) // 2], k].any()
    assert json.loads(parts[0][2])["refined_slices"] == [k]

    # onSaveLabel: PUT multipart params (label_info with "idx", model) + label
    params = {"label_info": [{"name": "hippocampus", "idx": 1}], "model": "segmentation", "client_id": client_id}
    label_in = tmp_path / "tmpz9x8c7v6.nii.gz"
    io.save(geometry.with_array(refined), label_in, dtype=np.uint8)
    kind, payload = slicer_multipart({"params": json.dumps(params)}, {"label": str(label_in)})
    for version in (1, 2):
        status, _, body = raw(server, "PUT", f"/datastore/label?image={quote_plus(IMAGE_ID)}", payload,
                              {"content-type": kind})
        assert status == 200 and json.loads(body)["version"] == version

    # next sample with "original label" on: /datastore/?output=all then the label download
    status, _, body = raw(server, "GET", "/datastore/?output=all")
    labels = json.loads(body)["objects"][IMAGE_ID]["labels"]
    assert labels["original"]["info"]["params"]["label_names"] == {"hippocampus": 1}
    assert labels["final"]["versions"] == 2
    assert labels["final"]["info"]["params"]["label_names"] == {"hippocampus": 1}
    status, headers, body = raw(server, "GET", f"/datastore/label?label={quote_plus(IMAGE_ID)}&tag=original")
    assert status == 200 and headers["content-disposition"].endswith('_original_v1.nii.gz"')

    # onUploadImage: PUT /datastore/?image=<volume node name> with the "file" part
    upload = tmp_path / "tmpa1s2d3f4.nii.gz"
    io.save(geometry.with_array(np.asarray(io.load(result).array, np.float32) * 7), upload)
    kind, payload = slicer_multipart({"params": json.dumps({"client_id": client_id})}, {"file": str(upload)})
    status, _, body = raw(server, "PUT", "/datastore/?image=MRHead", payload, {"content-type": kind})
    assert status == 200 and json.loads(body) == {"image": "MRHead"}
    assert json.loads(raw(server, "GET", "/info/")[2])["datastore"]["total"] == 2


def test_ohif_request_shapes(server):
    # OHIF: JSON params (no files), output=image, NRRD uncompressed
    body = json.dumps({"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False,
                       "restore_label_idx": False}).encode()
    status, headers, data = raw(server, "POST", f"/infer/segmentation?image={quote_plus(IMAGE_ID)}&output=image",
                                body, {"content-type": "application/json"})
    assert status == 200 and data.startswith(b"NRRD000")
    status, _, data = raw(server, "POST", f"/infer/segmentation?image={quote_plus(IMAGE_ID)}&output=json",
                          body, {"content-type": "application/json"})
    assert status == 200 and json.loads(data)["label_names"] == {"hippocampus": 1}
    assert raw(server, "GET", "/train/?check_if_running=true")[0] != 200
    status, _, data = raw(server, "POST", "/train/", b"{}", {"content-type": "application/json"})
    assert status == 501 and "not offered" in json.loads(data)["detail"]


def test_confinement_origin_and_errors(server, tmp_path):
    with httpx.Client(base_url=server, timeout=120) as http:
        ids = set(http.get("/datastore/", params={"output": "all"}).json()["objects"])
        assert "imagesTr/linked" not in ids  # a link out of the data root is not an image
        for bad in ("../outside/secret", "imagesTr/../../outside/secret", "imagesTr/linked", "/etc/passwd"):
            r = http.get("/datastore/image", params={"image": bad})
            assert r.status_code == 404 and "no image with id" in r.json()["detail"]
        r = http.put("/datastore/", params={"image": "../x"}, files={"file": ("x.nii.gz", b"x")})
        assert r.status_code == 400 and "may not hold '/'" in r.json()["detail"]
        r = http.put("/datastore/", params={"image": "t"}, files={"file": ("notes.txt", b"hello")})
        assert r.status_code == 415 and "notes.txt" in r.json()["detail"]
        r = http.put("/datastore/", params={"image": "t"}, files={"file": ("e.nii.gz", b"")})
        assert r.status_code == 400 and "empty" in r.json()["detail"]

        # Origin check: a page of another site cannot infer, upload or save
        evil = {"Origin": "http://evil.example"}
        assert http.post("/infer/segmentation", params={"image": IMAGE_ID}, headers=evil).status_code == 403
        assert http.put("/datastore/label", params={"image": IMAGE_ID}, headers=evil).status_code == 403
        assert http.post("/activelearning/gain", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403

        # one-line errors
        checks = [
            (http.post("/infer/nope", params={"image": IMAGE_ID}), 404, "no model 'nope'"),
            (http.post("/infer/segmentation"), 400, "give the image id"),
            (http.post("/infer/segmentation", params={"image": IMAGE_ID, "output": "png"}), 422, "output must be"),
            (http.post("/activelearning/random"), 404, "no strategy 'random'"),
            (http.post("/infer/scribbles", params={"image": IMAGE_ID}), 400, "need the 'label' file part"),
            (http.post("/infer/segmentation", params={"image": IMAGE_ID}, data={"params": "{oops"}), 400,
             "params: not JSON"),
            (http.get("/datastore/label", params={"label": IMAGE_ID, "tag": "final", "version": 99}), 404,
             "tag 'final'"),  # no such version (or no final label yet when run alone)
            (http.get("/datastore/label", params={"label": IMAGE_ID, "tag": "../x"}), 400, "tag '../x'"),
        ]
        small = tmp_path / "small.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(small))
        with open(small, "rb") as fh:
            checks.append((http.put("/datastore/label", params={"image": IMAGE_ID}, files={"label": ("s.nii.gz", fh)}),
                           400, "differs from image"))
        with open(small, "rb") as fh:
            checks.append((http.post("/infer/scribbles", params={"image": IMAGE_ID}, files={"label": ("s.nii.gz", fh)},
                                     data={"params": "{}"}), 400, "differs from image"))
        for r, status, text in checks:
            assert r.status_code == status, (r.status_code, r.text)
            detail = r.json()["detail"]
            assert text in detail and "\n" not in detail, detail


def test_voxel_cap(root, tmp_path):
    with capped_server(root, tmp_path / "ws", max_voxels=20000) as url, httpx.Client(base_url=url, timeout=60) as http:
        for r in (http.get("/datastore/image", params={"image": IMAGE_ID}),
                  http.post("/infer/segmentation", params={"image": IMAGE_ID}),
                  http.post("/activelearning/gain")):
            assert r.status_code == 413 and "more than the cap of 20000" in r.json()["detail"], r.text
        with open(root / "imagesTr" / f"{CASE}.nii.gz", "rb") as fh:
            r = http.put("/datastore/", params={"image": "big"}, files={"file": (f"{CASE}.nii.gz", fh)})
        assert r.status_code == 413 and f"{CASE}.nii.gz" in r.json()["detail"]
