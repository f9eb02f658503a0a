"""Screenshots of segrefine's own web app for docs/slicer.md (``make screenshots``).

The web app doing what the 3D Slicer steps of docs/slicer.md do, on real shared data:
a DICOM series (written from hippocampus_004) opened from the page, MG-Net's
segmentation with its uncertainty, the next suggested slice, a foreground scribble
refined with I-DRLSE, the DICOM SEG download, and the cohort review queue of a
three-case ``segrefine predict --workers 1`` run. A real server runs on a free loopback
port and a headless Chromium (Playwright with Debian's ``/usr/bin/chromium``, as the
browser tests) takes the pictures; each PNG is written atomically into ``--out``.

    .venv/bin/python scripts/screenshots.py [--data ../shared/data] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from segrefine import io
from segrefine.dicomseg import write_series

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update"]
SERIES_CASE = "hippocampus_004"
COHORT_CASES = ("hippocampus_014", "hippocampus_015", "hippocampus_017")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def segrefine(*args) -> None:
    subprocess.run([sys.executable, "-m", "segrefine.cli", *map(str, args)], check=True, cwd=REPO)


def prepare(data: Path, tmp: Path) -> tuple[Path, Path]:
    """A data root with a DICOM series and three NIfTI cases, and their cohort predicted."""
    images = data / "hippocampus" / "imagesTr"
    if not (images / f"{SERIES_CASE}.nii.gz").is_file():
        raise SystemExit(f"{images / SERIES_CASE}.nii.gz: not found; give --data the shared data folder")
    root = tmp / "root"
    write_series(io.load(images / f"{SERIES_CASE}.nii.gz"), root / "series" / "hippo4")
    (root / "cohort").mkdir()
    for case in COHORT_CASES:
        shutil.copy(images / f"{case}.nii.gz", root / "cohort")
    out = tmp / "cohort_out"
    segrefine("predict", "-i", root / "cohort", "-o", out, "--workers", "1")
    return root, out


def start_server(root: Path, cohort: Path, workspace: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workspace.parent / "server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen([sys.executable, "-m", "segrefine.cli", "serve", "--data-root", root, "--cohort",
                             cohort, "--workspace", workspace, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {(workspace.parent / 'server.log').read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/api/sessions", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the server did not start in 120 s")
        time.sleep(0.3)


def shot(page, out: Path, name: str) -> Path:
    """The page as ``out/name``, written to a temporary beside it and renamed."""
    target = out / name
    with io.atomic_path(target) as tmp:
        page.screenshot(path=str(tmp))
    print(f"wrote {target}")
    return target


def voxel_to_page(page, affine: np.ndarray, ijk) -> tuple[float, float]:
    mm = (affine @ np.array([*ijk, 1.0]))[:3].tolist()
    pos = page.evaluate("""([mm]) => {
      const nv = segrefine.nv;
      const p = nv.frac2canvasPos(nv.mm2frac(mm, 0, true));
      if (!p) return null;
      const r = nv.canvas.getBoundingClientRect();
      return [r.left + p[0] / nv.uiData.dpr, r.top + p[1] / nv.uiData.dpr];
    }""", [mm])
    if pos is None:
        raise RuntimeError(f"voxel {ijk} is not on the displayed slice")
    return pos


def scribble_target(url: str, sid: str, k: int) -> list[tuple[int, int, int]]:
    """A short foreground stroke on slice k where MG-Net is least sure and says background."""
    arrays = {}
    for name, dtype in (("mask", np.uint8), ("uncertainty", "<f4")):
        r = httpx.get(f"{url}/api/sessions/{sid}/arrays/{name}", timeout=30)
        shape = tuple(int(x) for x in r.headers["X-Shape"].split(","))
        arrays[name] = np.frombuffer(r.content, dtype).reshape(shape, order="F")
    unc = np.where(arrays["mask"][:, :, k] == 0, arrays["uncertainty"][:, :, k], -1)
    i, j = np.unravel_index(int(np.argmax(unc)), unc.shape)
    return [(i, j, k), (i, min(j + 2, unc.shape[1] - 1), k)]


def run(data: Path, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM}: not found (apt-get install -y chromium)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="segrefine-shots-") as name:
        tmp = Path(name)
        root, cohort = prepare(data, tmp)
        (tmp / "ws").mkdir()
        url, proc = start_server(root, cohort, tmp / "ws")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{url}/")
                page.wait_for_function("document.querySelector('#series-select option')", timeout=60_000)
                # a DICOM series, opened from the page (Slicer: load the sample)
                page.select_option("#series-select", "series/hippo4")
                page.click("#create-from-series")
                page.wait_for_function("segrefine.S.ready && segrefine.S.status.name === 'hippo4'", timeout=60_000)
                page.evaluate("document.querySelector('#cohort-box details').open = false")
                # MG-Net (Slicer: Auto Segmentation)
                page.click("#predict")
                page.wait_for_function("segrefine.S.ready && segrefine.S.status.has_maps && segrefine.S.pending === 0",
                                       timeout=120_000)
                written.append(shot(page, out, "web_mgnet.png"))
                # the next suggested slice (Slicer: Next Sample, here per slice)
                page.keyboard.press("n")
                page.wait_for_function("segrefine.S.pending === 0")
                sid = page.evaluate("segrefine.S.sid")
                k = page.evaluate("segrefine.currentIndex()")
                written.append(shot(page, out, "web_next_slice.png"))
                # a foreground scribble, refined on release (Slicer: Scribbles, Update)
                affine = np.asarray(httpx.get(f"{url}/api/sessions/{sid}").json()["affine"], float)
                points = [voxel_to_page(page, affine, v) for v in scribble_target(url, sid, k)]
                page.keyboard.press("f")
                page.mouse.move(*points[0])
                page.mouse.down()
                page.mouse.move(*points[1], steps=4)
                page.mouse.up()
                page.wait_for_function("segrefine.S.timings.length >= 1 && segrefine.S.pending === 0",
                                       timeout=60_000)
                page.wait_for_function("!document.querySelector('#download-seg').classList.contains('disabled')")
                written.append(shot(page, out, "web_scribble_dicom_seg.png"))
                # the cohort review queue (Slicer: Next Sample over volumes)
                page.evaluate("document.querySelector('#cohort-box details').open = true")
                first = json.loads(page.evaluate("JSON.stringify(segrefine.cohort.state.cases[0])"))
                page.click(f"#cohort-list li[data-case='{first['case']}'] button.case")
                page.wait_for_function(f"segrefine.S.ready && segrefine.S.status.name === {json.dumps(first['case'])}",
                                       timeout=60_000)
                written.append(shot(page, out, "web_cohort.png"))
                browser.close()
        finally:
            proc.kill()
            proc.wait(timeout=10)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (holds hippocampus/imagesTr)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder of the PNGs")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    run(args.data, args.out)


if __name__ == "__main__":
    main()
