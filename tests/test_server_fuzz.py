"""Schemathesis against the app's own OpenAPI schema on the real server (loopback).

The Schemathesis CLI (``st run``) tests every operation of ``/openapi.json`` in three
phases: the schema's examples, *coverage* (boundary and just-invalid values of every
parameter: the longest strings, the largest numbers, wrong types, missing fields) and
*fuzzing* (Hypothesis-generated requests, valid and invalid), deterministically, with
``EXAMPLES`` per operation and a time budget. Every other ``{sid}`` is a real session
(``tests/schemathesis_hooks.py``). Checks: no 5xx (``not_a_server_error``) and every 4xx
carries a JSON message (``error_has_message``, in the hooks module)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from server_util import make_session, running_server

pytest.importorskip("schemathesis")

TESTS = Path(__file__).resolve().parent
ARTIFACTS = TESTS / "artifacts"
HIPPO = "hippocampus/imagesTr/hippocampus_004.nii.gz"
EXAMPLES = int(os.environ.get("SEGREFINE_FUZZ_EXAMPLES", "10"))  # per operation and phase
MAX_TIME_S = 30  # Schemathesis's own budget for the run (the fuzzing phase stops there)


def test_schemathesis_no_5xx_and_every_4xx_says_why(shared, tmp_path, capsys):
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.skip("the Schemathesis CLI (st) is not installed next to this Python")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    sids = [make_session(workspace, shared / HIPPO, method="graphcut")]  # with maps
    with running_server(workspace, shared) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            sids.append(http.post("/api/sessions", json={"path": HIPPO}).json()["id"])  # no maps
            n_operations = len(http.get("/openapi.json").json()["paths"])
        env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
                   SEGREFINE_FUZZ_SIDS=",".join(sids), PYTHONPATH=str(TESTS), NO_COLOR="1",
                   COLUMNS="200")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(st), "run", f"{url}/openapi.json", "--checks", "not_a_server_error,error_has_message",
             "--phases", "examples,coverage,fuzzing", "--max-examples", str(EXAMPLES),
             "--generation-deterministic", "--max-time", str(MAX_TIME_S), "--workers", "1"],
            capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, cwd=tmp_path,
            timeout=MAX_TIME_S + 120, check=False)
        wall = time.perf_counter() - t0
        log = next(workspace.glob("server-*.log")).read_text(encoding="utf-8", errors="replace")
    out = proc.stdout + proc.stderr
    generated = re.search(r"(\d+) generated", out)
    tested = re.search(r"Tested: (\d+)", out)
    report = {"exit_code": proc.returncode, "wall_s": round(wall, 1), "examples": EXAMPLES,
              "test_cases": int(generated.group(1)) if generated else None,
              "operations_tested": int(tested.group(1)) if tested else None,
              "operations_in_schema": n_operations}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (ARTIFACTS / "schemathesis.txt").write_text(out, encoding="utf-8")
    with capsys.disabled():
        print(f"\nschemathesis: {report}")
    assert proc.returncode == 0, out[-6000:]
    assert report["test_cases"] and report["test_cases"] >= 200, out[-3000:]
    assert "Traceback" not in log, log[log.find("Traceback") - 300:][:3000]
    # the generated requests reached the session verbs on real sessions, not only the id check
    reached = {m.group(1) for sid in sids
               for m in re.finditer(rf'"\w+ /api/sessions/{sid}(/[a-z/-]+)[^"]* HTTP/1.1" 2\d\d', log)}
    assert len(reached) >= 3, reached
