"""Cohort mode on Dask distributed (issue 16): real hippocampus cases, real worker processes.

One LocalCluster of 2 worker processes (one thread each) serves most tests through
the ``--scheduler`` path; one test starts its own through ``--workers 2``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from conftest import REPO, run_cli
from server_util import free_port

from segrefine import io
from segrefine.cli.cohort import cohort_mode
from segrefine.cohort.engine import run_cohort
from segrefine.cohort.tasks import cohort_inputs, minority_from_entropy
from segrefine.errors import InputError
from segrefine.uncertainty import binary_entropy

CASES = ["hippocampus_014", "hippocampus_015", "hippocampus_017", "hippocampus_034", "hippocampus_051",
         "hippocampus_056"]


@pytest.fixture(scope="module")
def folder(hippo, tmp_path_factory):
    """Six real hippocampus test images in a folder of their own."""
    path = tmp_path_factory.mktemp("cohort_images")
    for case in CASES:
        shutil.copy(hippo / "imagesTr" / f"{case}.nii.gz", path)
    return path


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, scheduler_kwargs={"dashboard": False}) as c:
        yield c


@pytest.fixture(scope="module")
def single(folder, tmp_path_factory):
    """Today's single-process ``segrefine predict`` over the folder: the reference outputs."""
    out = tmp_path_factory.mktemp("single")
    run_cli("predict", "-i", folder, "-o", out, check=True)
    return out


def _arrays(out, case, suffixes=("", "_prob", "_uncertainty")):
    return [np.asarray(io.load(out / f"{case}{s}.nii.gz", finite=False).array) for s in suffixes]


def _assert_same_outputs(out, ref, cases):
    for case in cases:
        label, prob, unc = _arrays(out, case)
        rlabel, rprob, runc = _arrays(ref, case)
        assert np.array_equal(label, rlabel), case
        np.testing.assert_allclose(prob, rprob, atol=1e-5)
        np.testing.assert_allclose(unc, runc, atol=1e-5)


def test_inputs_folder_list_file_and_decathlon(hippo, folder, tmp_path):
    assert [c.name for c in cohort_inputs(folder)] == CASES
    listing = tmp_path / "cases.txt"
    listing.write_text(f"# two cases\n{folder / CASES[1]}.nii.gz\n\n../{folder.name}/{CASES[0]}.nii.gz\n",
                       encoding="utf-8")
    assert folder.parent == tmp_path.parent  # so the relative line names the same file
    assert [c.name for c in cohort_inputs(listing)] == [CASES[1], CASES[0]]
    test = cohort_inputs(hippo, split="test")
    assert len(test) == 40 and len({c.name for c in test}) == 40
    with pytest.raises(InputError, match="needs a Decathlon dataset"):
        cohort_inputs(folder, split="test")
    twice = tmp_path / "twice.txt"
    (tmp_path / "copy").mkdir()
    shutil.copy(folder / f"{CASES[0]}.nii.gz", tmp_path / "copy")
    twice.write_text(f"{folder / CASES[0]}.nii.gz\ncopy/{CASES[0]}.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match="two inputs give the case name"):
        cohort_inputs(twice)


def test_workers_cli_equals_single_process_and_fills_the_manifest(folder, single, tmp_path):
    out = tmp_path / "dist"
    proc = run_cli("predict", "-i", folder, "-o", out, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "6 done" in proc.stderr and "0 failed" in proc.stderr
    _assert_same_outputs(out, single, CASES)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    records = manifest["cases"]
    assert sorted(records) == CASES and manifest["workers"] == 2
    assert {r["status"] for r in records.values()} == {"done"}
    assert len({r["worker"] for r in records.values()}) == 2  # both workers took cases
    assert {r["model_loads"] for r in records.values()} == {1}  # loaded once per worker, not per case
    for case, r in records.items():
        label, prob, _ = _arrays(out, case)
        assert r["expected_gain"] == pytest.approx(float(np.minimum(prob, 1 - prob).sum()), rel=1e-6)
        assert r["foreground_voxels"] == int((label > 0).sum())
        assert r["seconds"] > 0 and r["error"] is None
        top = [k for k, _ in r["slices"]]
        per_slice = np.minimum(prob, 1 - prob).sum(axis=(0, 1))
        assert top[0] == int(np.argmax(per_slice))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_resume_redoes_only_the_deleted_outputs(folder, single, cluster, tmp_path):
    out = tmp_path / "resume"
    run_cohort("predict", cohort_inputs(folder), out, {"method": "mgnet"}, scheduler=cluster.scheduler_address)
    (out / f"{CASES[0]}.nii.gz").unlink()
    (out / f"{CASES[3]}_prob.nii.gz").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    manifest = run_cohort("predict", cohort_inputs(folder), out, {"method": "mgnet"},
                          scheduler=cluster.scheduler_address)
    redone = sorted(c for c, r in manifest["cases"].items() if not r["resumed"])
    assert redone == [CASES[0], CASES[3]]
    for name, mtime in kept.items():
        if not name.startswith((CASES[0], CASES[3])):
            assert (out / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    _assert_same_outputs(out, single, CASES)
    again = run_cohort("predict", cohort_inputs(folder), out, {"method": "mgnet"}, overwrite=True,
                       scheduler=cluster.scheduler_address)
    assert not any(r["resumed"] for r in again["cases"].values())


def test_a_worker_killed_during_the_run_loses_nothing(folder, single, cluster, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(3):  # 18 cases: the workers are busy when one of them dies
        for case in CASES:
            os.symlink(folder / f"{case}.nii.gz", many / f"{case}_{i}.nii.gz")
    state = {}

    def on_client(client):
        state["pids"] = sorted(client.run(os.getpid).values())

    def on_record(rec):
        if "killed" not in state:
            victim = next(p for p in state["pids"] if p != rec["pid"])  # busy with another case now
            os.kill(victim, signal.SIGKILL)
            state["killed"] = victim

    manifest = run_cohort("predict", cohort_inputs(many), tmp_path / "out", {"method": "mgnet"},
                          scheduler=cluster.scheduler_address, on_client=on_client, on_record=on_record)
    assert state["killed"] in state["pids"]
    records = manifest["cases"]
    assert len(records) == 18 and {r["status"] for r in records.values()} == {"done"}
    assert state["killed"] not in {r["pid"] for r in records.values()}  # it finished nothing: all went elsewhere
    out = tmp_path / "out"
    for case in records:
        base = case.rsplit("_", 1)[0]
        label, prob, unc = _arrays(out, case)
        rlabel = _arrays(single, base, ("",))[0]
        assert np.array_equal(label, rlabel), case
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
    # the nanny restarted the killed worker: the cluster has two workers again
    deadline = time.monotonic() + 60
    while len(cluster.scheduler_info["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(cluster.scheduler_info["workers"]) == 2


def test_a_corrupt_file_is_recorded_failed_and_the_others_go_on(folder, single, cluster, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for case in CASES[:2]:
        shutil.copy(folder / f"{case}.nii.gz", bad)
    data = (folder / f"{CASES[2]}.nii.gz").read_bytes()
    (bad / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (bad / "text.nii.gz").write_text("not an image", encoding="utf-8")
    proc = run_cli("predict", "-i", bad, "-o", tmp_path / "out", "--scheduler", cluster.scheduler_address)
    assert proc.returncode == 1, proc.stderr
    assert "2 done" in proc.stderr and "2 failed" in proc.stderr
    records = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["cases"]
    for name in ("truncated", "text"):
        r = records[name]
        assert r["status"] == "failed" and f"{name}.nii.gz" in r["error"] and "\n" not in r["error"]
        assert not (tmp_path / "out" / f"{name}.nii.gz").exists()
    _assert_same_outputs(tmp_path / "out", single, CASES[:2])


def test_suggest_and_refine_gcn_cohorts(folder, cluster, tmp_path):
    addr = cluster.scheduler_address
    two = tmp_path / "two"
    two.mkdir()
    for case in CASES[:2]:
        shutil.copy(folder / f"{case}.nii.gz", two)
    run_cli("suggest", "-i", two, "-o", tmp_path / "sug", "--scheduler", addr, check=True)
    case = CASES[1]
    run_cli("suggest", "-i", two / f"{case}.nii.gz", "--json", tmp_path / f"{case}.json", check=True)
    one = json.loads((tmp_path / f"{case}.json").read_text(encoding="utf-8"))
    many = json.loads((tmp_path / "sug" / f"{case}.json").read_text(encoding="utf-8"))
    assert [s["index"] for s in many["slices"]] == [s["index"] for s in one["slices"]]
    assert many["total_expected_errors"] == pytest.approx(one["total_expected_errors"], rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "sug").glob("*.json")) == [f"{c}.json" for c in CASES[:2]] + [
        "manifest.json"]
    single = tmp_path / "gcn_in"
    single.mkdir()
    shutil.copy(folder / f"{case}.nii.gz", single)
    run_cli("refine-gcn", "-i", single, "--passes", "2", "--nodes", "reduced", "--scheduler", addr,
            "-o", tmp_path / "gcn1", check=True)
    options = {"models": [], "passes": 2, "tau": 0.8, "margin": 0, "nodes": "reduced", "max_nodes": 2_000_000,
               "graph": "ours", "relabel": None, "crf": False}  # what the command line above sends
    run_cohort("refine-gcn", cohort_inputs(single), tmp_path / "gcn2", options, scheduler=addr)
    a = _arrays(tmp_path / "gcn1", case, ("", "_entropy"))  # seeded per case: the same passes on any worker
    b = _arrays(tmp_path / "gcn2", case, ("", "_entropy"))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    q = np.linspace(0, 0.5, 101, dtype=np.float32)
    np.testing.assert_allclose(minority_from_entropy(binary_entropy(q)), q, atol=2e-4)


def test_queue_ranks_by_expected_gain_and_serve_lists_it(folder, single, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(single, out)  # a plain predict folder (no manifest): ranked from its maps
    proc = run_cli("queue", out, "--top", "3")
    assert proc.returncode == 0, proc.stderr
    queue = json.loads((out / "queue.json").read_text(encoding="utf-8"))
    gains = {c: float(np.minimum(p, 1 - p).sum()) for c in CASES for p in [_arrays(out, c, ("_prob",))[0]]}
    assert [c["case"] for c in queue["cases"]] == sorted(CASES, key=lambda c: -gains[c])
    assert queue["cases"][0]["expected_gain"] == pytest.approx(max(gains.values()), rel=1e-6)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("queue", empty)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr and "Traceback" not in proc.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "segrefine.cli", "serve", "--data-root", folder, "--cohort",
                               out, "--workspace", tmp_path / "ws", "--port", str(port)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/cohort?limit=2", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, "server did not start"
                time.sleep(0.3)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] == 6 and [c["case"] for c in page["cases"]] == [c["case"] for c in queue["cases"][:2]]
        assert page["cases"][0]["slices"][0] == queue["cases"][0]["slices"][0]
        rest = httpx.get(f"http://127.0.0.1:{port}/api/cohort?offset=5", timeout=5).json()
        assert [c["rank"] for c in rest["cases"]] == [6]
        assert httpx.get(f"http://127.0.0.1:{port}/api/cohort?limit=0", timeout=5).status_code == 422
    finally:
        server.kill()
        server.wait(timeout=10)


def test_cohort_options_are_checked(folder, tmp_path):
    proc = run_cli("predict", "-i", folder, "-o", tmp_path, "--scheduler", "tcp://127.0.0.1:1")
    assert proc.returncode == 2 and "cannot connect" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("predict", "-i", folder, "-o", tmp_path / "o", "--workers", "2", "--model", tmp_path / "no.pt")
    assert proc.returncode == 2 and "no.pt: checkpoint not found" in proc.stderr  # before any worker starts
    assert "Traceback" not in proc.stderr
    with pytest.raises(InputError, match="exclude each other"):
        cohort_mode(2, "tcp://127.0.0.1:1")
    with pytest.raises(InputError, match="go with --workers"):
        cohort_mode(None, None, split="test")
    with pytest.raises(InputError, match="at least 1"):
        cohort_mode(0, None)
    assert cohort_mode(None, None) is False and cohort_mode(2, None) is True
