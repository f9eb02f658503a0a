"""Schemathesis hooks of tests/test_server_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

- ``{sid}`` path parameters are every other time one of the real sessions named in
  ``SEGREFINE_FUZZ_SIDS`` (except for DELETE, which would end them), so the generated
  requests reach the session verbs and not only the id check;
- the ``error_has_message`` check: a 4xx answer carries a JSON ``detail`` message.
"""

from __future__ import annotations

import itertools
import os

import schemathesis

SIDS = [s for s in os.environ.get("SEGREFINE_FUZZ_SIDS", "").split(",") if s]
_turn = itertools.count()


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    if not (SIDS and path_parameters and "sid" in path_parameters):
        return path_parameters
    if ctx.operation is not None and ctx.operation.method.upper() == "DELETE":
        return path_parameters
    n = next(_turn)
    if n % 2:
        path_parameters = {**path_parameters, "sid": SIDS[(n // 2) % len(SIDS)]}
    return path_parameters


@schemathesis.check
def error_has_message(ctx, response, case):
    if 400 <= response.status_code < 500:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if not isinstance(detail, str) or not detail.strip():
            raise AssertionError(f"{response.status_code} answer without a JSON detail message: "
                                 f"{response.text[:200]!r}")
