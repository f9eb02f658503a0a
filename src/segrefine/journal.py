"""Durable files: an append-only record journal and whole-file writes that survive a crash.

    j = Journal.open(path)              # creates it (durably) if missing; drops a torn tail
    j.append({"op": "x"}, payload)      # written and fsync'ed when this returns
    for header, payload in j.records: ...

    write_durable(path, data)           # temp file, fsync, rename, fsync of the folder

Journal file layout: the 8-byte magic ``SEGJRNL1``, then records, each

    <uint32 header length H> <uint32 payload length P> <uint32 CRC-32 of header + payload>
    <H bytes: the header, UTF-8 JSON object> <P bytes: the payload>

little-endian. A record counts only when it is complete and its CRC matches: a process
killed in the middle of an append leaves a torn tail, which reading stops at and the next
append cuts off. An append returns after ``fsync``, so whatever a caller has acknowledged
is on disk; whole files are replaced by an atomic rename after their data is fsync'ed, and
the folder is fsync'ed so that the rename itself persists.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path

from segrefine.errors import InputError

MAGIC = b"SEGJRNL1"
_HEAD = struct.Struct("<III")


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist the entries of folder ``path`` (a rename or a new file in it): the same
    fsync of a read-only descriptor as :func:`fsync_file`."""
    fsync_file(path)


def fsync_file(path: str | os.PathLike) -> None:
    """Persist the data of an already written file ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str | os.PathLike, data: bytes | None = None, *, writer=None) -> int:
    """Replace ``path`` with ``data`` (or what ``writer(file)`` writes) so that a crash leaves
    either the old or the new file, never a mix, and the new one survives once this returns.
    Returns the bytes written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if writer is not None:
                writer(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return size


def encode_record(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    crc = zlib.crc32(payload, zlib.crc32(head))
    return _HEAD.pack(len(head), len(payload), crc) + head + payload


def read_records(data: bytes, *, name: str = "journal") -> tuple[list[tuple[dict, bytes]], int]:
    """The complete records of a journal's bytes and the offset where they end (a torn or
    corrupt last record, from an interrupted append, is left out; a damaged record with
    records after it raises :class:`InputError`)."""
    if data[: len(MAGIC)] != MAGIC:
        raise InputError(f"{name}: not a segrefine journal (bad magic)")
    records, pos, end = [], len(MAGIC), len(data)
    while pos + _HEAD.size <= end:
        h, p, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        if start + h + p > end:
            break
        head, payload = data[start:start + h], data[start + h:start + h + p]
        header = None
        if zlib.crc32(payload, zlib.crc32(head)) == crc:
            try:
                header = json.loads(head.decode("utf-8"))
            except ValueError:
                header = None
        if not isinstance(header, dict):
            if start + h + p < end:  # records follow: not a torn tail but a damaged file
                raise InputError(f"{name}: damaged record at byte {pos} ({end - start - h - p} bytes "
                                 "of records after it would be lost); the journal is not read")
            break
        records.append((header, payload))
        pos = start + h + p
    return records, pos


class Journal:
    """An append-only file of ``(header dict, payload bytes)`` records (see module docstring).

    Not safe for two writers: one process owns a journal (the session's lock in the server).
    """

    def __init__(self, path: Path, records: list[tuple[dict, bytes]], end: int):
        self.path, self.records, self.end = Path(path), records, end
        self._fh = None
        self.unsynced = False  # records appended with sync=False and not fsync'ed yet
        self.last_sync_seconds = 0.0

    @classmethod
    def open(cls, path: str | os.PathLike) -> Journal:
        path = Path(path)
        if not path.exists():
            write_durable(path, MAGIC)
        records, end = read_records(path.read_bytes(), name=str(path))
        return cls(path, records, end)

    @classmethod
    def create(cls, path: str | os.PathLike) -> Journal:
        """A new, empty journal replacing any file at ``path`` (atomically)."""
        write_durable(path, MAGIC)
        return cls(Path(path), [], len(MAGIC))

    @property
    def size(self) -> int:
        return self.end

    def append(self, header: dict, payload: bytes = b"", *, sync: bool = True) -> int:
        """Add a record; it is on disk when this returns (with ``sync``; else after the next
        :meth:`sync`). Returns the bytes written."""
        if self._fh is None:
            self._fh = open(self.path, "r+b")  # noqa: SIM115 - kept open for the next appends
            self._fh.truncate(self.end)  # drop a torn tail left by a killed writer
        record = encode_record(header, payload)
        self._fh.seek(self.end)
        self._fh.write(record)
        self._fh.flush()
        self.end += len(record)
        self.unsynced = True
        if sync:
            self.sync()
        return len(record)

    def sync(self) -> None:
        """fsync what was appended (no-op when nothing is pending)."""
        if self.unsynced and self._fh is not None:
            t0 = time.perf_counter()
            os.fsync(self._fh.fileno())
            self.last_sync_seconds = time.perf_counter() - t0
        self.unsynced = False

    def forget(self) -> None:
        """Drop the records read at open (after a caller has applied them); appended records
        are never kept in memory."""
        self.records = []

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None

    def __del__(self):
        self.close()
