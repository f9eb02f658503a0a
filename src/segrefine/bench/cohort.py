"""``segrefine bench cohort``: MG-Net prediction over a cohort on Dask, 1 and 2 local workers.

Two cohorts: the hippocampus ``test`` split (40 small volumes) and 16 copies of a
fetal stack (made in a temporary folder at run time). For each: today's
single-process ``segrefine predict`` (the baseline, torch's default threads) and
a local cluster of 1 and 2 worker processes of one thread each, all in the same
run; throughput in volumes per minute, the cluster's start-up, the peak memory
of each worker; then a run on the fetal copies where one of the 2 workers is
killed (``SIGKILL``) after the first case completes: the time lost, and that
nothing is lost (every case done, its labels equal to the undisturbed run's).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.bench.common import command_line, machine, markdown_table, write_json, write_text
from segrefine.cohort.engine import run_cohort
from segrefine.cohort.tasks import CohortCase, cohort_inputs


def _baseline(cases: list[CohortCase], out: Path) -> dict:
    """Today's path: one process, the model loaded once, cases one after the other."""
    from segrefine.predict import load_inputs, predict_files
    from segrefine.uncertainty import Predictor

    t0 = time.perf_counter()
    predictor = Predictor("mgnet")
    predictor(np.zeros((64, 64, 2), np.float32))  # the ONNX Runtime session, as a worker's plug-in does
    start = time.perf_counter() - t0
    t0, cpu = time.perf_counter(), time.process_time()
    predict_files(load_inputs([c.image for c in cases]), out, predictor)
    run, cpu = time.perf_counter() - t0, time.process_time() - cpu
    return {"setup": "single process (today's predict, torch's default threads)", "workers": 0,
            "startup_seconds": start, "run_seconds": run, "volumes_per_minute": 60 * len(cases) / run,
            "cpu_seconds_per_volume": cpu / len(cases), "cores_used": cpu / run}


def _fit(times: list[float]) -> dict:
    """Least-squares ``t(n) = a + b n`` over the completion times of the n-th case."""
    n = np.arange(1, len(times) + 1, dtype=float)
    b, a = np.polyfit(n, np.sort(times), 1)
    return {"seconds_per_volume": float(b), "intercept_seconds": float(a)}


def _row(name: str, cases: list[CohortCase], manifest: dict) -> dict:
    recs = [manifest["cases"][c.name] for c in cases]
    return {"setup": name, "workers": manifest["workers"], "startup_seconds": manifest["startup_seconds"],
            "run_seconds": manifest["run_seconds"],
            "volumes_per_minute": 60 * len(cases) / manifest["run_seconds"],
            "worker_seconds_per_volume": float(np.mean([r["seconds"] for r in recs])),
            "cpu_seconds_per_volume": float(np.mean([r["cpu_seconds"] for r in recs])),
            # CPU seconds the workers got per second of the run: the cores this run had
            "cores_used": float(sum(r["cpu_seconds"] for r in recs) / manifest["run_seconds"]),
            "done": sum(r["status"] == "done" for r in recs),
            "peak_rss_mb_per_worker": [round(w["peak_rss_mb"], 1) for w in manifest.get("worker_memory", [])
                                       if w["peak_rss_mb"] is not None],
            "growth": _fit([r["finished_at"] for r in recs])}


def _labels(out: Path, cases: list[CohortCase]) -> list[np.ndarray]:
    return [np.asarray(io.load(out / f"{c.name}.nii.gz", finite=False).array) for c in cases]


def _kill_run(cases: list[CohortCase], out: Path, reference: Path) -> dict:
    state: dict = {}

    def on_client(client):
        state["pids"] = sorted(client.run(os.getpid).values())

    def on_record(rec):
        if "killed" not in state:
            victim = next(p for p in state["pids"] if p != rec["pid"])
            os.kill(victim, signal.SIGKILL)
            state.update(killed=victim, at=rec["finished_at"])

    m = run_cohort("predict", cases, out, {"method": "mgnet"}, workers=2, overwrite=True, on_client=on_client,
                   on_record=on_record)
    row = _row("2 workers, one killed (SIGKILL) after the first case", cases, m)
    same = all(np.array_equal(a, b) for a, b in zip(_labels(out, cases), _labels(reference, cases)))
    row.update(killed_after_seconds=state["at"], labels_equal_undisturbed=same,
               temporaries_removed=m["temporaries_removed"])
    return row


def _cohort(name: str, cases: list[CohortCase], tmp: Path, workers: list[int], log) -> dict:
    load = os.getloadavg()[0]
    rows = [_baseline(cases, tmp / f"{name}-single")]
    rows[0]["load_average_1min"] = load
    log(f"{name}: single process {rows[0]['volumes_per_minute']:.1f} vol/min")
    for w in workers:
        load = os.getloadavg()[0]
        m = run_cohort("predict", cases, tmp / f"{name}-w{w}", {"method": "mgnet"}, workers=w, overwrite=True)
        rows.append(_row(f"{w} local worker{'s' if w > 1 else ''} (1 thread each)", cases, m))
        rows[-1]["load_average_1min"] = load
        log(f"{name}: {w} workers {rows[-1]['volumes_per_minute']:.1f} vol/min")
    one = next(r for r in rows if r["workers"] == 1)
    for r in rows:
        r["ratio_vs_1_worker"] = r["volumes_per_minute"] / one["volumes_per_minute"]
    out_bytes = sum(p.stat().st_size for p in (tmp / f"{name}-w{workers[-1]}").glob("*.nii.gz"))
    manifest_bytes = (tmp / f"{name}-w{workers[-1]}" / "manifest.json").stat().st_size
    return {"cases": len(cases), "rows": rows, "output_bytes_per_volume": out_bytes / len(cases),
            "manifest_bytes_per_volume": manifest_bytes / len(cases)}


def projection(result: dict, n: int = 10_000, hours: float = 8.0) -> dict:
    """What ``n`` volumes of this size would need, from the measured per-volume figures (on paper)."""
    rows = {r["workers"]: r for r in result["rows"]}
    best = max(r["workers"] for r in result["rows"])
    # the CPU seconds of one volume on one thread: the work, whatever share of the machine the run got
    per = float(np.mean([r["cpu_seconds_per_volume"] for r in result["rows"] if r["workers"]]))
    cpu_growth = rows[best]["cpu_seconds_per_volume"] / rows[1]["cpu_seconds_per_volume"]
    worker_hours = n * per / 3600
    needed = int(np.ceil(worker_hours / hours))  # each worker a core of its own
    peak = max(max(r["peak_rss_mb_per_worker"] or [0]) for r in result["rows"] if r["workers"])
    return {"volumes": n, "cpu_seconds_per_volume": per, "worker_hours": worker_hours,
            "cpu_per_volume_ratio_2_vs_1_worker": cpu_growth,
            "parallel_efficiency_measured": rows[best]["ratio_vs_1_worker"] / best,
            "workers_for_hours": needed, "hours": hours,
            "memory_gb_per_worker": peak / 1024, "memory_gb_total": needed * peak / 1024,
            "output_gb": n * result["output_bytes_per_volume"] / 1e9,
            "manifest_mb": n * result["manifest_bytes_per_volume"] / 1e6}


def run(hippocampus: Path, fetal: Path, json_out: Path, *, split: str = "test", copies: int = 16,
        workers: tuple[int, ...] = (1, 2), kill: bool = True, log=print) -> dict:
    load_before = os.getloadavg()
    data = {"command": command_line(), "machine": machine(), "load_average_before": load_before,
            "model": "shipped MG-Net (ONNX Runtime where installed)", "cohorts": {}}
    with tempfile.TemporaryDirectory(prefix="segrefine-bench-cohort-") as tmp:
        tmp = Path(tmp)
        hip = cohort_inputs(hippocampus, split=split)
        copies_dir = tmp / "fetal"
        copies_dir.mkdir()
        for i in range(copies):
            shutil.copy(fetal, copies_dir / f"fetal_{i:02d}.nii.gz")
        fet = cohort_inputs(copies_dir)
        data["cohorts"]["hippocampus"] = _cohort("hippocampus", hip, tmp, list(workers), log)
        data["cohorts"]["fetal"] = _cohort("fetal", fet, tmp, list(workers), log)
        for name in ("hippocampus", "fetal"):
            data["cohorts"][name]["projection_10000"] = projection(data["cohorts"][name])
        if kill and 2 in workers:
            row = _kill_run(fet, tmp / "fetal-kill", tmp / "fetal-w2")
            base = next(r for r in data["cohorts"]["fetal"]["rows"] if r["workers"] == 2)
            row["seconds_lost"] = row["run_seconds"] - base["run_seconds"]
            data["kill"] = row
            log(f"kill: {row['done']}/{len(fet)} done, {row['seconds_lost']:.1f} s lost")
    data["load_average_after"] = os.getloadavg()
    write_json(json_out, data)
    write_text(Path(json_out).with_suffix(".md"), table(data))
    return data


def table(data: dict) -> str:
    rows = []
    for name, c in data["cohorts"].items():
        for r in c["rows"]:
            peak = ", ".join(f"{m:.0f}" for m in r.get("peak_rss_mb_per_worker", [])) or "–"
            rows.append([f"{name} ({c['cases']})", r["setup"], f"{r['startup_seconds']:.1f}",
                         f"{r['run_seconds']:.1f}", f"{r['volumes_per_minute']:.1f}",
                         f"{r['ratio_vs_1_worker']:.2f}", f"{r['cpu_seconds_per_volume']:.2f}",
                         f"{r['cores_used']:.2f}", peak, f"{r['load_average_1min']:.1f}"])
    text = markdown_table(["cohort", "setup", "start-up s", "run s", "volumes/min", "× 1 worker",
                           "CPU s/volume", "cores used", "peak MB per worker", "load before"], rows)
    if "kill" in data:
        k = data["kill"]
        text += (f"\nKill run (fetal, 2 workers, one SIGKILLed {k['killed_after_seconds']:.1f} s in): "
                 f"{k['done']} of {data['cohorts']['fetal']['cases']}"
                 f" done, labels equal to the undisturbed run: {k['labels_equal_undisturbed']}, "
                 f"{k['run_seconds']:.1f} s ({k['seconds_lost']:+.1f} s against the undisturbed 2-worker run).\n")
    proj = [[name, f"{p['cpu_seconds_per_volume']:.2f}", f"{p['worker_hours']:.1f}",
             f"{p['cpu_per_volume_ratio_2_vs_1_worker']:.2f}", f"{p['workers_for_hours']} for {p['hours']:.0f} h",
             f"{p['memory_gb_per_worker']:.2f} / {p['memory_gb_total']:.1f}", f"{p['output_gb']:.1f}",
             f"{p['manifest_mb']:.0f}"]
            for name, p in ((n, c["projection_10000"]) for n, c in data["cohorts"].items())]
    text += "\n10,000 volumes on paper:\n\n" + markdown_table(
        ["volumes like", "CPU s/volume", "worker-hours", "CPU s/volume, 2 vs 1 worker", "workers (a core each)",
         "GB per worker / total", "outputs GB", "manifest MB"], proj)
    m = data["machine"]
    text += (f"\n{m['cpu']}, {m['cores']} cores, load average {data['load_average_before'][0]:.1f} before and "
             f"{data['load_average_after'][0]:.1f} after (shared with other jobs).\n")
    return text
