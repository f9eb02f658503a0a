"""The FastAPI app factory and ``serve``: the JSON API under ``/api`` and the NiiVue viewer at ``/``.

    app = make_app(data_root=Path("../shared/data"), workspace=Path("sessions"))
    serve(data_root=..., workspace=..., host="127.0.0.1", port=8000)

Reliability and security (SPEC section 5): the server binds to 127.0.0.1 by
default and then only answers requests whose ``Host`` is a loopback name (so a
web page elsewhere cannot reach it through DNS rebinding); request bodies are
size limited (uploads to ``max_upload_mb``, JSON to ``max_json_mb``); images are
checked from their header against a voxel and byte cap before any voxel is read
(413 past it, see :mod:`segrefine.io`); a state-changing request (POST, PUT,
PATCH, DELETE) whose ``Origin`` is not the server's own, or whose
``Sec-Fetch-Site`` is neither ``same-origin`` nor ``none``, answers 403 (a page
on another site cannot write, even with a no-cors ``fetch``); uploads must be
NIfTI/NRRD/MHA; server-side paths are resolved under the data root and refused
outside it; sessions are folders named by random ids (see
:mod:`segrefine.server.store`); a domain :class:`InputError` answers 400 with its
message, an unknown session 404.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from segrefine import io, uploads
from segrefine.errors import InputError
from segrefine.server.cohort import router as cohort_router
from segrefine.server.monailabel import router as monailabel_router
from segrefine.server.routes import router
from segrefine.server.series import router as series_router
from segrefine.server.store import SessionStore, UnknownSession

log = logging.getLogger(__name__)

#: the viewer inside an installed wheel (copied there by ``setup.py``'s build step, same layout)
PACKAGED_WEB_DIR = Path(__file__).resolve().parents[1] / "_web"
#: the repository's ``web/`` folder (viewer sources and, after ``npm ci``, node_modules)
SOURCE_WEB_DIR = Path(__file__).resolve().parents[3] / "web"


def default_web_dir() -> Path:
    """The wheel's copy of the viewer when there is one (an installed ``segrefine``), else the
    source tree's ``web/`` (a checkout or an editable install)."""
    if (PACKAGED_WEB_DIR / "viewer" / "index.html").is_file():
        return PACKAGED_WEB_DIR
    return SOURCE_WEB_DIR


WEB_DIR = default_web_dir()
NIIVUE_DIST = Path("node_modules") / "@niivue" / "niivue" / "dist"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
UPLOAD_PATHS = re.compile(r"^(/api/sessions/(upload|[^/]+/maps|[^/]+/scribbles/png)|/datastore/(|image|label)|/infer/[^/]+|/session/)$")


async def send_error(send, status: int, detail: str, *, close: bool = False) -> None:
    """Answer an ASGI request from a middleware with ``{"detail": ...}`` JSON and ``status``."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyLimit:
    """ASGI middleware: answer 413 when a request body is larger than its limit.

    Checks ``Content-Length`` first and counts the streamed bytes too (chunked
    uploads); uploads get ``upload_limit`` bytes, every other request ``json_limit``.
    """

    def __init__(self, app, *, upload_limit: int, json_limit: int):
        self.app, self.upload_limit, self.json_limit = app, upload_limit, json_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_limit if UPLOAD_PATHS.match(scope["path"]) else self.json_limit
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._refuse(send, int(length), limit)
        state = {"received": 0, "over": False, "answered": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            if state["over"]:  # whatever the app answers to the cut body, the answer is 413
                if not state["answered"]:
                    state["answered"] = True
                    await self._refuse(send, state["received"], limit)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not state["answered"]:
                await self._refuse(send, state["received"], limit)

    @staticmethod
    async def _refuse(send, size: int, limit: int) -> None:
        await send_error(send, 413, f"request body of {size} bytes or more is larger than the "
                                    f"limit of {limit} bytes ({limit / 2**20:.0f} MB)", close=True)


class _TooLarge(Exception):
    pass


class _HostCheck:
    """ASGI middleware: refuse requests whose ``Host`` header is not one of ``hosts``."""

    def __init__(self, app, *, hosts: list[str]):
        self.app, self.hosts = app, {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.hosts:
                await send_error(send, 400, "unexpected Host header")
                return
        await self.app(scope, receive, send)


#: methods that change state: their requests must come from the server's own origin
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _OriginCheck:
    """ASGI middleware: refuse state-changing requests sent by a page of another origin.

    A browser tells where a request comes from: ``Origin`` on every cross-origin
    POST (also ``no-cors`` ones, which CORS never blocks from being *sent*) and
    ``Sec-Fetch-Site``. A request with ``Origin`` other than ``http(s)://<Host>``
    or with ``Sec-Fetch-Site`` other than ``same-origin``/``none`` answers 403.
    Requests without either header (curl, scripts, the tests' httpx) are not
    from a browser page and pass.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            problem = self.problem(dict(scope["headers"]))
            if problem:
                await send_error(send, 403, problem)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def problem(headers: dict) -> str | None:
        host = headers.get(b"host", b"").decode("latin-1").lower()
        site = headers.get(b"sec-fetch-site")
        if site is not None and site.decode("latin-1").lower() not in ("same-origin", "none"):
            return (f"cross-origin request refused (Sec-Fetch-Site: {site.decode('latin-1')[:40]}): "
                    "only pages served by this server may change sessions")
        origin = headers.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1")
            parts = urlsplit(text.lower())
            if parts.scheme not in ("http", "https") or not host or parts.netloc != host:
                return (f"cross-origin request refused (Origin: {text[:80]}): only pages served "
                        "by this server may change sessions")
        return None


def _validation_message(errors) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "request"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts[:5]) + (f" (and {len(parts) - 5} more)" if len(parts) > 5 else "")


def make_app(*, data_root: Path | None, workspace: Path, max_upload_mb: float = 256,
             max_json_mb: float = 16, max_voxels: int | None = None,
             max_open_sessions: int = 16, web_dir: Path | None = None,
             allowed_hosts: list[str] | None = None, model: str | Path | None = None) -> FastAPI:
    """Build the app.

    Parameters
    ----------
    data_root : Path or None
        Folder whose images may be opened by relative path (read only); None = uploads only.
    workspace : Path
        Folder of the persisted sessions (created if needed).
    max_upload_mb, max_json_mb : float
        Largest request body of an upload / of any other request.
    max_voxels : int or None
        Largest image accepted, checked from the header before any voxel is read
        (and at most ``io.BYTES_PER_VOXEL`` bytes per voxel of it); None: the process-wide
        :data:`segrefine.io.MAX_VOXELS` (512x512x1024 unless ``segrefine --max-voxels``).
    max_open_sessions : int
        Sessions kept open in memory; others reopen from disk on their next request.
    web_dir : Path or None
        The viewer's folder (``viewer/`` sources, ``node_modules/`` from ``npm ci``);
        default: :func:`default_web_dir` (the installed wheel's copy, else the repository's ``web/``).
    allowed_hosts : list of str or None
        Host names the server answers to (None: any); :func:`serve` sets the loopback names.
    model : str, Path or None
        The MG-Net checkpoint "Run MG-Net" uses (a path or a shipped model's short name,
        e.g. ``phantom``); None: the shipped hippocampus MG-Net.
    """
    if data_root is not None:
        data_root = Path(data_root).resolve()
        if not data_root.is_dir():
            raise InputError(f"{data_root}: data root is not a folder")
    web_dir = Path(web_dir) if web_dir is not None else WEB_DIR

    app = FastAPI(title="segrefine", version="0.1.0",
                  description="Uncertainty-guided interactive refinement of 3D segmentations")
    app.state.store = SessionStore(Path(workspace), max_open=max_open_sessions)
    app.state.data_root = data_root
    app.state.max_voxels = io.voxel_cap(max_voxels)
    app.state.model = _checked_model(model)

    @app.exception_handler(io.ImageTooLarge)
    async def _too_large(request: Request, exc: io.ImageTooLarge):
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(uploads.UnsupportedFormat)
    async def _unsupported(request: Request, exc: uploads.UnsupportedFormat):
        return JSONResponse({"detail": str(exc)}, status_code=415)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(UnknownSession)
    async def _unknown(request: Request, exc: UnknownSession):
        return JSONResponse({"detail": f"no session with id {str(exc)[:64]!r}"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(ValidationError)
    async def _invalid_value(request: Request, exc: ValidationError):
        return JSONResponse({"detail": _validation_message(exc.errors())}, status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    app.include_router(router, prefix="/api")
    app.state.cohort = None  # a cohort output folder; serve(cohort=...) sets it (GET /api/cohort)
    app.include_router(cohort_router, prefix="/api")
    app.include_router(series_router, prefix="/api")  # DICOM series sessions (their DICOM SEG download)
    app.include_router(monailabel_router, include_in_schema=False)  # MONAI Label protocol (docs/slicer.md)

    # ------------------------------------------------------------------ the viewer
    viewer = web_dir / "viewer"
    niivue = web_dir / NIIVUE_DIST

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(viewer / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/viewer", StaticFiles(directory=viewer, check_dir=False), name="viewer")
    if niivue.is_dir():
        app.mount("/vendor/niivue", StaticFiles(directory=niivue), name="niivue")
    else:
        fix = (f"run `npm ci` in {web_dir}" if web_dir != PACKAGED_WEB_DIR else
               "this segrefine was built without it: rebuild the wheel after `make setup`")
        log.warning("%s is missing: %s for the viewer", niivue, fix)

        @app.get("/vendor/niivue/{rest:path}", include_in_schema=False)
        def _no_niivue(rest: str):
            return JSONResponse({"detail": f"NiiVue is not installed: {fix}"},
                                status_code=404)

    app.add_middleware(_BodyLimit, upload_limit=int(max_upload_mb * 2**20),
                       json_limit=int(max_json_mb * 2**20))
    app.add_middleware(_OriginCheck)
    if allowed_hosts is not None:
        app.add_middleware(_HostCheck, hosts=list(allowed_hosts))
    return app


def warm_up() -> float:
    """Run every refinement path once on a tiny synthetic session (a temporary folder), so that
    the first stroke of a user does not pay for imports and for loading or compiling the numba
    kernels (seconds; they are cached on disk with ``cache=True``). Returns the seconds taken."""
    import numpy as np

    from segrefine.io import Volume
    from segrefine.session import Session

    t0 = time.perf_counter()
    yy, xx = np.mgrid[:24, :24, :4][:2]
    blob = (((yy - 12) ** 2 + (xx - 12) ** 2) < 36).astype(np.float32)
    prob = np.clip(blob * 0.8 + 0.1, 0, 1).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="segrefine-warmup-") as tmp:
        s = Session.create(Path(tmp) / "s", Volume(array=(blob * 100).astype(np.int16)))
        s.set_maps(prob, (prob * (1 - prob)).astype(np.float32))
        for method in ("idrlse", "graphcut"):
            s.add_scribble(1, [[12, 10], [12, 11]], 1)
            s.add_scribble(1, [[1, 1], [1, 2]], 2)
            s.refine(1, method=method)
    return time.perf_counter() - t0


def _checked_model(model: str | Path | None) -> str | None:
    """The path of ``model`` (a shipped short name resolved), checked to hold an MG-Net."""
    if model is None:
        return None
    from segrefine.nets.checkpoint import model_path, read_checkpoint

    path = model_path(model)
    arch = read_checkpoint(path)["config"]["arch"]
    if arch != "mgnet":
        raise InputError(f"{path}: holds a {arch} network; the web app runs an MG-Net")
    return str(path)


def _warm_up_in_background(model: str | None = None) -> threading.Thread:
    def run():
        try:
            log.warning("refinement warm-up done in %.1f s", warm_up())
            from segrefine.uncertainty import warm_up as warm_up_mgnet

            if model is None:
                log.warning("MG-Net warm-up done in %.1f s", warm_up_mgnet())
            else:
                import numpy as np

                from segrefine.uncertainty import shared_predictor

                t0 = time.perf_counter()
                shared_predictor("mgnet", model, 2)(np.zeros((64, 64, 2), np.float32))
                log.warning("MG-Net (%s) warm-up done in %.1f s", model, time.perf_counter() - t0)
        except Exception:  # a warm-up failure must not stop the server; the first stroke pays
            log.exception("refinement warm-up failed")

    thread = threading.Thread(target=run, name="segrefine-warm-up", daemon=True)
    thread.start()
    return thread


def serve(*, data_root: Path | None, workspace: Path, host: str = "127.0.0.1",
          port: int = 8000, warm: bool = True, model: str | Path | None = None,
          cohort: Path | None = None) -> None:
    """Run the app with uvicorn until interrupted (``segrefine serve``); with ``warm`` the
    refinement methods are warmed up in a background thread while the server starts; ``cohort``
    (a cohort output folder) is listed by ``GET /api/cohort`` in review order."""
    import uvicorn

    loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
    if not loopback:
        log.warning("serving on %s: the API has no authentication; anyone who reaches this "
                    "address can read and change the sessions", host)
    app = make_app(data_root=data_root, workspace=workspace, model=model,
                   allowed_hosts=[*LOOPBACK_HOSTS, host] if loopback else None)
    app.state.cohort = cohort
    if warm:
        _warm_up_in_background(app.state.model)
    uvicorn.run(app, host=host, port=port, log_level="info")
