"""The server must not fall over (issue 13): the session cache past its size, hostile uploads
(lying headers, gzip bombs) with the server's peak memory measured, cross-origin writes (also
from a real browser page on another origin), and bad input that used to answer 500. Every test
runs the real server (uvicorn in a subprocess) on loopback."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from hostile import gzip_bomb, lying_header_gz, nan_affine_nifti, peak_rss_mb, rss_mb
from server_util import running_server

from segrefine.server.store import ID_PATTERN

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HIPPO = "hippocampus/imagesTr/hippocampus_004.nii.gz"
CHROMIUM = Path("/usr/bin/chromium")
#: the issue's bound on the server's peak memory through both hostile uploads
PEAK_LIMIT_MB = 1500


def _workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def _wait_warm(url: str, workspace: Path, timeout: float = 120) -> None:
    """Wait until the server logs that its refinement warm-up is done."""
    log_path = workspace / f"server-{url.rsplit(':', 1)[1]}.log"
    deadline = time.monotonic() + timeout
    while "refinement warm-up done" not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.2)


def _wait_memory_settles(pid: int, timeout: float = 60) -> None:
    """Wait until the process's peak memory has not grown for 3 s (start-up work is done)."""
    deadline = time.monotonic() + timeout
    last, since = peak_rss_mb(pid), time.monotonic()
    while time.monotonic() - since < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = peak_rss_mb(pid)
        if now > last + 1:
            last, since = now, time.monotonic()


def _sessions(workspace: Path) -> list[str]:
    return sorted(p.name for p in workspace.iterdir() if ID_PATTERN.fullmatch(p.name))


def _upload(http: httpx.Client, name: str, data: bytes, **headers) -> httpx.Response:
    return http.post("/api/sessions/upload", files={"file": (name, data)}, headers=headers)


# ---------------------------------------------------------------------- the session cache
def test_fifty_creates_then_every_session_reads_and_edits(shared, tmp_path):
    """The 17th create used to answer 500 (an evicted session without a lock) and every
    request after it too; 50 creates past the 16 cached, then every one answers."""
    workspace = _workspace(tmp_path)
    with running_server(workspace, shared) as url, httpx.Client(base_url=url, timeout=60) as http:
        ids = []
        for i in range(50):
            r = http.post("/api/sessions", json={"path": HIPPO, "method": "graphcut"})
            assert r.status_code == 201, (i, r.status_code, r.text)
            ids.append(r.json()["id"])
        assert len(set(ids)) == 50 and _sessions(workspace) == sorted(ids)  # no orphan folder
        for sid in ids:
            r = http.get(f"/api/sessions/{sid}")
            assert r.status_code == 200 and r.json()["id"] == sid, r.text
        for i, sid in enumerate(ids):  # an edit on each, through eviction and reopening
            r = http.post(f"/api/sessions/{sid}/scribbles", json={"index": 3, "label": 1,
                                                                 "points": [[i % 30, 5]]})
            assert r.status_code == 200, (i, r.status_code, r.text)
        for i, sid in enumerate(ids):  # every edit is there, exactly once
            sl = http.get(f"/api/sessions/{sid}/slices/2/3").json()
            scr = np.frombuffer(__import__("base64").b64decode(sl["scribbles"]), np.uint8)
            scr = scr.reshape(sl["shape"])
            assert scr[i % 30, 5] == 1 and scr.sum() == 1, i


# ---------------------------------------------------------------------- hostile uploads
def test_hostile_uploads_refused_before_allocation_peak_memory(shared, tmp_path, capsys):
    """The issue's two uploads: 65 bytes of gzip whose header claims 512x512x1024 float64, and a
    2 MB gzip bomb inflating to that header plus 2 GiB of zeros. Both answer 413 from the header
    alone; the server's peak resident memory (VmHWM) stays far under 1.5 GB."""
    lie, bomb = lying_header_gz(), gzip_bomb()
    assert len(lie) < 100 and len(bomb) < 3 * 2**20
    workspace = _workspace(tmp_path)
    with running_server(workspace, shared) as url, httpx.Client(base_url=url, timeout=120) as http:
        pid = url.proc.pid
        # a warm server with one ordinary session first: the figure includes a working server
        _wait_warm(url, workspace)
        assert http.post("/api/sessions", json={"path": HIPPO}).status_code == 201
        _wait_memory_settles(pid)  # other warm-ups (MG-Net) may still be loading
        before = peak_rss_mb(pid)
        for name, data in (("lie.nii.gz", lie), ("bomb.nii.gz", bomb)):
            r = _upload(http, name, data)
            assert r.status_code == 413, (name, r.status_code, r.text)
            detail = r.json()["detail"]
            assert detail.startswith(f"{name}: image of shape (512, 512, 1024) needs 2147483648 bytes")
            assert "more than the cap of 1073741824 bytes" in detail and str(workspace) not in detail
        # a bomb whose header is honest (64^3 int16) but whose stream goes on for 1 GiB of zeros:
        # only the announced bytes are inflated, the session is made
        r = _upload(http, "trailing.nii.gz", gzip_bomb((64, 64, 64), np.int16, zero_bytes=2**30))
        assert r.status_code == 201 and r.json()["shape"] == [64, 64, 64], r.text
        # a header within the caps (512^3 uint8 = 128 MiB) over an empty stream: cut short, 400
        r = _upload(http, "short.nii.gz", lying_header_gz((512, 512, 512), np.uint8))
        assert r.status_code == 400 and "the file is cut short" in r.json()["detail"], r.text
        peak, now = peak_rss_mb(pid), rss_mb(pid)
        # the server still works, and nothing of the refused uploads is left
        assert http.post("/api/sessions", json={"path": HIPPO}).status_code == 201
    assert len(_sessions(workspace)) == 3
    assert not any((workspace / ".tmp").iterdir())
    report = {"peak_rss_mb_before_uploads": round(before, 1), "peak_rss_mb_after_uploads": round(peak, 1),
              "rss_mb_after_uploads": round(now, 1), "lie_bytes": len(lie), "bomb_bytes": len(bomb)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "hostile_uploads_memory.json").write_text(json.dumps(report, indent=1))
    with capsys.disabled():
        print(f"\nserver memory through the hostile uploads: {report}")
    assert peak < PEAK_LIMIT_MB
    assert peak - before < 200  # nothing near the 2 GiB the headers claim was allocated


# ---------------------------------------------------------------------- cross-origin writes
def test_cross_origin_writes_refused(shared, tmp_path):
    raw = (shared / HIPPO).read_bytes()
    workspace = _workspace(tmp_path)
    with running_server(workspace, shared) as url, httpx.Client(base_url=url, timeout=60) as http:
        own = str(url)
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Origin": own.replace("127.0.0.1", "localhost")},  # another origin
                        {"Origin": f"http://127.0.0.1:{int(own.rsplit(':', 1)[1]) + 1}"},  # other port
                        {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}, {"Origin": own, "Sec-Fetch-Site": "cross-site"}):
            r = _upload(http, "x.nii.gz", raw, **headers)
            assert r.status_code == 403, (headers, r.status_code)
            assert "cross-origin request refused" in r.json()["detail"]
            r = http.post("/api/sessions", json={"path": HIPPO}, headers=headers)
            assert r.status_code == 403, (headers, r.status_code)
        assert _sessions(workspace) == []
        # the server's own pages, and clients that are not browsers, may write
        for headers in ({"Origin": own}, {"Origin": own, "Sec-Fetch-Site": "same-origin"},
                        {"Sec-Fetch-Site": "none"}, {}):
            r = _upload(http, "x.nii.gz", raw, **headers)
            assert r.status_code == 201, (headers, r.status_code, r.text)
        sid = r.json()["id"]
        # reads are not state-changing: a foreign Origin may GET (CORS keeps the answer from it)
        r = http.get(f"/api/sessions/{sid}", headers={"Origin": "http://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = http.post(f"/api/sessions/{sid}/undo", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
    assert len(_sessions(workspace)) == 4


class _Page(BaseHTTPRequestHandler):
    html = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.html)))
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args):
        pass


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent")
def test_page_on_another_origin_cannot_create_a_session(shared, tmp_path):
    """The issue's attack in a real browser: a page on another origin POSTs a multipart upload
    with a no-cors fetch (the browser sends it, only the answer is opaque). It gets 403."""
    sync_api = pytest.importorskip("playwright.sync_api")
    workspace = _workspace(tmp_path)
    raw = list((shared / HIPPO).read_bytes())
    with running_server(workspace, shared) as url:
        _Page.html = f"""<!doctype html><script>
        window.attack = async () => {{
          const fd = new FormData();
          fd.append("file", new Blob([new Uint8Array({json.dumps(raw)})]), "x.nii.gz");
          await fetch("{url}/api/sessions/upload", {{method: "POST", mode: "no-cors", body: fd}});
          await fetch("{url}/api/sessions", {{method: "POST", mode: "no-cors",
            headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{path: "{HIPPO}"}})}});
          return "sent";
        }};</script>""".encode()
        other = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                            args=["--headless", "--no-sandbox"])
                page = browser.new_page()
                page.goto(f"http://localhost:{other.server_address[1]}/")
                assert page.evaluate("window.attack()") == "sent"
                # the same page served by the API server itself may create a session
                page.goto(f"{url}/")
                status = page.evaluate(f"""async () => {{
                  const r = await fetch("/api/sessions", {{method: "POST",
                    headers: {{"Content-Type": "application/json"}},
                    body: JSON.stringify({{path: "{HIPPO}"}})}});
                  return r.status; }}""")
                browser.close()
        finally:
            other.shutdown()
        log = next(workspace.glob("server-*.log")).read_text()
    assert status == 201
    assert len(_sessions(workspace)) == 1  # only the same-origin one
    assert log.count("403 Forbidden") == 2, log[-2000:]


# ---------------------------------------------------------------------- 4xx, not 500
def test_bad_input_answers_4xx_with_a_message(shared, tmp_path):
    root = tmp_path / "root"
    (root / "cases").mkdir(parents=True)
    shutil.copy(shared / HIPPO, root / "cases" / "ok.nii.gz")
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    (root / "cases" / "self.nii.gz").symlink_to(root / "cases" / "self.nii.gz")
    nan_affine_nifti(root / "cases" / "nan_affine.nii.gz")
    workspace = _workspace(tmp_path)
    with running_server(workspace, root) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert [f["path"] for f in http.get("/api/files").json()] == ["cases/nan_affine.nii.gz",
                                                                   "cases/ok.nii.gz"]
        for path in ("loop_a/x.nii.gz", "cases/self.nii.gz"):
            r = http.post("/api/sessions", json={"path": path})
            assert r.status_code == 400 and "symbolic link loop" in r.json()["detail"], r.text
        for path in ("0" * 1024, "cases/" + "x" * 300 + ".nii.gz"):  # names too long for the disk
            r = http.post("/api/sessions", json={"path": path})
            assert r.status_code == 400 and "cannot be read (File name too long)" in r.json()["detail"]
            assert len(r.json()["detail"]) < 250
        r = http.post("/api/sessions", json={"path": "cases/nan_affine.nii.gz"})
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == ("cases/nan_affine.nii.gz: the voxel-to-world matrix (affine) "
                                      "holds NaN or inf values")
        r = _upload(http, "nan.nii.gz", (root / "cases" / "nan_affine.nii.gz").read_bytes())
        assert r.status_code == 400 and r.json()["detail"].startswith("nan.nii.gz: the voxel-to-world")

        long_name = "a" * 300 + ".nii.gz"
        r = _upload(http, long_name, (shared / HIPPO).read_bytes())
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "a" * 100
        sid = r.json()["id"]
        for point in ([2**63, 0], [0, 2**63], [-(2**63), 0], [2**31, 1]):
            r = http.post(f"/api/sessions/{sid}/scribbles", json={"index": 0, "label": 1,
                                                                 "points": [point]})
            assert r.status_code == 422 and "points" in r.json()["detail"], (point, r.text)
        for index in (2**63, 2**31):
            r = http.post(f"/api/sessions/{sid}/scribbles", json={"index": index, "label": 1,
                                                                 "points": [[0, 0]]})
            assert r.status_code == 422 and "index" in r.json()["detail"], r.text
            r = http.get(f"/api/sessions/{sid}/slices/2/{index}")
            assert r.status_code == 422 and "index" in r.json()["detail"], r.text
        r = http.post(f"/api/sessions/{sid}/scribbles", json={"index": 0, "label": 1,
                                                             "points": [[-1, 0]]})
        assert r.status_code == 400 and r.json()["detail"], r.text
        assert "Traceback" not in next(workspace.glob("server-*.log")).read_text()


def test_leftovers_of_a_killed_server_are_removed_at_start(shared, tmp_path):
    workspace = _workspace(tmp_path)
    with running_server(workspace, shared) as url, httpx.Client(base_url=url, timeout=60) as http:
        sid = http.post("/api/sessions", json={"path": HIPPO}).json()["id"]
    # what a kill -9 in the middle of an upload and of an atomic write leaves
    (workspace / ".tmp" / "0123456789abcdef").mkdir(parents=True)
    (workspace / ".tmp" / "0123456789abcdef" / "big.nii.gz").write_bytes(b"x" * 1000)
    (workspace / sid / ".snapshot.npz.abc123.tmp").write_bytes(b"half")
    (workspace / sid / ".maps-0123456789ab.npz.x1.tmp").write_bytes(b"half")
    with running_server(workspace, shared) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get(f"/api/sessions/{sid}").status_code == 200
        log = next(workspace.glob(f"server-{url.rsplit(':', 1)[1]}.log")).read_text()
    assert list((workspace / ".tmp").iterdir()) == []
    assert not list((workspace / sid).glob(".*"))
    assert "removed 3 temporary files left by an interrupted server" in log


# ---------------------------------------------------------------------- deleting, warm start
def test_delete_a_session(shared, tmp_path):
    workspace = _workspace(tmp_path)
    with running_server(workspace, shared) as url, httpx.Client(base_url=url, timeout=60) as http:
        a, b = (http.post("/api/sessions", json={"path": HIPPO}).json()["id"] for _ in range(2))
        r = http.delete(f"/api/sessions/{a}", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and (workspace / a).is_dir()
        r = http.delete(f"/api/sessions/{a}", headers={"Origin": str(url)})
        assert r.status_code == 204 and r.content == b""
        assert not (workspace / a).exists() and _sessions(workspace) == [b]
        assert [s["id"] for s in http.get("/api/sessions").json()] == [b]
        for method, route in (("get", ""), ("delete", ""), ("post", "/undo")):
            r = getattr(http, method)(f"/api/sessions/{a}{route}")
            assert r.status_code == 404 and "no session" in r.json()["detail"], (method, route)
        assert http.get(f"/api/sessions/{b}").status_code == 200
        assert not any((workspace / ".tmp").iterdir())


def test_first_stroke_after_start_is_fast(shared, tmp_path):
    """The server warms the refinement methods up while it starts (imports, numba kernels):
    the first stroke with refinement then takes well under a second (it took 8.9 s)."""
    from server_util import make_session

    workspace = _workspace(tmp_path)
    sids = {m: make_session(workspace, shared / HIPPO, method=m) for m in ("idrlse", "graphcut")}
    with running_server(workspace, shared) as url, httpx.Client(base_url=url, timeout=60) as http:
        _wait_warm(url, workspace)
        for method, sid in sids.items():
            t0 = time.perf_counter()
            r = http.post(f"/api/sessions/{sid}/scribbles",
                          json={"index": 10, "label": 1, "points": [[18, 26], [18, 27]], "refine": True})
            wall = time.perf_counter() - t0
            assert r.status_code == 200 and [c["kind"] for c in r.json()["changes"]] == ["scribble", "refine"]
            assert wall < 1.0, (method, wall)
