"""The viewer and the models (issue 13 §2-3), in the real headless Chromium of test_browser.py.

A real server runs the shipped phantom MG-Net (``segrefine serve --model phantom``, what
``make demo`` starts without the shared data) over generated phantoms only, so these tests
need no shared data: Run MG-Net gives suggestions and a stroke refines the slice; an image
unlike the model's training data shows the model-card warning; another model's maps are
loaded from the page's own form.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from server_util import running_server, synthetic_maps
from test_browser import (  # noqa: F401 (browser and page are fixtures)
    ARTIFACTS,
    BROWSER_SKIPS,
    CHROMIUM,
    NIIVUE,
    browser,
    drag,
    page,
    strokes_done,
    to_page,
    wait_idle,
)

from segrefine import io
from segrefine.phantom import make_phantom

pytestmark = BROWSER_SKIPS
COARSE = np.diag([1.0, 1.0, 3.0, 1.0])  # the same phantom with 3 mm slices: unlike the training data


@pytest.fixture(scope="module")
def phantom_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom-root")
    image, label = make_phantom()
    io.save(io.Volume(image), root / "phantom.nii.gz")
    io.save(io.Volume(image, affine=COARSE), root / "phantom_3mm.nii.gz")
    maps = tmp_path_factory.mktemp("maps")
    prob, unc = synthetic_maps(image.shape, seed=5)
    io.save(io.Volume(prob), maps / "other_prob.nii.gz")
    io.save(io.Volume(unc), maps / "other_uncertainty.nii.gz")
    workspace = tmp_path_factory.mktemp("phantom-workspace")
    with running_server(workspace, root, model="phantom") as url:
        yield url, label, maps, (prob, unc)


def new_session(page, url: str, path: str) -> str:
    page.goto(f"{url}/")
    page.wait_for_function("document.querySelector('#file-select option')")
    page.select_option("#file-select", path)
    page.click("#create-from-file")
    page.wait_for_function("segrefine.S.ready && segrefine.S.sid", timeout=60_000)
    return page.evaluate("segrefine.S.sid")


def mask_of(url: str, sid: str, shape) -> np.ndarray:
    r = httpx.get(f"{url}/api/sessions/{sid}/arrays/mask")
    return np.frombuffer(r.content, np.uint8).reshape(shape, order="F")


def test_run_mgnet_on_the_phantom_then_suggestions_and_refinement(page, phantom_site):
    url, label, _, _ = phantom_site
    sid = new_session(page, url, "phantom.nii.gz")
    page.click("#predict")
    page.wait_for_function("segrefine.S.ready && segrefine.S.status.has_maps", timeout=120_000)
    wait_idle(page)
    assert page.locator("#model-warning").is_hidden()
    assert page.locator("#queue-list li").count() > 0
    first = httpx.get(f"{url}/api/sessions/{sid}/suggestions").json()["slices"][0]["index"]
    page.keyboard.press("n")
    wait_idle(page)
    q = httpx.get(f"{url}/api/sessions/{sid}/suggestions").json()["queue"]
    if q["stopped_early"]:
        # the phantom model is sure of itself: the whole volume is expected to hold less Dice
        # than the stop's, so the queue stops at once and says so; the list still opens a slice
        assert q["remaining_dice"] < q["stop_dice"] and q["shown"] == []
        assert page.locator("#early-stop").inner_text().startswith("stopped:")
        page.click(f"#queue-list li[data-index='{first}']")
        wait_idle(page)
    k = page.evaluate("segrefine.currentIndex()")
    assert k == first
    before = mask_of(url, sid, label.shape)[:, :, k]
    # a background stroke along the structure's middle row, placed through NiiVue's conversions
    rows = np.flatnonzero(label[:, :, k].any(1))
    i = int(rows[len(rows) // 2])
    cols = np.flatnonzero(label[i, :, k])
    page.keyboard.press("b")
    drag(page, [to_page(page, np.eye(4), (i, int(j), k)) for j in cols[::2]])
    strokes_done(page, 1)
    after = mask_of(url, sid, label.shape)[:, :, k]
    assert after.sum() < before.sum() and not after[i, cols[1:-1]].any()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_phantom_model_refined.png"))


def test_an_unlike_image_shows_the_model_card_warning(page, phantom_site):
    url, _, _, _ = phantom_site
    new_session(page, url, "phantom_3mm.nii.gz")
    assert page.locator("#model-warning").is_hidden()
    page.click("#predict")
    page.wait_for_function("segrefine.S.ready && segrefine.S.status.has_maps", timeout=120_000)
    wait_idle(page)
    text = page.locator("#model-warning").inner_text()
    assert page.locator("#model-warning").is_visible()
    assert "unlike the training data of mgnet_phantom.pt" in text and "spacing 1.00 x 1.00 x 3.00 mm" in text
    assert "see the warning" in page.locator("#message").inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser_model_card_warning.png"))


def test_another_models_maps_are_loaded_from_the_page(page, phantom_site):
    url, label, maps, (prob, unc) = phantom_site
    sid = new_session(page, url, "phantom.nii.gz")
    assert not json.loads(httpx.get(f"{url}/api/sessions/{sid}").text)["has_maps"]
    page.click("#maps-box summary")
    page.click("#load-maps")  # nothing chosen yet: says what is missing, sends nothing
    assert "choose a probability file" in page.locator("#message").inner_text()
    page.set_input_files("#maps-prob", str(maps / "other_prob.nii.gz"))
    page.set_input_files("#maps-unc", str(maps / "other_uncertainty.nii.gz"))
    page.click("#load-maps")
    page.wait_for_function("segrefine.S.ready && segrefine.S.status.has_maps", timeout=60_000)
    wait_idle(page)
    assert "maps loaded from other_prob.nii.gz and other_uncertainty.nii.gz" in \
        page.locator("#message").inner_text()
    assert page.locator("#predict-box").is_hidden() and page.locator("#queue-list li").count() > 0
    r = httpx.get(f"{url}/api/sessions/{sid}/arrays/uncertainty")
    served = np.frombuffer(r.content, "<f4").reshape(label.shape, order="F")
    np.testing.assert_array_equal(served, unc)
    np.testing.assert_array_equal(mask_of(url, sid, label.shape), (prob > 0.5).astype(np.uint8))
    assert page.evaluate("segrefine.S.umax") == pytest.approx(float(unc.max()), rel=1e-6)
    page.screenshot(path=str(ARTIFACTS / "browser_other_models_maps.png"))
