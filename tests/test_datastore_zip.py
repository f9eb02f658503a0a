"""A DICOM series uploaded to the MONAI Label datastore as one .zip (issue 15): a series the
test writes from a hippocampus case, zipped in a folder, goes in with ``PUT /datastore/`` and
reads back on its grid through the rest of the server (the image route, MG-Net inference with
a DICOM SEG answer); hostile archives (a member escaping the folder, an absolute name, a
link, a zip bomb, too many files, not a zip, a series past the voxel cap) are refused whole
with a one-line error and leave nothing behind."""

from __future__ import annotations

import gzip
import io as _io
import stat
import zipfile

import httpx
import nibabel as nib
import numpy as np
import pytest
from server_util import running_server

from segrefine import io, uploads
from segrefine.dicomseg import write_series
from segrefine.errors import InputError

pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def series_zip(hippo, tmp_path_factory):
    """hippocampus_004 as a DICOM series, zipped under a folder ``hippo4/`` (as a file manager
    zips a folder); returns (zip bytes, the volume read from the series folder)."""
    folder = tmp_path_factory.mktemp("series") / "hippo4"
    files = write_series(io.load(hippo / "imagesTr" / "hippocampus_004.nii.gz"), folder)
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("hippo4/", "")
        for f in files:
            zf.write(f, f"hippo4/{f.name}")
        zf.writestr("__MACOSX/hippo4/._x.dcm", b"resource fork")  # skipped, not a slice
    return buf.getvalue(), io.load(folder)


def _zip(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_series_zip_upload_is_an_image_of_the_datastore(series_zip, tmp_path):
    data, volume = series_zip
    (tmp_path / "ws").mkdir()
    with running_server(tmp_path / "ws", None, timeout=120) as url, httpx.Client(base_url=url, timeout=120) as http:
        r = http.put("/datastore/", params={"image": "hippo4"}, files={"file": ("hippo4.zip", data)})
        assert r.status_code == 200 and r.json() == {"image": "hippo4"}, r.text
        listing = http.get("/datastore/", params={"output": "all"}).json()
        assert listing["objects"]["hippo4"]["image"]["ext"] == ".nii.gz"  # a series, sent as NIfTI
        r = http.get("/datastore/image", params={"image": "hippo4"})
        assert r.status_code == 200, r.text
        back = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
        assert back.shape == volume.shape and np.allclose(back.affine, volume.affine, atol=1e-4)
        np.testing.assert_allclose(np.asarray(back.dataobj, np.float32), volume.array, atol=1e-3)
        # MG-Net on the uploaded series, answered as a DICOM SEG referencing it
        r = http.post("/infer/segmentation", params={"image": "hippo4", "output": "dicom_seg"})
        assert r.status_code == 200 and r.content[128:132] == b"DICM", r.text[:200]

        # hostile archives: refused whole, one line naming the archive and the member
        before = http.get("/datastore/").json()["total"]
        for name, body, text in (
                ("evil.zip", _zip({"hippo4/0001.dcm": b"x", "../../evil.dcm": b"x"}),
                 "member '../../evil.dcm' names '..'"),
                ("abs.zip", _zip({"/abs.dcm": b"x"}), "has an absolute name"),
                ("link.zip", _zip({"a.dcm": b"x"}, link="b.dcm"), "member 'b.dcm' is a symbolic link"),
                ("text.zip", b"not a zip at all", "not a readable .zip archive"),
                ("junk.zip", _zip({"a.dcm": b"not dicom"}), "folder holds no DICOM series")):
            r = http.put("/datastore/", params={"image": name[:-4]}, files={"file": (name, body)})
            detail = r.json()["detail"]
            assert r.status_code == 400 and text in detail and detail.startswith(name), (name, r.text)
            assert "\n" not in detail and str(tmp_path) not in detail
        assert http.get("/datastore/").json()["total"] == before
    assert not list(tmp_path.rglob("evil.dcm")) and not list(tmp_path.rglob("abs.dcm"))
    assert not [p for p in (tmp_path / "ws" / ".tmp").iterdir()]  # scratch folders removed


def test_zip_caps(series_zip, tmp_path):
    data, volume = series_zip
    bomb = _zip({"zeros.dcm": bytes(8 * 2**20)})  # 8 MB of zeros deflate to ~8 kB
    assert len(bomb) < 100_000
    with pytest.raises(InputError, match=r"^bomb.zip: more than 1048576 bytes once unpacked"):
        uploads.receive_dicom_zip(_io.BytesIO(bomb), "bomb.zip", _scratch(tmp_path, "a"), max_voxels=10**6,
                                  max_bytes=2**20)
    with pytest.raises(InputError, match=r"^many.zip: the archive holds 4 files, more than the cap of 3"):
        uploads.receive_dicom_zip(_io.BytesIO(_zip({f"{i}.dcm": b"x" for i in range(4)})), "many.zip",
                                  _scratch(tmp_path, "b"), max_voxels=10**6, max_files=3)
    with pytest.raises(InputError, match="two members are named '1.dcm'"):
        uploads.receive_dicom_zip(_io.BytesIO(_zip({"a/1.dcm": b"x", "b/1.dcm": b"y"})), "dup.zip",
                                  _scratch(tmp_path, "c"), max_voxels=10**6)
    with pytest.raises(io.ImageTooLarge, match=r"^hippo4.zip: image of shape .* more than the cap of 1000"):
        uploads.receive_dicom_zip(_io.BytesIO(data), "hippo4.zip", _scratch(tmp_path, "d"), max_voxels=1000)
    folder, got = uploads.receive_dicom_zip(_io.BytesIO(data), "hippo4.zip", _scratch(tmp_path, "e"),
                                            max_voxels=10**6)
    assert folder.name == "hippo4" and np.array_equal(got.array, volume.array)
    assert not (folder / "._x.dcm").exists() and not (folder.parent / "upload.zip").exists()


def _scratch(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    return path
