"""`pip install .` (not editable) gives a working `segrefine serve`: the wheel carries the viewer
and the pinned NiiVue bundle, and an installed copy serves them without the source tree.

The wheel is built from a copy of the sources in a temporary folder (nothing is written into
the working tree) with this venv's setuptools (``--no-build-isolation``, no download),
installed with ``pip install --no-deps --target`` (the dependencies are this venv's), and its
``segrefine serve`` console script is started on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_util import free_port, wait_until_serving

REPO = Path(__file__).resolve().parents[1]
NIIVUE = REPO / "web" / "node_modules" / "@niivue" / "niivue"

pytestmark = pytest.mark.skipif(
    not (NIIVUE / "dist" / "index.js").is_file(),
    reason="web/node_modules is absent (run `make setup` or `cd web && npm ci`): "
           "the wheel's NiiVue bundle comes from there")


def _copy_sources(dst: Path) -> Path:
    """What `pip install .` reads: the project files, src/, and the viewer with NiiVue."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "_web")
    dst.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    shutil.copytree(REPO / "src", dst / "src", ignore=ignore)
    shutil.copytree(REPO / "web" / "viewer", dst / "web" / "viewer")
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(REPO / "web" / name, dst / "web" / name)
    target = dst / "web" / "node_modules" / "@niivue" / "niivue"
    shutil.copytree(NIIVUE / "dist", target / "dist")
    shutil.copy2(NIIVUE / "package.json", target / "package.json")
    return dst


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True,
                          text=True, encoding="utf-8", errors="replace",
                          env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"), check=False)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_installed_wheel_serves_the_viewer_and_niivue(tmp_path):
    src = _copy_sources((tmp_path / "src").resolve())
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--wheel-dir", str(wheels), str(src), cwd=tmp_path)
    (wheel,) = wheels.glob("segrefine-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    web = "segrefine/_web/"
    for rel in ("viewer/index.html", "viewer/app.js", "viewer/api.js", "viewer/geometry.js",
                "viewer/style.css", "node_modules/@niivue/niivue/dist/index.js",
                "node_modules/@niivue/niivue/package.json"):
        assert web + rel in names, f"{rel} is not in {wheel.name}"
    assert web + "viewer/geometry.test.js" not in names  # the viewer's own tests stay out
    assert "segrefine/models/mgnet_hippocampus.pt" in names
    # an sdist (what `python -m build` builds the wheel from) carries the same viewer files
    code = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sdist")], cwd=src,
                           capture_output=True, text=True, encoding="utf-8", check=True)
    with tarfile.open(tmp_path / "sdist" / sdist.stdout.split()[-1]) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    for rel in ("web/viewer/index.html", "web/viewer/app.js",
                "web/node_modules/@niivue/niivue/dist/index.js", "setup.py"):
        assert rel in members, f"{rel} is not in the sdist"

    _pip("install", "--no-deps", "--no-index", "--quiet", "--target", str(site), str(wheel),
         cwd=tmp_path)
    shutil.rmtree(src)  # the installed copy must not need the sources it was built from
    env = dict(os.environ, PYTHONPATH=str(site), SEGREFINE_SHARED_DATA="none",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    code = "import segrefine.server.app as a; print(a.__file__); print(a.WEB_DIR)"
    where = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                           capture_output=True, text=True, encoding="utf-8", check=True)
    module, web_dir = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(web_dir) == site / "segrefine" / "_web"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(site / "bin" / "segrefine"), "serve", "--workspace",
                                 str(tmp_path / "workspace"), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        wait_until_serving(url, proc, log, 90.0)
        with httpx.Client(base_url=url, timeout=30) as http:
            page = http.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert page.content == (REPO / "web" / "viewer" / "index.html").read_bytes()
            js = http.get("/viewer/app.js")
            assert js.status_code == 200 and js.content == (REPO / "web" / "viewer" / "app.js").read_bytes()
            bundle = http.get("/vendor/niivue/index.js")
            assert bundle.status_code == 200 and "javascript" in bundle.headers["content-type"]
            assert bundle.content == (NIIVUE / "dist" / "index.js").read_bytes()
            # the API of the installed copy works too: a session on an uploaded volume
            import nibabel as nib

            img = tmp_path / "small.nii.gz"
            nib.save(nib.Nifti1Image(np.arange(16 * 16 * 4, dtype=np.int16).reshape(16, 16, 4),
                                     np.eye(4)), img)
            with open(img, "rb") as fh:
                r = http.post("/api/sessions/upload", files={"file": ("small.nii.gz", fh)})
            assert r.status_code == 201, r.text
            assert http.get(f"/api/sessions/{r.json()['id']}").json()["shape"] == [16, 16, 4]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")
