"""Several structures in the real headless Chromium of test_browser.py: a session on the
real hippocampus case 004 started with its label map (1 anterior, 2 posterior) and the
shipped MG-Net's maps; the user picks the posterior structure, draws a foreground stroke from
inside the anterior part across to the posterior one, and the anterior voxels stay as they
were (lock rule) while the stroke's own background pixels become posterior; the drawing shows
each structure in its colour and the per-structure suggestions list that structure's slices."""

from __future__ import annotations

import httpx
import nibabel as nib
import numpy as np
import pytest
from server_util import running_server
from test_browser import (  # noqa: F401 (browser and page are fixtures)
    ARTIFACTS,
    BROWSER_SKIPS,
    CHROMIUM,
    JS_DRAWN,
    NIIVUE,
    browser,
    drag,
    open_session,
    page,
    server_slice,
    strokes_done,
    to_page,
    wait_idle,
    world,
)
from test_structures import _crossing_slice

from segrefine.datasets import dataset_labels
from segrefine.server.store import new_id
from segrefine.session import Session

pytestmark = BROWSER_SKIPS
IMAGE = "hippocampus/imagesTr/hippocampus_004.nii.gz"
LABELS = "hippocampus/labelsTr/hippocampus_004.nii.gz"


@pytest.fixture(scope="module")
def site(shared, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("structures-workspace")
    labels = np.asarray(nib.load(shared / LABELS).dataobj).astype(np.uint8)
    sid = new_id()
    s = Session.create(workspace / sid, shared / IMAGE, labels=labels, names=dataset_labels(shared / "hippocampus"))
    s.predict()  # the shipped MG-Net's maps; the two structures' label map is kept
    s.close()
    with running_server(workspace, shared) as url:
        yield url, sid, labels


def test_pick_a_structure_draw_and_the_other_is_untouched(page, site, shared):  # noqa: F811
    url, sid, labels = site
    affine = nib.load(shared / IMAGE).affine
    open_session(page, url, sid)
    names = page.locator("#structure-list li").all_inner_texts()
    assert [n.strip() for n in names] == ["1 · anterior", "2 · posterior"]
    page.check("#structure-list input[value='2']")  # pick posterior, as a person does
    assert page.evaluate("segrefine.S.active") == 2

    k, pts = _crossing_slice(labels)
    page.evaluate(f"segrefine.goToSlice({k})")
    page.keyboard.press("[")  # brush radius 0: exactly the pixels under the pointer
    # the stroke runs from deep inside anterior to posterior's centre (reversed line)
    drag(page, [to_page(page, affine, (r, c, k)) for r, c in reversed(pts)])
    strokes_done(page, 1)

    mask, scr = server_slice(url, sid, k)
    full = np.asarray(httpx.get(f"{url}/api/sessions/{sid}/arrays/mask").content)
    shape = labels.shape
    full = np.frombuffer(full.tobytes(), np.uint8).reshape(shape, order="F")
    assert np.array_equal(full == 1, labels == 1), "the locked anterior structure changed"
    assert set(np.unique(scr)) == {0, 3}  # posterior's foreground stroke code (2 id - 1)
    stroke = np.argwhere(scr == 3)
    assert all(mask[r, c] == 1 for r, c in stroke if labels[r, c, k] == 1)  # anterior kept under it
    assert any(labels[r, c, k] == 1 for r, c in stroke)  # the stroke did cross anterior
    assert all(mask[r, c] == 2 for r, c in stroke if labels[r, c, k] == 0)  # its own pixels taken

    # the drawing: posterior's stroke in the foreground colour, anterior drawn as anterior
    drawn = page.evaluate(JS_DRAWN, [[world(affine, (int(r), int(c), k)) for r, c in stroke]])
    assert set(drawn) == {1}
    lay = page.evaluate("(() => { const L = segrefine.S.lay; return [L.outline(0), L.in0(0), L.in0(1)]; })()")
    inside_a = [tuple(p) for p in np.argwhere(mask == 1) if scr[tuple(p)] == 0]
    vals = page.evaluate(JS_DRAWN, [[world(affine, (int(r), int(c), k)) for r, c in inside_a]])
    assert all(v == lay[0] or lay[1] <= v < lay[2] for v in vals), "anterior drawn in another colour"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_structures.png"))

    # per-structure suggestions: the posterior queue lists posterior's slices
    page.select_option("#queue-scope", "2")
    wait_idle(page)
    page.wait_for_function("segrefine.S.sugg && segrefine.S.sugg.structure === 2")
    top = int(page.locator("#queue-list li").first.get_attribute("data-index"))
    assert (labels[:, :, top] == 2).any()
    page.keyboard.press("n")
    wait_idle(page)
    assert page.evaluate("segrefine.currentIndex()") == top
