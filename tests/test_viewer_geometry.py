"""The viewer's pure JavaScript (geometry.js: file <-> NiiVue voxel order; draw.js; queue.js), run by node."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "web"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_geometry_matches_niivue_reordering():
    proc = subprocess.run(["node", "--test", "viewer/"], cwd=WEB, capture_output=True, text=True,
                          check=False,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = re.search(r"^# pass (\d+)$", proc.stdout, re.M)
    assert passed and int(passed.group(1)) >= 5 and "# fail 0" in proc.stdout, proc.stdout
