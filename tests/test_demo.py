import os
import re
import subprocess
import sys

from conftest import REPO
from scipy import ndimage

from segrefine import io


def test_demo_without_shared_data_uses_the_phantom_model(tmp_path):
    """A fresh clone without ../shared: the shipped phantom model on a phantom it never saw
    reaches Dice >= 0.9, says which model it is, and its uncertainty marks the boundary."""
    env = dict(os.environ, SEGREFINE_SHARED_DATA="none", COLUMNS="200", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "segrefine.cli", "demo", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "make demo INPUT=" in text
    assert "segrefine demo: model phantom (mgnet_phantom.pt: MG-Net trained on Phantom) on a generated phantom" \
        in text
    assert "unlike the training data" not in text
    mean = float(re.search(r"mean Dice (\d\.\d+) over 1 cases", text).group(1))
    assert mean >= 0.9
    for name in ("phantom.nii.gz", "phantom_prob.nii.gz", "phantom_uncertainty.nii.gz", "demo.png"):
        assert (tmp_path / name).exists(), name
    label = io.load(tmp_path / "sample" / "phantom_label.nii.gz", finite=False).array > 0
    unc = io.load(tmp_path / "phantom_uncertainty.nii.gz").array
    boundary = label ^ ndimage.binary_erosion(label) | ndimage.binary_dilation(label) ^ label
    far = ~ndimage.binary_dilation(boundary, iterations=3)
    # meaningful: the heads disagree on the boundary, not inside or outside the structure
    assert unc[boundary].mean() > 100 * unc[far].mean()
    assert unc[boundary].mean() > 1e-4 and unc.max() > 0.01


def test_demo_names_the_hippocampus_model_and_warns_on_the_phantom(tmp_path):
    env = dict(os.environ, SEGREFINE_SHARED_DATA="none", COLUMNS="200", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "segrefine.cli", "demo", "--out", str(tmp_path),
                           "--model", "mgnet"], capture_output=True, text=True, env=env, cwd=REPO,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "model mgnet (mgnet_hippocampus.pt: MG-Net trained on Hippocampus)" in text
    assert "warning: phantom is unlike the training data of mgnet_hippocampus.pt" in text


def test_demo_on_shared_hippocampus(shared, tmp_path):
    from rich.console import Console

    from segrefine.demo import run_demo

    out = run_demo(input=None, labels=None, out=tmp_path, n_cases=2, console=Console(quiet=True))
    assert len(out["dice"]) == 2 and all(d > 0.6 for d in out["dice"].values())
    assert out["model"].endswith("mgnet_hippocampus.pt")
    assert (tmp_path / "demo.png").stat().st_size > 10_000
