"""Helpers shared by the server tests: synthetic maps, prepared sessions, a real server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from segrefine.server.store import new_id
from segrefine.session import Session

REPO = Path(__file__).resolve().parents[1]


def synthetic_maps(shape, *, axis: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A centred elliptic blob as probability and a boundary ring as uncertainty.

    The ring's strength varies per slice along ``axis`` (seeded), so the slice
    ranking is deterministic and not trivial. Returns float32 ``(prob, uncertainty)``.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    d = sum(((grid[a] - (shape[a] - 1) / 2) / max(shape[a] * 0.25, 2.0)) ** 2
            for a in range(3) if a != axis)
    prob = (1 / (1 + np.exp((d - 1) * 6))).astype(np.float32)
    weight = rng.uniform(0.2, 1.0, shape[axis]).astype(np.float32)
    unc = prob * (1 - prob) * weight.reshape([-1 if a == axis else 1 for a in range(3)])
    return prob, unc.astype(np.float32)


def make_session(workspace: Path, image: Path, *, method: str = "idrlse", seed: int = 0) -> str:
    """A persisted session with synthetic maps in ``workspace``; returns its id."""
    sid = new_id()
    s = Session.create(Path(workspace) / sid, image, method=method)
    s.set_maps(*synthetic_maps(s.image.shape, axis=s.axis, seed=seed))
    return sid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """Return once ``url`` answers ``/api/sessions``; raise with the log's end if the process
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: "
                               f"{log_path.read_text(encoding='utf-8', errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/api/sessions", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start in time")
        time.sleep(0.2)


@contextlib.contextmanager
def running_server(workspace: Path, data_root: Path | None, *, timeout: float = 60.0,
                   model: str | None = None, cohort: Path | None = None):
    """``segrefine.server.serve`` in a subprocess on a free loopback port (``model``: the
    MG-Net of "Run MG-Net", a path or shipped name; None: the default; ``cohort``: a cohort
    output folder, as ``serve --cohort``).

    Yields a :class:`Server` (the base URL, with the process as ``.proc``); the
    process is killed (SIGKILL, like a crash) when the block ends.
    """
    port = free_port()
    code = ("import sys; from pathlib import Path; from segrefine.server import serve; "
            "serve(data_root=Path(sys.argv[1]) if sys.argv[1] else None, "
            "workspace=Path(sys.argv[2]), port=int(sys.argv[3]), model=sys.argv[4] or None, "
            "cohort=Path(sys.argv[5]) if sys.argv[5] else None)")
    log_path = Path(workspace) / f"server-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, str(data_root or ""), str(workspace),
                                 str(port), model or "", str(cohort or "")], stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            wait_until_serving(url, proc, log_path, timeout)
            yield Server(url, proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


class Server(str):
    """The base URL, with the server's process attached."""

    def __new__(cls, url: str, proc: subprocess.Popen):
        obj = super().__new__(cls, url)
        obj.proc = proc
        return obj
