"""Schemathesis against the app's own OpenAPI schema on the real server (loopback): requests
generated from every operation's schema, valid and invalid, half of them on real session ids
(one with maps, one without). No answer may be a 5xx, and every 4xx carries a JSON message.
Bounded: EXAMPLES per operation and a wall-clock budget for the whole run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from server_util import make_session, running_server

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HIPPO = "hippocampus/imagesTr/hippocampus_004.nii.gz"
EXAMPLES = 12  # per operation
BUDGET_S = 45  # the whole run; operations past it are left out (and reported)


def _problem(response) -> str | None:
    """None when the answer is acceptable: below 500, and a 4xx with a JSON ``detail``."""
    status = response.status_code
    if status >= 500:
        return f"{status} server error: {response.text[:300]}"
    if 400 <= status < 500:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            return f"{status} without a JSON body: {response.text[:200]!r}"
        if not isinstance(detail, str) or not detail.strip():
            return f"{status} without a message: {response.text[:200]!r}"
    return None


def _fuzz(op, url: str, sids: list[str], counts: dict, failures: list, statuses: dict) -> None:
    """EXAMPLES generated requests on ``op``; those with ``{sid}`` use a real id half the time."""
    uses_sid = "{sid}" in op.path and op.method.upper() != "DELETE"  # keep the real sessions

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(), real=st.sampled_from([None, None, None, *sids]))
    def run(case, real):
        if uses_sid and real is not None:
            case.path_parameters = {**(case.path_parameters or {}), "sid": real}
        response = case.call(base_url=url, timeout=60)
        counts[op.label] += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        problem = _problem(response)
        if problem:
            failures.append(f"{case.method} {case.formatted_path}: {problem}")

    run()


def test_schemathesis_no_5xx_and_every_4xx_says_why(shared, tmp_path, capsys):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    sids = [make_session(workspace, shared / HIPPO, method="graphcut"),  # with maps
            make_session(workspace, shared / HIPPO, method="graphcut", seed=1)]
    failures: list[str] = []
    counts: dict[str, int] = {}
    statuses: dict[int, int] = {}
    with running_server(workspace, shared) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        http = httpx.Client(base_url=url, timeout=60)
        sids.append(http.post("/api/sessions", json={"path": HIPPO}).json()["id"])  # no maps
        operations = [r.ok() for r in schema.get_all_operations()]
        assert len(operations) >= 20  # every route of routes.py is in the schema
        start = time.perf_counter()
        for op in operations:
            counts[op.label] = 0
            if time.perf_counter() - start < BUDGET_S:
                _fuzz(op, url, sids, counts, failures, statuses)
        wall = time.perf_counter() - start
        log = next(workspace.glob("server-*.log")).read_text()
    report = {"operations": len(operations), "requests": sum(counts.values()),
              "examples_per_operation": EXAMPLES, "wall_s": round(wall, 1),
              "operations_run": sum(1 for c in counts.values() if c),
              "statuses": {str(k): v for k, v in sorted(statuses.items())}, "failures": failures[:20]}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis.json").write_text(json.dumps(report, indent=1))
    with capsys.disabled():
        print(f"\nschemathesis: {report['requests']} requests on {report['operations_run']} of "
              f"{report['operations']} operations in {report['wall_s']} s")
    assert failures == []
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:3000]
    assert report["operations_run"] == report["operations"], counts
    # the generated requests reached the session verbs, not only the validation layer
    assert sum(v for k, v in statuses.items() if 200 <= k < 300) >= 20, statuses
