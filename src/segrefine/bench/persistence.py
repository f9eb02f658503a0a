"""``segrefine bench persistence``: what a session writes per pen-up, journal vs full rewrite.

A pen-up in the web app is two session verbs: the stroke (``add_scribble``) and the
refinement of its slice (``refine``). On a synthetic CT-size session (512x512x300 by
default: an ellipsoid, a probability map that misses part of it, strokes that add the
missed part or mark background, I-DRLSE refinement), each pen-up is persisted by

* the journal (:mod:`segrefine.journal`, this version): the bounding-box patch of each
  verb appended, the two fsync'ed together as the server does for one request
  (``Session.batch``); measured from each patch's making to its append's return
  (``Session.last_write``) plus the fsync;
* the full rewrite (the format before, the baseline, in the same run on the same
  slices): per verb the whole slices before/after in ``history/NNNNNN.npz`` and the whole
  mask and scribble volumes in ``state.npz`` (uncompressed ``np.savez`` through
  :func:`segrefine.io.atomic_path`, no fsync), exactly as the first format did.

Bytes are the sizes of what each path wrote (and the process's ``wchar`` from
``/proc/self/io`` as a check); the compaction (one snapshot) is timed too and spread
over the pen-ups between two compactions at the default thresholds; reopening is timed.
The two paths run one after the other on the same verbs (the journal first, then the
baseline, which rebuilds the volumes after each verb from its patch and checks that it
ends on the session's volumes), with ``os.sync`` between them, untimed: interleaved, each
journal fsync waited for the baseline's 300 MB of dirty pages and freed blocks, which a
real session, writing only its journal, never does.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.bench.common import command_line, machine, markdown_table, write_json, write_text
from segrefine.journal import Journal
from segrefine.persist import read_snapshot
from segrefine.session import Session

TARGET_MS, TARGET_BYTES = 50.0, 2**20


def _wchar() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text(encoding="utf-8").splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _save_npz(path: Path, **arrays) -> int:
    """The first format's writer: uncompressed npz, temp file + rename, no fsync."""
    with io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path.stat().st_size


def full_rewrite(folder: Path, mask: np.ndarray, scribbles: np.ndarray, state: dict, entry: int,
                 kind: str, axis: int, index: int, before_mask: np.ndarray, before_scr: np.ndarray) -> int:
    """What the first format wrote after one verb on slice ``index`` (``mask``/``scribbles``:
    the volumes after it); returns the bytes."""
    after_mask, after_scr = np.moveaxis(mask, axis, 0)[index], np.moveaxis(scribbles, axis, 0)[index]
    size = _save_npz(folder / "history" / f"{entry:06d}.npz", axis=axis, index=index, kind=np.array(kind),
                     mask_before=before_mask, mask_after=after_mask.copy(),
                     scr_before=before_scr, scr_after=after_scr.copy())
    state = {**state, "history_len": entry + 1, "pointer": entry + 1, "saved": time.time()}
    size += _save_npz(folder / "state.npz", mask=mask, scribbles=scribbles, state=np.array(json.dumps(state)))
    return size


def ct_session(folder: Path, shape: tuple[int, int, int]) -> Session:
    """A session on an ellipsoid whose probability map misses its +x side."""
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    c = [(n - 1) / 2 for n in shape]
    r = [n * 0.3 for n in shape]
    d = ((z[:, None, None] - c[0]) / r[0]) ** 2 + ((y[None, :, None] - c[1]) / r[1]) ** 2 \
        + ((x[None, None, :] - c[2]) / r[2]) ** 2
    image = np.where(d < 1, np.int16(200), np.int16(0))
    image += (np.arange(shape[1], dtype=np.int16) % 7)[None, :, None]  # some texture
    dp = ((z[:, None, None] - c[0]) / (r[0] * 0.8)) ** 2 + ((y[None, :, None] - c[1]) / r[1]) ** 2 \
        + ((x[None, None, :] - c[2]) / r[2]) ** 2
    del d
    prob = (1 / (1 + np.exp((dp - 1) * 8))).astype(np.float32)
    del dp
    s = Session.create(folder, io.Volume(image), axis=2)
    s.set_maps(prob, (prob * (1 - prob)).astype(np.float32))
    return s


def run(json_out: Path, *, shape: tuple[int, int, int] = (512, 512, 300), pen_ups: int = 20,
        workdir: Path | None = None, log=print) -> dict:
    json_out = Path(json_out)
    workdir = io.check_writable_dir(workdir) if workdir is not None else None  # None: the temp folder
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-persistence-", dir=workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        s = ct_session(tmp / "journal", shape)
        setup_s = time.perf_counter() - t0
        log(f"session {shape} made in {setup_s:.1f} s")
        os.sync()  # each measurement starts without the other writes' dirty pages (see below)
        start_mask, start_scr = s.mask.copy(), s.scribbles.copy()
        done = []  # (record, verb, slice, before mask, before scribbles, patch) for the baseline
        rows, cz, cy = [], (shape[0] - 1) / 2, (shape[1] - 1) / 2
        fg_half, bg_half = round(shape[1] * 0.078), round(shape[1] * 0.117)  # 40 and 60 at 512
        for i in range(pen_ups):
            k = int(rng.integers(int(shape[2] * 0.42), int(shape[2] * 0.58)))
            if i % 2 == 0:  # foreground on the part of the object the map misses
                rows_ = np.linspace(cz + shape[0] * 0.26, cz + shape[0] * 0.28, 2)
                pts = [(int(r_), int(cy + dy)) for r_ in rows_ for dy in range(-fg_half, fg_half + 1, 2)]
                label = 1
            else:  # background beyond the object
                pts = [(int(cz + shape[0] * 0.4), int(cy + dy)) for dy in range(-bg_half, bg_half + 1, 2)]
                label = 2
            rec = {"slice": k, "label": label}
            with s.batch():  # as the server runs a request: the pen-up's two records, one fsync
                for verb in ("scribble", "refine"):
                    before_mask, before_scr = s.slice_mask(k), s.slice_scribbles(k)
                    w0 = _wchar()
                    t = time.perf_counter()
                    change = s.add_scribble(k, pts, label, radius=2) if verb == "scribble" else s.refine(k)
                    rec[f"{verb}_verb_s"] = time.perf_counter() - t
                    w1 = _wchar()
                    rec[f"{verb}_journal_s"] = s.last_write["seconds"]
                    rec[f"{verb}_journal_bytes"] = s.last_write["bytes"]
                    rec[f"{verb}_bbox"] = change.bbox
                    rec[f"{verb}_journal_wchar"] = None if w0 is None else w1 - w0
                    done.append((rec, verb, k, before_mask, before_scr, s.history[s.pointer - 1]))
            rec["fsync_s"] = s.journal.last_sync_seconds
            rec["journal_s"] = rec["scribble_journal_s"] + rec["refine_journal_s"] + rec["fsync_s"]
            rows.append(rec)
            log(f"pen-up {i + 1}/{pen_ups} slice {k}: journal {rec['journal_s'] * 1e3:.1f} ms "
                f"(fsync {rec['fsync_s'] * 1e3:.1f} ms) "
                f"{rec['scribble_journal_bytes'] + rec['refine_journal_bytes']} B")
        # the baseline on the same verbs: the volumes after each verb are rebuilt from its patch
        os.sync()  # not timed: the journal's phase leaves no dirty pages to the baseline's
        old = tmp / "full_rewrite"
        (old / "history").mkdir(parents=True)
        mask, scr, state = start_mask, start_scr, s._state(full=True)
        for entry, (rec, verb, k, before_mask, before_scr, patch) in enumerate(done):
            patch.apply(np.moveaxis(mask, s.axis, 0)[k], np.moveaxis(scr, s.axis, 0)[k], "after")
            w0 = _wchar()
            t = time.perf_counter()
            rec[f"{verb}_full_bytes"] = full_rewrite(old, mask, scr, state, entry, verb, s.axis, k,
                                                     before_mask, before_scr)
            rec[f"{verb}_full_s"] = time.perf_counter() - t
            rec[f"{verb}_full_wchar"] = None if w0 is None else _wchar() - w0
            if verb == "refine":
                log(f"full rewrite, pen-up {entry // 2 + 1}/{pen_ups}: "
                    f"{(rec['scribble_full_s'] + rec['refine_full_s']) * 1e3:.0f} ms "
                    f"{(rec['scribble_full_bytes'] + rec['refine_full_bytes']) / 2**20:.0f} MB")
        baseline_identical = bool(np.array_equal(mask, s.mask) and np.array_equal(scr, s.scribbles))
        del start_mask, start_scr, mask, scr
        records_per_pen_up = 2
        journal_bytes = float(np.mean([r["scribble_journal_bytes"] + r["refine_journal_bytes"] for r in rows]))
        t = time.perf_counter()
        s.compact()
        compact_s, snapshot_bytes = time.perf_counter() - t, s.last_write["snapshot_bytes"]
        s.add_scribble(int(shape[2] // 2), [(1, 1)], 2)  # one record after the snapshot to replay
        s.close()
        t = time.perf_counter()
        again = Session.open(tmp / "journal")
        reopen_s = time.perf_counter() - t
        t = time.perf_counter()  # the part of reopening that reads this format's state
        read_snapshot(tmp / "journal" / "snapshot.npz", shape)
        Journal.open(tmp / "journal" / "journal.log")
        reopen_state_s = time.perf_counter() - t
        same = bool(np.array_equal(again.mask, s.mask) and np.array_equal(again.scribbles, s.scribbles))
        again.close()

    def per_pen_up(key: str) -> np.ndarray:
        if key == "journal_s":  # the two records' making and writing, and the one fsync
            return np.array([r["journal_s"] for r in rows], dtype=float)
        return np.array([r[f"scribble_{key}"] + r[f"refine_{key}"] for r in rows], dtype=float)

    pen_ups_per_compaction = min(Session.compact_records,
                                 Session.compact_bytes / (journal_bytes / records_per_pen_up)) / records_per_pen_up
    summary = {}
    for name, key in (("journal", "journal"), ("full_rewrite", "full")):
        ms, size = per_pen_up(f"{key}_s") * 1e3, per_pen_up(f"{key}_bytes")
        summary[name] = {"ms_median": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)),
                         "ms_max": float(ms.max()), "bytes_median": float(np.median(size)),
                         "bytes_max": float(size.max())}
    summary["journal"]["compaction"] = {
        "seconds": compact_s, "snapshot_bytes": snapshot_bytes,
        "pen_ups_between": pen_ups_per_compaction,
        "amortised_ms_per_pen_up": compact_s * 1e3 / pen_ups_per_compaction,
        "amortised_bytes_per_pen_up": snapshot_bytes / pen_ups_per_compaction}
    j, f = summary["journal"], summary["full_rewrite"]
    result = {
        "command": command_line(), "machine": machine(), "load_average": os.getloadavg(),
        "shape": list(shape), "pen_ups": pen_ups, "setup_seconds": setup_s,
        "what": "per pen-up = add_scribble + refine (I-DRLSE) on one slice in one Session.batch() "
                "(as a server request); journal = both patches made and appended (Session.last_write) "
                "+ the one fsync; full_rewrite = the first format's history/NNNNNN.npz + state.npz per "
                "verb (np.savez, atomic rename, no fsync)",
        "summary": summary,
        "ratio_full_over_journal": {"ms_median": f["ms_median"] / j["ms_median"],
                                    "bytes_median": f["bytes_median"] / j["bytes_median"]},
        "targets": {"ms_per_pen_up": TARGET_MS, "bytes_per_pen_up": TARGET_BYTES,
                    "met": bool(j["ms_max"] <= TARGET_MS and j["bytes_max"] <= TARGET_BYTES)},
        "reopen_seconds": reopen_s, "reopen_state_seconds": reopen_state_s, "reopen_identical": same, "baseline_volumes_identical": baseline_identical,
        "compact_thresholds": {"bytes": Session.compact_bytes, "records": Session.compact_records},
        "pen_up_records": rows,
    }
    write_json(json_out, result)
    write_text(json_out.with_suffix(".md"), table(result))
    return result


def table(result: dict) -> str:
    j, f = result["summary"]["journal"], result["summary"]["full_rewrite"]
    c = j["compaction"]
    shape = "x".join(map(str, result["shape"]))

    def kb(v: float) -> str:
        return f"{v / 1024:,.1f} KB" if v < 2**20 else f"{v / 2**20:,.1f} MB"

    ratio = result["ratio_full_over_journal"]
    rows = [["full rewrite (first format, no fsync; baseline)",
             f"{f['ms_median']:.0f} / {f['ms_p90']:.0f} / {f['ms_max']:.0f}",
             f"{kb(f['bytes_median'])} / {kb(f['bytes_max'])}", "1"],
            ["journal of bbox patches, one fsync (now)",
             f"{j['ms_median']:.1f} / {j['ms_p90']:.1f} / {j['ms_max']:.1f}",
             f"{kb(j['bytes_median'])} / {kb(j['bytes_max'])}",
             f"{ratio['ms_median']:.0f}x faster, {ratio['bytes_median']:.0f}x fewer bytes"]]
    head = (f"Persistence per pen-up (stroke + I-DRLSE refinement), {shape} volume, "
            f"{result['pen_ups']} pen-ups; {result['machine']['cpu']}, {result['machine']['cores']} cores, "
            f"load average {result['load_average'][0]:.1f} (shared machine)\n\n")
    tail = (f"\nTarget ≤ {TARGET_MS:.0f} ms and ≤ 1 MB per pen-up: "
            f"{'met' if result['targets']['met'] else 'NOT met'} (worst pen-up). Compaction (one snapshot): "
            f"{c['seconds']:.2f} s, {kb(c['snapshot_bytes'])}, every {c['pen_ups_between']:.0f} pen-ups at the "
            f"default thresholds = {c['amortised_ms_per_pen_up']:.2f} ms and {kb(c['amortised_bytes_per_pen_up'])} "
            f"per pen-up. Reopen: {result['reopen_seconds']:.1f} s (image, maps, suggestion queue; of which "
            f"snapshot + journal {result['reopen_state_seconds']:.2f} s), state identical: "
            f"{result['reopen_identical']}.\n")
    return head + markdown_table(["persistence", "ms per pen-up (median / p90 / max)",
                                  "written per pen-up (median / max)", "ratio"], rows) + tail
