"""DICOM in the viewer (issue 15), in the real headless Chromium of test_browser.py: a DICOM
series under the data root (written by the test from a hippocampus case) is opened from the
page's series picker, MG-Net runs from the page, and "Download DICOM SEG" gives a SEG that
highdicom reads back onto the series' geometry equal to the session's mask; a session on a
NIfTI file has the button disabled with the reason shown."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
from server_util import running_server
from test_browser import (  # noqa: F401 (browser and page are fixtures)
    ARTIFACTS,
    BROWSER_SKIPS,
    CHROMIUM,
    NIIVUE,
    browser,
    page,
)

from segrefine import io
from segrefine.dicomseg import read_seg, series_files, write_series

highdicom = pytest.importorskip("highdicom")
pytestmark = BROWSER_SKIPS
CASE = "hippocampus_004"


@pytest.fixture(scope="module")
def site(hippo, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-root")
    write_series(io.load(hippo / "imagesTr" / f"{CASE}.nii.gz"), root / "series" / "h4")
    shutil.copy(hippo / "imagesTr" / f"{CASE}.nii.gz", root)
    with running_server(tmp_path_factory.mktemp("dicom-ws"), root, timeout=120) as url:
        yield url, root


def _mask(url: str, sid: str) -> np.ndarray:
    r = httpx.get(f"{url}/api/sessions/{sid}/arrays/mask", timeout=30)
    return np.frombuffer(r.content, np.uint8).reshape(tuple(map(int, r.headers["X-Shape"].split(","))), order="F")


def test_series_session_downloads_a_dicom_seg(site, page, tmp_path):  # noqa: F811
    url, root = site
    page.goto(f"{url}/")
    page.wait_for_function("document.querySelector('#series-select option')", timeout=60_000)
    assert page.is_visible("#series-row")
    assert page.eval_on_selector_all("#series-select option", "os => os.map(o => o.value)") == ["series/h4"]
    page.click("#create-from-series")
    page.wait_for_function("segrefine.S.ready && segrefine.S.status.name === 'h4'", timeout=60_000)
    page.click("#predict")  # Run MG-Net from the page
    page.wait_for_function("segrefine.S.ready && segrefine.S.status.has_maps && segrefine.S.pending === 0",
                           timeout=120_000)
    page.wait_for_function("!document.querySelector('#download-seg').classList.contains('disabled')")
    sid = page.evaluate("segrefine.S.sid")
    with page.expect_download() as info:
        page.click("#download-seg")
    download = info.value
    assert download.suggested_filename == "h4_seg.dcm"
    seg_path = tmp_path / "seg.dcm"
    download.save_as(seg_path)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dicom_seg_button.png"))

    mask = _mask(url, sid)
    back, names = read_seg(seg_path, root / "series" / "h4")  # frames mapped onto the series' grid
    assert mask.sum() > 100 and np.array_equal(back > 0, mask > 0)  # Dice 1.0
    assert names == {"hippocampus": 1}
    seg = highdicom.seg.segread(seg_path)
    import pydicom

    source = pydicom.dcmread(series_files(root / "series" / "h4")[0], stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID


def test_nifti_session_has_the_button_disabled_with_the_reason(site, page):  # noqa: F811
    url, _ = site
    page.goto(f"{url}/")
    page.wait_for_function(f"[...document.querySelectorAll('#file-select option')].some(o => o.value === "
                           f"'{CASE}.nii.gz')", timeout=60_000)
    page.select_option("#file-select", f"{CASE}.nii.gz")
    page.click("#create-from-file")
    page.wait_for_function(f"segrefine.S.ready && segrefine.S.status.name === '{CASE}'", timeout=60_000)
    page.wait_for_function("document.querySelector('#seg-note').textContent.includes('not a DICOM series')")
    link = page.locator("#download-seg")
    assert link.get_attribute("aria-disabled") == "true" and link.get_attribute("href") is None
    assert "open the series itself" in link.get_attribute("title")


def test_series_routes_refuse_bad_input(site):
    url, _ = site
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/api/series/sessions", json={"path": f"{CASE}.nii.gz"})
        assert r.status_code == 400 and "not a DICOM series folder" in r.json()["detail"]
        r = http.post("/api/series/sessions", json={"path": "../../etc"})
        assert r.status_code == 403 and "outside the data root" in r.json()["detail"]
        assert http.get("/api/sessions/not-a-session/series").status_code == 404
        assert [s["path"] for s in http.get("/api/series").json()] == ["series/h4"]
