"""Sessions on disk, opened lazily, one lock each.

A session lives in ``<workspace>/<id>/`` where ``id`` comes from
:func:`secrets.token_urlsafe` and must match :data:`ID_PATTERN` before it is
ever joined to a path, so a request cannot name a folder outside the workspace.
:class:`Session` persists itself after every change; the store only caches open
sessions (least recently used first out) and serialises the requests on one
session with its lock, so a server restart or an eviction loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segrefine import io
from segrefine.session import Session, updated

log = logging.getLogger(__name__)


def read_workspace_map(path: Path, consequence: str) -> dict:
    """A small JSON object kept in the workspace (which session came from which cohort case
    or DICOM series): {} when absent, and when unreadable, logged with ``consequence``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable (%s); %s", path, exc, consequence)
        return {}
    return data if isinstance(data, dict) else {}


def write_workspace_map(path: Path, data: dict) -> None:
    with io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")

#: what :func:`new_id` produces (22 url-safe characters); nothing else is a session id
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")


class UnknownSession(LookupError):
    """No session with this id (or a string that is not a session id at all)."""


def new_id() -> str:
    return secrets.token_urlsafe(16)


def valid_id(session_id: str) -> bool:
    return bool(ID_PATTERN.fullmatch(session_id))


class SessionStore:
    """Open sessions of ``workspace`` by id, at most ``max_open`` kept in memory.

    Parameters
    ----------
    workspace : Path
        Folder holding one sub-folder per session (created if needed).
    max_open : int
        Open sessions cached; the least recently used idle one is closed past that
        (it is on disk, so it reopens on the next request).
    """

    def __init__(self, workspace: Path, *, max_open: int = 16):
        self.workspace = io.check_writable_dir(workspace).resolve()
        self.max_open = max_open
        self._guard = threading.Lock()  # protects the two dicts below
        self._locks: dict[str, threading.Lock] = {}
        self._open: OrderedDict[str, Session] = OrderedDict()
        self.removed_leftovers = self._remove_leftovers()

    def _remove_leftovers(self) -> int:
        """Delete what a killed server left half-written: the upload/export scratch folders
        under ``.tmp/`` and :func:`io.atomic_path` temporaries (``.<name>.<random>``) in
        session folders. Runs once at start (one server process per workspace); the
        number of entries removed is logged."""
        removed = 0
        scratch = self.workspace / ".tmp"
        if scratch.is_dir():
            for entry in scratch.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        for folder in self.workspace.iterdir():
            if not (folder.is_dir() and valid_id(folder.name)):
                continue
            for sub in (folder, folder / "history"):
                for entry in sub.glob(".*") if sub.is_dir() else ():
                    if entry.is_file() and not entry.is_symlink():
                        entry.unlink(missing_ok=True)
                        removed += 1
        if removed:
            log.warning("removed %d temporary files left by an interrupted server in %s",
                        removed, self.workspace)
        return removed

    # ------------------------------------------------------------------ paths
    def folder(self, session_id: str) -> Path:
        """The folder of ``session_id``; raises :class:`UnknownSession` for a malformed id."""
        if not isinstance(session_id, str) or not valid_id(session_id):
            raise UnknownSession(session_id)
        folder = self.workspace / session_id
        if folder.parent != self.workspace:  # cannot happen with ID_PATTERN; checked anyway
            raise UnknownSession(session_id)
        return folder

    def exists(self, session_id: str) -> bool:
        try:
            return (self.folder(session_id) / "meta.json").is_file()
        except UnknownSession:
            return False

    def scratch(self) -> Path:
        """A private temporary folder inside the workspace (for uploads and exports)."""
        root = self.workspace / ".tmp"
        root.mkdir(exist_ok=True)
        path = root / secrets.token_hex(8)
        path.mkdir()
        return path

    # ------------------------------------------------------------------ access
    def _lock(self, session_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(session_id, threading.Lock())

    @contextmanager
    def use(self, session_id: str) -> Iterator[Session]:
        """Hold ``session_id``'s lock and yield its open :class:`Session`."""
        folder = self.folder(session_id)
        if not (folder / "meta.json").is_file():
            raise UnknownSession(session_id)
        lock = self._lock(session_id)
        with lock:
            if not (folder / "meta.json").is_file():  # deleted while this request waited
                raise UnknownSession(session_id)
            with self._guard:
                session = self._open.get(session_id)
                if session is not None:
                    self._open.move_to_end(session_id)
            if session is None:
                session = Session.open(folder)
                with self._guard:
                    self._open[session_id] = session
                log.info("reopened session %s from disk", session_id)
            try:
                with session.batch():  # the request's verbs are fsync'ed together, before its answer
                    yield session
            except (OSError, MemoryError):
                # a write that failed (disk full, ...) may leave memory ahead of the disk:
                # the next request reopens the session from what was persisted
                with self._guard:
                    if self._open.get(session_id) is session:
                        del self._open[session_id]
                with contextlib.suppress(OSError):
                    session.close()
                raise
        self._evict()

    def create(self, image, *, axis: int, method: str, budget: float,
               preset: str | None = None, order: str = "gain", labels=None,
               names: dict[int, str] | None = None) -> tuple[str, Session]:
        """A new session on ``image`` (path or Volume) in a fresh random folder (``labels``: a
        label map to start from, its values named by ``names``; see :meth:`Session.create`)."""
        for _ in range(8):
            session_id = new_id()
            folder = self.folder(session_id)
            if not folder.exists():
                break
        else:  # pragma: no cover - 2^128 ids
            raise RuntimeError("could not draw a fresh session id")
        try:
            options = {} if preset is None else {"preset": preset}  # None: the session's default
            session = Session.create(folder, image, axis=axis, method=method, budget=budget, order=order,
                                     labels=labels, names=names, **options)
        except BaseException:
            if folder.exists() and folder.parent == self.workspace:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._guard:
            self._locks.setdefault(session_id, threading.Lock())
            self._open[session_id] = session
        self._evict()
        return session_id, session

    def delete(self, session_id: str) -> None:
        """Delete a session: waits for its requests, then moves its folder out of the listing
        in one rename (never half a session) and removes it."""
        folder = self.folder(session_id)
        if not (folder / "meta.json").is_file():
            raise UnknownSession(session_id)
        with self._lock(session_id):
            if not (folder / "meta.json").is_file():
                raise UnknownSession(session_id)
            with self._guard:
                session = self._open.pop(session_id, None)
            if session is not None:
                session.close()
            trash = self.scratch()
            folder.rename(trash / session_id)
            shutil.rmtree(trash, ignore_errors=True)
        log.info("deleted session %s", session_id)

    def _evict(self) -> None:
        """Close the least recently used idle sessions past ``max_open`` (they stay on disk).

        Every open session has a lock (``create`` and ``use`` add it); ``setdefault``
        keeps an eviction from ever failing a request whose change is already saved.
        """
        with self._guard:
            extra = len(self._open) - self.max_open
            for session_id in list(self._open)[: max(extra, 0)]:
                lock = self._locks.setdefault(session_id, threading.Lock())
                if lock.acquire(blocking=False):  # never close a session in use
                    try:
                        self._open.pop(session_id).close()
                    finally:
                        lock.release()

    # ------------------------------------------------------------------ listing
    def summaries(self) -> list[dict]:
        """Persisted sessions, most recently changed first."""
        out = []
        for folder in self.workspace.iterdir():
            if not (folder.is_dir() and valid_id(folder.name)):
                continue
            try:
                meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
                changed = updated(folder)
            except (OSError, ValueError):
                continue  # half-written or foreign folder: not a session
            out.append({"id": folder.name, "name": str(meta.get("name", "")),
                        "shape": tuple(meta["shape"]), "created": float(meta.get("created", 0.0)),
                        "updated": changed})
        return sorted(out, key=lambda s: -s["updated"])
