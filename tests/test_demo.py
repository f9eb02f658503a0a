import os
import subprocess
import sys

from conftest import REPO


def test_demo_without_shared_data_runs_on_the_generated_phantom(tmp_path):
    env = dict(os.environ, SEGREFINE_SHARED_DATA="none", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "segrefine.cli", "demo", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "not meant for it" in text and "make demo INPUT=" in text
    assert "Dice" in text
    for name in ("phantom.nii.gz", "phantom_prob.nii.gz", "phantom_uncertainty.nii.gz", "demo.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "sample" / "phantom.nii.gz").exists()


def test_demo_on_shared_hippocampus(shared, tmp_path):
    from rich.console import Console

    from segrefine.demo import run_demo

    out = run_demo(input=None, labels=None, out=tmp_path, n_cases=2, console=Console(quiet=True))
    assert len(out["dice"]) == 2 and all(d > 0.6 for d in out["dice"].values())
    assert (tmp_path / "demo.png").stat().st_size > 10_000
