"""Session persistence: journal of bounding-box patches + snapshots (segrefine-session/2).

Reopening gives the identical state (volumes, queue, undo history) after any verb, through
compactions, after a torn journal tail, after a compaction cut between its two writes, and
after a real process doing verbs was killed with SIGKILL: nothing it acknowledged is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from session_ops import SHAPE, digest, do_step, make_session

from segrefine import io
from segrefine.errors import InputError
from segrefine.journal import MAGIC, Journal, encode_record
from segrefine.session import FORMAT, Session

HERE = Path(__file__).resolve().parent


def test_every_verb_reopens_identically_through_compactions(tmp_path, monkeypatch):
    monkeypatch.setattr(Session, "compact_records", 7)
    s = make_session(tmp_path / "s")
    kinds, snapshots = set(), 0
    for step in range(60):
        kinds.add(do_step(s, step))
        snapshots += s.last_write["snapshot_bytes"] > 0
        again = Session.open(tmp_path / "s")
        assert digest(again) == digest(s), f"step {step}"
        again.close()
    assert kinds == {"scribble", "refine", "undo", "redo", "accept", "next"}
    assert snapshots == s.seq // 7 >= 5  # compacted every 7 records (an undo at the start logs none)
    # undo history survives: undo everything on a reopened copy and on the live session
    again = Session.open(tmp_path / "s")
    while s.pointer:
        assert s.undo().bbox == again.undo().bbox
        assert np.array_equal(s.mask, again.mask) and np.array_equal(s.scribbles, again.scribbles)
    assert again.pointer == 0 and not again.undo().bbox


def test_a_stroke_writes_only_its_patch(tmp_path):
    s = make_session(tmp_path / "s")
    snapshot = (tmp_path / "s" / "snapshot.npz").stat().st_size
    s.add_scribble(3, [[20, 10], [20, 11], [21, 11]], 1)
    journal = tmp_path / "s" / "journal.log"
    assert s.last_write["bytes"] == journal.stat().st_size - len(MAGIC) < 1000
    assert s.last_write["snapshot_bytes"] == 0
    assert (tmp_path / "s" / "snapshot.npz").stat().st_size == snapshot  # not rewritten
    assert not (tmp_path / "s" / "state.npz").exists()


def test_torn_tail_of_the_journal_is_dropped(tmp_path):
    s = make_session(tmp_path / "s")
    for step in range(5):
        do_step(s, step)
    want = digest(s)
    s.close()
    journal = tmp_path / "s" / "journal.log"
    good = journal.stat().st_size
    record = encode_record({"seq": s.seq + 1, "op": "state", "state": {}}, b"x" * 100)
    with open(journal, "ab") as fh:  # what a kill in the middle of an append leaves
        fh.write(record[: len(record) // 2])
    again = Session.open(tmp_path / "s")
    assert digest(again) == want
    again.add_scribble(2, [[5, 5]], 2)  # the next append cuts the torn tail off first
    reopened = Session.open(tmp_path / "s")
    assert digest(reopened) == digest(again)
    assert len(Journal.open(journal).records) == 6  # five verbs and the new one, nothing torn
    assert journal.stat().st_size == good + again.last_write["bytes"]


def test_compaction_cut_between_snapshot_and_new_journal(tmp_path):
    s = make_session(tmp_path / "s")
    for step in range(9):
        do_step(s, step)
    journal = tmp_path / "s" / "journal.log"
    old = journal.read_bytes()
    s.compact()
    want = digest(s)
    s.close()
    journal.write_bytes(old)  # as if killed after the snapshot's rename, before the journal's
    again = Session.open(tmp_path / "s")
    assert digest(again) == want
    do_step(again, 9)
    assert digest(Session.open(tmp_path / "s")) == digest(again)


def test_a_damaged_record_before_others_is_an_error_not_a_silent_cut(tmp_path):
    s = make_session(tmp_path / "s")
    for step in range(3):
        s.add_scribble(step, [[10, 10 + step]], 1)
    s.close()
    journal = tmp_path / "s" / "journal.log"
    data = bytearray(journal.read_bytes())
    data[len(MAGIC) + 20] ^= 0xFF  # inside the first record's header
    journal.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"journal.log: damaged record at byte 8"):
        Session.open(tmp_path / "s")
    data = bytearray(journal.read_bytes())
    data[len(MAGIC) + 20] ^= 0xFF
    data[-3] ^= 0xFF  # inside the last record: a torn tail, dropped
    journal.write_bytes(bytes(data))
    assert Session.open(tmp_path / "s").pointer == 2


def test_a_gap_in_the_journal_is_an_error(tmp_path):
    s = make_session(tmp_path / "s")
    do_step(s, 0)
    s.close()
    with open(tmp_path / "s" / "journal.log", "ab") as fh:
        fh.write(encode_record({"seq": s.seq + 5, "op": "state", "state": {}}))
    with pytest.raises(InputError, match="records missing"):
        Session.open(tmp_path / "s")


def test_first_format_session_is_converted(tmp_path):
    """A folder as the full-rewrite format left it (state.npz + history/NNNNNN.npz)."""
    folder = tmp_path / "old"
    (folder / "history").mkdir(parents=True)
    ref = make_session(tmp_path / "ref")
    for step in range(4):
        ref.add_scribble(step, [[10 + step, 12]], 1)
    ref.undo()
    io.save(ref.volume, folder / "image.nii.gz")
    meta = dict(ref.meta, format="segrefine-session/1")
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    np.savez(folder / "maps.npz", prob=ref.prob, uncertainty=ref.uncertainty)
    state = {"accepted": [], "history_len": 4, "pointer": 3, "queue": ref.queue.state()}
    np.savez(folder / "state.npz", mask=ref.mask, scribbles=ref.scribbles, state=np.array(json.dumps(state)))
    for entry, patch in enumerate(ref.history):
        mb, sb = np.zeros((2, *SHAPE[:2]), np.uint8)
        ma, sa = mb.copy(), sb.copy()
        patch.apply(mb, sb, "before")
        patch.apply(ma, sa, "after")
        np.savez(folder / "history" / f"{entry:06d}.npz", axis=2, index=patch.index, kind=np.array("scribble"),
                 mask_before=mb, mask_after=ma, scr_before=sb, scr_after=sa)
    s = Session.open(folder)
    assert digest(s) == digest(ref)
    assert json.loads((folder / "meta.json").read_text(encoding="utf-8"))["format"] == FORMAT
    assert not (folder / "state.npz").exists() and not (folder / "history").exists()
    s.redo()
    ref.redo()
    assert digest(Session.open(folder)) == digest(ref)


def _read_acks(proc: subprocess.Popen, want: int, timeout: float = 60.0) -> list[tuple[int, str]]:
    acks, deadline = [], time.monotonic() + timeout
    while len(acks) < want:
        line = proc.stdout.readline()
        assert line, f"the session process ended: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the session process is too slow"
        step, dig = line.split()[1:3]
        acks.append((int(step), dig))
    return acks


def test_kill9_loses_nothing_acknowledged(tmp_path):
    """A real process does verbs and says `ack` after each; it is killed with SIGKILL at a
    random point, three times; each reopening holds every acknowledged verb (and at most the
    one it was doing when killed, if that reached the disk)."""
    folder = tmp_path / "s"
    make_session(folder).close()
    reference = make_session(tmp_path / "ref")
    done = 0  # verbs applied to the reference (and known to be in the session)
    rng = np.random.default_rng(7)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for _round in range(3):
        proc = subprocess.Popen([sys.executable, str(HERE / "session_ops.py"), str(folder), str(done), "4"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                env=env)
        try:
            acks = _read_acks(proc, int(rng.integers(5, 25)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            # read through the same buffered reader as readline(): communicate() reads the raw
            # pipe and would miss lines readline() already buffered (an ack seen as lost)
            rest = proc.stdout.read()
            proc.stderr.read()
        assert proc.returncode == -signal.SIGKILL
        for line in rest.splitlines():  # what it printed before dying; a cut last line is not an ack
            parts = line.split()
            if len(parts) == 3 and len(parts[2]) == 64:
                acks.append((int(parts[1]), parts[2]))
        last, last_digest = acks[-1]
        while done <= last:  # the reference catches up with the acknowledged verbs
            do_step(reference, done)
            done += 1
        assert digest(reference) == last_digest  # the two processes agree on every verb
        reopened = Session.open(folder)
        got = digest(reopened)
        if got != last_digest:  # the verb in flight at the kill may have been written
            do_step(reference, done)
            done += 1
            assert got == digest(reference), "the reopened session lost an acknowledged verb"
        reopened.close()
    assert done >= 15


def test_a_batch_is_fsynced_once_at_its_end(tmp_path, monkeypatch):
    """The server wraps each request in Session.batch(): a pen-up's stroke and refinement are
    written at once and fsync'ed together before the answer."""
    import segrefine.journal as journal_module

    s = make_session(tmp_path / "s")
    calls = []
    real = journal_module.os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    with s.batch():
        s.add_scribble(4, [[20, 30], [21, 30]], 1)
        s.refine(4)
        assert s.journal.unsynced and calls == []  # written, not yet fsync'ed
    assert not s.journal.unsynced and len(calls) == 1
    s.add_scribble(4, [[2, 2]], 2)  # outside a batch: one fsync per verb
    assert len(calls) == 2
    assert digest(Session.open(tmp_path / "s")) == digest(s)
