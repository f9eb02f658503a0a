"""The viewer when things go wrong (issue 13), in Chromium against the real server: a stroke
while the server is down says so and removes its ink; the busy indicator shows while a stroke
is refined; a session can be deleted from the page."""

from __future__ import annotations

import httpx
import nibabel as nib
import pytest
from server_util import make_session, running_server
from test_browser import (  # noqa: F401  (fixtures and helpers of the viewer tests)
    browser,
    first_suggestion,
    open_session,
    page,
    pytestmark,
    strokes_done,
    to_page,
    wait_idle,
)

HIPPO = "hippocampus/imagesTr/hippocampus_004.nii.gz"

JS_INK_ALPHA = """() => {
  const ink = document.getElementById("ink");
  const data = ink.getContext("2d").getImageData(0, 0, ink.width, ink.height).data;
  let sum = 0;
  for (let i = 3; i < data.length; i += 4) sum += data[i];
  return sum;
}"""

JS_WATCH_BUSY = """() => {
  window.busySeen = false;
  const el = document.getElementById("busy");
  new MutationObserver(() => { if (!el.hidden) window.busySeen = true; })
    .observe(el, { attributes: true });
}"""


@pytest.fixture()
def server(shared, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    sids = [make_session(workspace, shared / HIPPO) for _ in range(2)]
    with running_server(workspace, shared) as url:
        yield url, sids, workspace


def _centre_voxel(url, sid, k):
    shape = httpx.get(f"{url}/api/sessions/{sid}").json()["shape"]
    return (shape[0] // 2, shape[1] // 2, k)


def test_busy_indicator_then_a_stroke_with_the_server_down(page, server, shared):  # noqa: F811
    url, sids, _ = server
    affine = nib.load(shared / HIPPO).affine
    open_session(page, url, sids[0])
    k = first_suggestion(page, url, sids[0])
    assert page.is_hidden("#busy")
    page.evaluate(JS_WATCH_BUSY)
    page.keyboard.press("f")
    x, y = to_page(page, affine, _centre_voxel(url, sids[0], k))
    page.mouse.click(x, y)
    strokes_done(page, 1)
    assert page.evaluate("window.busySeen") is True  # shown while the stroke was refined
    assert page.is_hidden("#busy") and page.evaluate(JS_INK_ALPHA) == 0

    url.proc.kill()  # the server goes away
    url.proc.wait(timeout=10)
    page.mouse.move(x + 6, y)
    page.mouse.down()
    page.mouse.move(x + 20, y + 8, steps=4)
    assert page.evaluate(JS_INK_ALPHA) > 0  # the stroke is inked while drawn
    page.mouse.up()
    wait_idle(page)
    message = page.text_content("#message")
    assert message.startswith("stroke not saved: the server is unreachable"), message
    assert "Failed to fetch" not in message and "is `segrefine serve` still running?" in message
    assert "error" in page.get_attribute("#message", "class")
    assert page.evaluate(JS_INK_ALPHA) == 0  # no ink left that looks saved
    assert page.is_hidden("#busy")


def test_delete_a_session_from_the_page(page, server):  # noqa: F811
    url, sids, workspace = server
    page.goto(f"{url}/")
    page.wait_for_function("window.segrefine !== undefined && document.querySelector('#session-select option')")
    page.on("dialog", lambda d: d.accept())
    page.select_option("#session-select", sids[1])
    page.click("#delete-session")
    page.wait_for_function(f"![...document.querySelectorAll('#session-select option')]"
                           f".some((o) => o.value === '{sids[1]}')", timeout=30_000)
    assert [s["id"] for s in httpx.get(f"{url}/api/sessions").json()] == [sids[0]]
    assert not (workspace / sids[1]).exists()
    assert page.text_content("#message").startswith("deleted session")
