import os
import subprocess
import sys
from pathlib import Path

import pytest

from segrefine.paths import shared_data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent: tests on real data skipped")
    return path


@pytest.fixture(scope="session")
def hippo(shared) -> Path:
    return shared / "hippocampus"


def run_cli(*args, check=False):
    """Run the real ``segrefine`` console entry point in a subprocess."""
    env = dict(os.environ, COLUMNS="200", PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-m", "segrefine.cli", *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8", errors="replace",
                          env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"segrefine {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc
