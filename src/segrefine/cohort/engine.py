"""Run one task over a cohort on Dask distributed and keep ``OUT/manifest.json``.

The client submits one future per case to a local cluster (``workers``: that many
worker processes, one thread each) or to an existing scheduler (``scheduler``),
then collects the records as they complete. Dask does the scheduling and the
fault tolerance: when a worker dies (``kill -9``, out of memory) the scheduler
reschedules the cases it held on the other workers and the nanny restarts it; a
case that kills workers ``distributed.scheduler.allowed-failures`` times (3) is
recorded failed. The manifest is rewritten atomically at most every
``manifest_every`` seconds and at the end, so an interrupted run keeps what it
finished and a rerun skips it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from segrefine import io
from segrefine.cohort.queue import MANIFEST, read_manifest
from segrefine.cohort.tasks import KINDS, CohortCase, output_names, predictor_for, run_case
from segrefine.errors import InputError

log = logging.getLogger(__name__)


class LoadModel(WorkerPlugin):
    """Dask worker plugin: one torch thread, and the task's networks loaded (and run once on a
    blank volume, which builds the ONNX Runtime session) when the worker starts."""

    def __init__(self, kind: str, options: dict):
        self.kind, self.options = kind, dict(options)

    def setup(self, worker=None):
        import torch

        torch.set_num_threads(1)
        predictor_for(self.kind, self.options)(np.zeros((64, 64, 2), np.float32))


def write_manifest(out_dir: Path, manifest: dict) -> None:
    with io.atomic_path(Path(out_dir) / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _summary(manifest: dict) -> dict:
    cases = manifest["cases"].values()
    return {"cases": len(manifest["cases"]), "done": sum(c["status"] == "done" for c in cases),
            "failed": sum(c["status"] == "failed" for c in cases),
            "resumed": sum(bool(c.get("resumed")) for c in cases)}


def _connect(workers: int | None, scheduler: str | None):
    """A Dask client (and the local cluster it owns, or None)."""
    import dask
    from distributed import Client, LocalCluster

    if (workers is None) == (scheduler is None):
        raise InputError("give either --workers N (a local cluster) or --scheduler ADDRESS, not both")
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="5s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR,
                               env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return Client(cluster), cluster


def worker_memory(client) -> dict:
    """Peak and current resident memory of each worker process (MB), and its pid."""
    def probe():
        import psutil

        peak = None
        try:  # VmHWM: this process's own high-water mark (ru_maxrss keeps the forking parent's across exec)
            for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        except OSError:
            pass
        return {"pid": os.getpid(), "peak_rss_mb": peak, "rss_mb": psutil.Process().memory_info().rss / 2**20}

    return client.run(probe)


def _clean_temporaries(out: Path, kind: str, cases: list[CohortCase]) -> int:
    """Remove the temporaries of :func:`io.atomic_path` that a killed worker left (``.NAME.*``)."""
    removed = 0
    for c in cases:
        for name in output_names(kind, c.name):
            for tmp in out.glob(f".{name}.*"):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def run_cohort(kind: str, cases: list[CohortCase], out_dir: str | os.PathLike, options: dict, *,
               workers: int | None = None, scheduler: str | None = None, overwrite: bool = False,
               on_record: Callable[[dict], None] | None = None, on_client: Callable | None = None,
               manifest_every: float = 2.0) -> dict:
    """Run ``kind`` (predict, refine-gcn, suggest) on every case and return the manifest.

    Parameters
    ----------
    cases : list of CohortCase
        From :func:`segrefine.cohort.cohort_inputs`.
    options : dict
        The command's options (plain values; see :mod:`segrefine.cohort.tasks`).
    workers, scheduler
        A local cluster of ``workers`` processes (one thread each), or the address of
        an existing Dask scheduler (``tcp://HOST:PORT``; its workers need segrefine).
    overwrite : bool
        Redo every case; otherwise cases whose outputs are complete and valid are kept.
    on_record : callable
        Called on the client with each case's record as it completes.
    on_client : callable
        Called with the ``distributed.Client`` once the workers are ready (the benchmark
        and the tests use it to find the worker processes).
    """
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    if kind not in KINDS:
        raise InputError(f"cohort task must be one of {', '.join(KINDS)}, got {kind!r}")
    if not cases:
        raise InputError("the cohort holds no cases")
    predictor_for(kind, options)  # bad options or model files fail here, in one line, before any worker starts
    out = io.check_writable_dir(out_dir)
    old = read_manifest(out)
    if old is not None and old.get("command") not in (None, kind):
        raise InputError(f"{out / MANIFEST}: this folder holds a {old['command']} cohort; write the "
                         f"{kind} outputs to another folder")
    manifest = {"command": kind, "options": options, "cases": dict(old["cases"]) if old else {}}
    t0 = time.perf_counter()
    client, cluster = _connect(workers, scheduler)
    try:
        client.register_plugin(LoadModel(kind, options), name=f"segrefine-{kind}-{uuid.uuid4().hex[:8]}")
        n_workers = len(client.scheduler_info()["workers"])
        if n_workers == 0:
            raise InputError(f"--scheduler {scheduler}: the cluster has no workers")
        manifest.update(workers=n_workers, scheduler=scheduler or "local",
                        startup_seconds=round(time.perf_counter() - t0, 3))
        if on_client is not None:
            on_client(client)
        run = uuid.uuid4().hex[:8]
        by_future, futures = {}, []
        for c in cases:
            fut = client.submit(run_case, kind, c.name, str(c.image), str(out), options, overwrite=overwrite,
                                max_voxels=io.MAX_VOXELS, key=f"segrefine-{kind}-{run}-{c.name}", pure=False)
            by_future[fut.key] = c
            futures.append(fut)
        t_submit, last_write = time.perf_counter(), time.perf_counter()
        finished = []
        try:
            for fut in as_completed(futures):
                c = by_future[fut.key]
                try:
                    rec = fut.result()
                except KilledWorker as exc:
                    rec = {"case": c.name, "image": str(c.image), "status": "failed", "resumed": False,
                           "error": f"workers died {exc.args[0] if exc.args else ''} running it "
                                    "(out of memory? see the worker logs)", "seconds": None, "worker": None}
                except FutureCancelledError as exc:
                    rec = {"case": c.name, "image": str(c.image), "status": "failed", "resumed": False,
                           "error": f"cancelled ({exc})", "seconds": None, "worker": None}
                rec["image"] = os.path.abspath(c.image)  # the task saw the path as given
                rec["finished_at"] = round(time.perf_counter() - t_submit, 3)
                manifest["cases"][c.name] = rec
                finished.append(rec)
                if on_record is not None:
                    on_record(rec)
                if time.perf_counter() - last_write > manifest_every:
                    manifest["summary"] = _summary(manifest)
                    write_manifest(out, manifest)
                    last_write = time.perf_counter()
        finally:
            manifest["run_seconds"] = round(time.perf_counter() - t_submit, 3)
            manifest["summary"] = _summary(manifest)
            write_manifest(out, manifest)
        try:
            manifest["worker_memory"] = list(worker_memory(client).values())
        except Exception as exc:  # noqa: BLE001 - a figure for the record, not a reason to fail the run
            log.warning("worker memory not measured: %s", exc)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    manifest["temporaries_removed"] = _clean_temporaries(out, kind, cases)
    write_manifest(out, manifest)
    return manifest

