"""The viewer in a real headless Chromium (Playwright driving Debian's ``chromium``).

A real server (``segrefine.server.serve`` in a subprocess) runs on a free loopback
port over a workspace prepared with sessions that carry synthetic maps. The tests
open a case, go to the first suggested slice, scribble with the mouse, wait for the
refined overlay, undo, accept and download the mask (checked with nibabel), and
check that a scribble lands on the voxel drawn on, through NiiVue's own
world->canvas conversion and nibabel's affine (independent of the viewer's
geometry code), on LPS fetal stacks (one whose qform NiiVue alone would misread)
and on the RAS hippocampus. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import base64
import io as _io
import json
import statistics
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from server_util import make_session, running_server

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
NIIVUE = REPO / "web" / "node_modules" / "@niivue" / "niivue" / "dist" / "index.js"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking",
                 "--disable-component-update"]
CASES = {
    "fetal_a26_12": "fetal_stacks/images/a26_12.nii.gz",  # LPS, oblique, qform quaternion a = NaN in float32
    "fetal_b15_05": "fetal_stacks/images/b15_05.nii.gz",  # LPS-ish, oblique
    "hippocampus_004": "hippocampus/imagesTr/hippocampus_004.nii.gz",  # RAS
}

BROWSER_SKIPS = [  # every browser test module's pytestmark
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="/usr/bin/chromium is absent: `apt-get install -y chromium` to run browser tests"),
    pytest.mark.skipif(not NIIVUE.exists(),
                       reason="web/node_modules is absent: run `npm ci` in web/ to run browser tests"),
]
pytestmark = BROWSER_SKIPS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")


@pytest.fixture(scope="module")
def site(shared, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("browser-workspace")
    sids = {name: make_session(workspace, shared / rel) for name, rel in CASES.items()}
    sids["cycle"] = make_session(workspace, shared / CASES["fetal_a26_12"])  # untouched by other tests
    with running_server(workspace, shared) as url:
        yield url, sids


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()
    assert pg.errors == [], pg.errors


def open_session(page, url: str, sid: str) -> None:
    """Open a persisted session with the header's picker, like a person would."""
    page.goto(f"{url}/")
    page.wait_for_function("window.segrefine !== undefined && document.querySelector('#session-select option')")
    page.select_option("#session-select", sid)
    page.click("#open-session")
    page.wait_for_function(f"segrefine.S.ready && segrefine.S.sid === {json.dumps(sid)}", timeout=60_000)


def wait_idle(page) -> None:
    page.wait_for_function("segrefine.S.pending === 0", timeout=60_000)


def strokes_done(page, n: int) -> None:
    page.wait_for_function(f"segrefine.S.timings.length >= {n} && segrefine.S.pending === 0", timeout=60_000)


def first_suggestion(page, url: str, sid: str) -> int:
    """Press n and check the viewer went to the first ranked slice."""
    first = httpx.get(f"{url}/api/sessions/{sid}/suggestions").json()["slices"][0]["index"]
    page.keyboard.press("n")
    wait_idle(page)
    assert page.evaluate("segrefine.currentIndex()") == first
    return first


def world(affine: np.ndarray, ijk) -> list[float]:
    return (affine @ np.array([*ijk, 1.0]))[:3].tolist()


JS_TO_PAGE = """([mm]) => {
  // NiiVue's own conversions: world mm -> RAS fraction -> canvas pixel
  const nv = segrefine.nv;
  const pos = nv.frac2canvasPos(nv.mm2frac(mm, 0, true));
  if (!pos) return null;
  const rect = nv.canvas.getBoundingClientRect();
  return [rect.left + pos[0] / nv.uiData.dpr, rect.top + pos[1] / nv.uiData.dpr];
}"""

JS_DRAWN = """([mms]) => {
  // the drawing bitmap's value at world points, located by NiiVue's mm -> voxel conversion
  const nv = segrefine.nv;
  const d = nv.back.dims;
  return mms.map((mm) => {
    const v = nv.frac2vox(nv.mm2frac(mm, 0, true));
    return nv.drawBitmap[v[0] + v[1] * d[1] + v[2] * d[1] * d[2]];
  });
}"""


def to_page(page, affine, ijk) -> tuple[float, float]:
    pos = page.evaluate(JS_TO_PAGE, [world(affine, ijk)])
    assert pos is not None, f"voxel {ijk} is not on the displayed slice"
    return pos


def drawn_slice(page, affine, k: int, shape) -> np.ndarray:
    """What the viewer draws over slice k (axis 2), located with NiiVue's conversions."""
    mms = [world(affine, (i, j, k)) for i in range(shape[0]) for j in range(shape[1])]
    return np.array(page.evaluate(JS_DRAWN, [mms]), np.uint8).reshape(shape[:2])


def server_slice(url: str, sid: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    sl = httpx.get(f"{url}/api/sessions/{sid}/slices/2/{k}").json()
    dec = [np.frombuffer(base64.b64decode(sl[key]), np.uint8).reshape(sl["shape"]) for key in ("mask", "scribbles")]
    return dec[0], dec[1]


# drawing values of the viewer (web/viewer/app.js, V): 1 fg, 2 bg, 3 mask outline,
# 128..251 mask inside (with an uncertainty level), 0 and 4..127 outside the mask
def assert_overlay_matches(page, url, sid, affine, k, shape) -> None:
    mask, scr = server_slice(url, sid, k)
    drawn = drawn_slice(page, affine, k, shape)
    assert np.array_equal(drawn == 1, scr == 1), "foreground scribbles drawn elsewhere"
    assert np.array_equal(drawn == 2, scr == 2), "background scribbles drawn elsewhere"
    inside = (drawn == 3) | (drawn >= 128)
    assert np.array_equal(inside, (mask > 0) & (scr == 0)), "mask overlay misplaced"


def pixel_rgb(page, x: float, y: float) -> tuple[int, int, int]:
    from PIL import Image

    png = page.screenshot(clip={"x": x - 0.5, "y": y - 0.5, "width": 1, "height": 1})
    return Image.open(_io.BytesIO(png)).convert("RGB").getpixel((0, 0))


def click_voxel(page, affine, ijk, tool_key: str, n_done: int) -> tuple[float, float]:
    page.keyboard.press(tool_key)
    x, y = to_page(page, affine, ijk)
    page.mouse.click(x, y)
    strokes_done(page, n_done + 1)
    return x, y


def drag(page, points) -> None:
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*p, steps=3)
    page.mouse.up()


@pytest.mark.parametrize("case", list(CASES))
def test_scribble_lands_on_the_voxel_drawn_on(case, page, site, shared):
    url, sids = site
    sid = sids[case]
    affine = nib.load(shared / CASES[case]).affine
    open_session(page, url, sid)
    k = first_suggestion(page, url, sid)
    shape = tuple(httpx.get(f"{url}/api/sessions/{sid}").json()["shape"])
    page.keyboard.press("[")  # brush radius 1 -> 0: exactly the pixel under the pointer
    assert page.evaluate("segrefine.S.radius") == 0
    h, w = shape[:2]
    # asymmetric targets: a flipped or swapped axis would put them elsewhere
    fg = (round(h * 0.62), round(w * 0.3), k)
    bg = (round(h * 0.15), round(w * 0.8), k)
    fg_xy = click_voxel(page, affine, fg, "f", 0)
    bg_xy = click_voxel(page, affine, bg, "b", 1)

    _, scr = server_slice(url, sid, k)
    assert scr[fg[:2]] == 1 and scr[bg[:2]] == 2 and np.count_nonzero(scr) == 2, np.argwhere(scr)
    assert page.evaluate(JS_DRAWN, [[world(affine, fg), world(affine, bg)]]) == [1, 2]
    assert_overlay_matches(page, url, sid, affine, k, shape)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser_landing_{case}.png"))
    r, g, b = pixel_rgb(page, *fg_xy)  # the scribble's colour is on screen where the mouse was
    assert g > r + 60 and g > b + 60, (r, g, b)
    r, g, b = pixel_rgb(page, *bg_xy)
    assert b > r + 60, (r, g, b)


def test_full_cycle_on_the_fetal_stack(page, site, shared, tmp_path, capsys):
    url, sids = site
    case = "fetal_a26_12"
    sid = sids["cycle"]
    ref = nib.load(shared / CASES[case])
    affine, shape = ref.affine, ref.shape
    open_session(page, url, sid)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_1_opened.png"))

    k = first_suggestion(page, url, sid)
    assert page.locator("#queue-list li.current").first.get_attribute("data-index") == str(k)
    page.screenshot(path=str(ARTIFACTS / "browser_2_first_suggestion.png"))

    # strokes in the file's pixel grid, placed on screen through NiiVue's conversions
    ci, cj = shape[0] // 2, shape[1] // 2

    def stroke(key: str, ijs) -> None:
        page.keyboard.press(key)
        drag(page, [to_page(page, affine, (i, j, k)) for i, j in ijs])

    n = 0
    stroke("f", [(ci - 8 + t, cj - 4 + t) for t in range(0, 12, 3)])  # warm-up: JIT of the level set
    n += 1
    strokes_done(page, n)
    for rep in range(3):  # measured: foreground just outside the predicted blob, background far out
        stroke("f", [(ci - 58 + 2 * rep, cj - 6 + t) for t in range(0, 12, 3)])
        n += 1
        strokes_done(page, n)
        stroke("b", [(ci + 60 - 3 * rep + t, cj - 70 + t) for t in range(0, 15, 3)])
        n += 1
        strokes_done(page, n)
    page.screenshot(path=str(ARTIFACTS / "browser_3_refined.png"))
    mask, scr = server_slice(url, sid, k)
    assert (scr == 1).sum() > 10 and (scr == 2).sum() > 10
    assert mask[scr == 1].all() and not mask[scr == 2].any()  # scribbles are hard constraints
    assert mask[ci - 58:ci - 52, cj - 6:cj + 6].any()  # the mask grew to the new foreground
    assert_overlay_matches(page, url, sid, affine, k, shape)

    # latency: pen-up -> refined overlay drawn (measured in the page)
    timings = page.evaluate("segrefine.S.timings")[1:]
    median_ms = statistics.median(t["ms"] for t in timings)
    server_ms = statistics.median(t["serverMs"] for t in timings)
    (ARTIFACTS / "browser_latency.json").write_text(json.dumps(
        {"case": case, "slice_shape": list(shape[:2]), "strokes": len(timings), "median_ms": median_ms,
         "median_server_ms": server_ms, "all_ms": [round(t["ms"], 1) for t in timings]}, indent=1))
    with capsys.disabled():
        print(f"\nscribble release -> refined overlay drawn, {shape[0]}x{shape[1]} fetal slice: "
              f"median {median_ms:.0f} ms (server {server_ms:.0f} ms) over {len(timings)} strokes")
    assert median_ms < 2000

    # undo twice (the last refinement, then the last stroke): back to the state before it
    before_last = httpx.get(f"{url}/api/sessions/{sid}").json()
    assert before_last["can_undo"] and not before_last["can_redo"]
    page.keyboard.press("z")
    wait_idle(page)
    mask_undo1, scr_undo1 = server_slice(url, sid, k)
    assert np.array_equal(scr_undo1, scr) and page.evaluate("segrefine.S.status.can_redo")
    page.keyboard.press("z")
    wait_idle(page)
    mask_undo2, scr_undo2 = server_slice(url, sid, k)
    assert (scr_undo2 == 2).sum() < (scr == 2).sum() and np.array_equal(mask_undo2, mask_undo1)
    assert_overlay_matches(page, url, sid, affine, k, shape)
    page.screenshot(path=str(ARTIFACTS / "browser_4_undone.png"))

    page.keyboard.press("a")
    wait_idle(page)
    status = httpx.get(f"{url}/api/sessions/{sid}").json()
    assert status["accepted"] == [k] and page.evaluate("segrefine.S.status.accepted") == [k]
    assert page.locator(f"#queue-list li[data-index='{k}'].accepted").count() == 1

    with page.expect_download() as info:
        page.click("#download")
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.name == "a26_12_mask.nii.gz"
    img = nib.load(path)
    assert img.get_data_dtype() == np.uint8 and img.shape == shape
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    data = np.asarray(img.dataobj)
    assert np.array_equal(data[:, :, k], mask_undo2)
    raw = httpx.get(f"{url}/api/sessions/{sid}/arrays/mask").content
    assert np.array_equal(data, np.frombuffer(raw, np.uint8).reshape(shape, order="F"))
    page.screenshot(path=str(ARTIFACTS / "browser_5_accepted.png"))


def test_new_session_from_a_data_root_case(page, site):
    url, _ = site
    page.goto(f"{url}/")
    page.wait_for_function("document.querySelector('#file-select option')")
    page.select_option("#file-select", CASES["hippocampus_004"])
    page.click("#create-from-file")
    page.wait_for_function("segrefine.S.ready", timeout=60_000)
    assert page.locator("#predict-box").is_visible()  # no maps yet: the predict button is offered
    assert "no prediction yet" in page.locator("#message").inner_text()
    sid = page.evaluate("segrefine.S.sid")
    assert httpx.get(f"{url}/api/sessions/{sid}").json()["name"] == "hippocampus_004"


def test_new_session_with_the_chosen_refinement_preset(page, site):
    url, _ = site
    page.goto(f"{url}/")
    page.wait_for_function("document.querySelector('#file-select option')")
    assert page.locator("#preset-select").input_value() == ""  # the server's val-chosen default
    page.select_option("#file-select", CASES["hippocampus_004"])
    page.select_option("#preset-select", "paper")
    page.click("#create-from-file")
    page.wait_for_function("segrefine.S.ready", timeout=60_000)
    sid = page.evaluate("segrefine.S.sid")
    assert httpx.get(f"{url}/api/sessions/{sid}").json()["preset"] == "paper"
    assert "(paper)" in page.locator("#case-name").inner_text()
