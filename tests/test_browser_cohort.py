"""The cohort panel (issue 16) in the real headless Chromium of test_browser.py.

A real cohort run (``segrefine predict --workers 1``: one Dask worker process) over three
shared hippocampus cases and one corrupt file, then a real server with ``--cohort OUT``:
the page lists the cases in review order with their expected gain, ν and status (the corrupt
one failed), a click on a case opens it as a session holding the cohort's own label and
uncertainty maps, a click on a ranked slice of another case opens that case at that slice,
and an accepted slice shows in the case's status. The open route's errors are checked on
the API: unknown and failed cases, a case whose image is outside the data root.
"""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest
from conftest import run_cli
from server_util import running_server
from test_browser import (  # noqa: F401 (browser and page are fixtures)
    ARTIFACTS,
    BROWSER_SKIPS,
    CHROMIUM,
    NIIVUE,
    browser,
    page,
    wait_idle,
)

from segrefine import io

pytestmark = BROWSER_SKIPS
CASES = ["hippocampus_014", "hippocampus_015", "hippocampus_017"]


@pytest.fixture(scope="module")
def cohort(hippo, tmp_path_factory):
    images = tmp_path_factory.mktemp("cohort-images")
    for case in CASES:
        shutil.copy(hippo / "imagesTr" / f"{case}.nii.gz", images)
    (images / "broken.nii.gz").write_text("not an image", encoding="utf-8")
    out = tmp_path_factory.mktemp("cohort-out")
    proc = run_cli("predict", "-i", images, "-o", out, "--workers", "1")
    assert proc.returncode == 1 and "3 done" in proc.stderr and "1 failed" in proc.stderr, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    order = sorted(CASES, key=lambda c: -manifest["cases"][c]["expected_gain"])
    return images, out, manifest, order


@pytest.fixture(scope="module")
def site(cohort, tmp_path_factory):
    images, out, _, _ = cohort
    with running_server(tmp_path_factory.mktemp("cohort-workspace"), images, cohort=out) as url:
        yield url


def _volume(url: str, sid: str, name: str, dtype) -> np.ndarray:
    r = httpx.get(f"{url}/api/sessions/{sid}/arrays/{name}", timeout=30)
    shape = tuple(int(x) for x in r.headers["X-Shape"].split(","))
    return np.frombuffer(r.content, dtype).reshape(shape, order="F")


def test_open_route_errors(site, cohort, tmp_path):
    _, out, _, order = cohort
    r = httpx.post(f"{site}/api/cohort/cases/nope/session", timeout=30)
    assert r.status_code == 404 and r.json()["detail"] == "case 'nope' is not in the cohort's review queue"
    r = httpx.post(f"{site}/api/cohort/cases/broken/session", timeout=30)
    assert r.status_code == 409 and "failed in the cohort run" in r.json()["detail"] and "broken.nii.gz" in r.text
    r = httpx.post(f"{site}/api/cohort/cases/..%2F..%2Fetc/session", timeout=30)
    assert r.status_code == 404
    # the same cohort served over a data root that does not hold its images
    other, ws = tmp_path / "root", tmp_path / "ws"
    other.mkdir()
    ws.mkdir()
    with running_server(ws, other, cohort=out) as url:
        r = httpx.post(f"{url}/api/cohort/cases/{order[0]}/session", timeout=30)
        detail = r.json()["detail"]
        assert r.status_code == 404 and "not under the data root" in detail and "\n" not in detail
        assert str(out) not in detail  # names the case, not the server's paths


def test_cohort_panel_lists_opens_and_jumps(site, cohort, page):  # noqa: F811
    _, out, manifest, order = cohort
    page.goto(f"{site}/")
    page.wait_for_function("document.querySelectorAll('#cohort-list li').length === 4", timeout=60_000)
    assert page.is_visible("#cohort-box")
    rows = page.eval_on_selector_all("#cohort-list li", "els => els.map(e => [e.dataset.case, e.innerText])")
    assert [c for c, _ in rows] == [*order, "broken"]  # review order, the failed case last
    first = manifest["cases"][order[0]]
    assert f"{first['expected_gain']:.1f}" in rows[0][1] and "to review" in rows[0][1]
    assert "failed" in rows[3][1]
    assert "3 cases · 1 failed" in page.inner_text("#cohort-summary")

    # a click on the first case opens it with the cohort's maps
    page.click(f"#cohort-list li[data-case='{order[0]}'] button.case")
    page.wait_for_function("segrefine.S.ready && segrefine.S.status && "
                           f"segrefine.S.status.name.startsWith({json.dumps(order[0])})", timeout=60_000)
    sid = page.evaluate("segrefine.S.sid")
    label = np.asarray(io.load(out / f"{order[0]}.nii.gz", finite=False).array)
    unc = np.asarray(io.load(out / f"{order[0]}_uncertainty.nii.gz").array, np.float32)
    assert np.array_equal(_volume(site, sid, "mask", np.uint8), (label > 0).astype(np.uint8))
    np.testing.assert_array_equal(_volume(site, sid, "uncertainty", "<f4"), unc)
    assert page.evaluate("segrefine.S.status.axis") == first["axis"]
    assert page.evaluate("segrefine.S.ulev !== null && segrefine.S.umax > 0")  # the heat map is shown
    page.wait_for_function(f"document.querySelector(\"#cohort-list li[data-case='{order[0]}']\")"
                           ".classList.contains('current')")

    # a click on the second ranked slice of the next case opens that case at that slice
    k = manifest["cases"][order[1]]["slices"][1][0]
    page.click(f"#cohort-list li[data-case='{order[1]}'] button.slice[data-slice='{k}']")
    page.wait_for_function(f"segrefine.S.ready && segrefine.S.status.name.startsWith({json.dumps(order[1])})"
                           f" && segrefine.currentIndex() === {k}", timeout=60_000)
    second = page.evaluate("segrefine.S.sid")
    assert second != sid

    # accepting the slice shows in the case's status; the first case reopens its own session
    page.keyboard.press("a")
    wait_idle(page)
    page.wait_for_function(f"document.querySelector(\"#cohort-list li[data-case='{order[1]}'] .status\")"
                           ".textContent.startsWith('1 accepted')", timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "cohort_panel.png"))
    page.click(f"#cohort-list li[data-case='{order[0]}'] button.case")
    page.wait_for_function(f"segrefine.S.ready && segrefine.S.sid === {json.dumps(sid)}", timeout=60_000)
    listed = httpx.get(f"{site}/api/cohort", timeout=30).json()["cases"]
    assert {c["case"]: (c["session"], c["accepted"]) for c in listed} == {
        order[0]: (sid, 0), order[1]: (second, 1), order[2]: (None, None)}


def test_case_maps_of_a_refine_gcn_cohort_and_links_out_of_the_folder(cohort, tmp_path):
    """No browser: a refine-gcn case (labels + _entropy) gives back its probability; a map that is
    a symbolic link out of the cohort folder is refused (403)."""
    from fastapi import HTTPException

    from segrefine.server.cohort import _case_files, _load_maps
    from segrefine.uncertainty import binary_entropy

    _, out, _, order = cohort
    case = order[0]
    prob = np.asarray(io.load(out / f"{case}_prob.nii.gz").array, np.float32)
    gcn = tmp_path / "gcn"
    gcn.mkdir()
    shutil.copy(out / f"{case}.nii.gz", gcn)
    volume = io.load(out / f"{case}_prob.nii.gz")
    io.save(volume.with_array(binary_entropy(prob).astype(np.float32)), gcn / f"{case}_entropy.nii.gz")
    files = _case_files(gcn.resolve(), case)
    assert sorted(files) == ["entropy", "label"]
    p, unc, label = _load_maps(files, case, 10**7)
    np.testing.assert_array_equal(unc, io.load(gcn / f"{case}_entropy.nii.gz").array)  # U = the entropy
    label_ok = np.array_equal(label, io.load(out / f"{case}.nii.gz", finite=False).array > 0)
    consistent = (prob > 0.5) == label  # where MG-Net's label is its thresholded probability
    assert label_ok and consistent.mean() > 0.999
    np.testing.assert_allclose(p[consistent], prob[consistent], atol=1e-4)

    linked = tmp_path / "linked"
    linked.mkdir()
    shutil.copy(out / f"{case}.nii.gz", linked)
    (linked / f"{case}_prob.nii.gz").symlink_to(out / f"{case}_prob.nii.gz")  # outside `linked`
    shutil.copy(out / f"{case}_uncertainty.nii.gz", linked)
    with pytest.raises(HTTPException) as err:
        _case_files(linked.resolve(), case)
    assert err.value.status_code == 403 and "resolves outside the cohort folder" in err.value.detail
