"""CLI error paths of issue 13: the voxel cap before any voxel is read, a NaN affine refused
before the model runs, `suggest --json` into a bad folder, a float map given as scribbles.
Each ends with one short `error:` line and exit status 2, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli
from hostile import gzip_bomb, lying_header_gz, nan_affine_nifti

HIPPO = "hippocampus/imagesTr/hippocampus_004.nii.gz"


def _one_error_line(proc, *texts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def maps(shared, tmp_path):
    """The hippocampus case with a probability and an uncertainty map on its grid."""
    img = nib.load(shared / HIPPO)
    shape = img.shape
    prob = np.zeros(shape, np.float32)
    prob[10:25, 10:40, 10:30] = 0.9
    unc = (prob * (1 - prob)).astype(np.float32)
    out = {}
    for name, arr in (("prob", prob), ("unc", unc)):
        out[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, img.affine), out[name])
    return shared / HIPPO, out["prob"], out["unc"]


def test_hostile_headers_refused_by_every_reading_command(shared, tmp_path, maps):
    image, prob, unc = maps
    lie = tmp_path / "lie.nii.gz"
    lie.write_bytes(lying_header_gz())
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip_bomb())
    for path in (lie, bomb):
        t0 = time.perf_counter()
        proc = run_cli("suggest", "-i", path, "--prob", prob, "--uncertainty", unc,
                       "--json", tmp_path / "s.json")
        _one_error_line(proc, f"{path}: image of shape (512, 512, 1024) needs 2147483648 bytes")
        assert time.perf_counter() - t0 < 60
        proc = run_cli("refine", "-i", image, "--prob", path, "--scribbles", image,
                       "-o", tmp_path / "r.nii.gz")
        _one_error_line(proc, "more than the cap of 1073741824 bytes")
    for command in ("predict", "refine-gcn"):
        proc = run_cli(command, "-i", bomb, "-o", tmp_path / command)
        _one_error_line(proc, "bomb.nii.gz: image of shape (512, 512, 1024)")
        assert not (tmp_path / command).exists()
    # the cap is an option of every command
    proc = run_cli("--max-voxels", "1000", "suggest", "-i", image, "--prob", prob,
                   "--uncertainty", unc, "--json", tmp_path / "s.json")
    _one_error_line(proc, "has 71136 voxels, more than the cap of 1000", "--max-voxels")
    proc = run_cli("--max-voxels", "71136", "suggest", "-i", image, "--prob", prob,
                   "--uncertainty", unc, "--json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr


def test_predict_refuses_a_nan_affine_before_the_model(tmp_path):
    bad = nan_affine_nifti(tmp_path / "nan_affine.nii.gz", shape=(36, 50, 35))
    t0 = time.perf_counter()
    proc = run_cli("predict", "-i", bad, "-o", tmp_path / "out")
    _one_error_line(proc, f"{bad}: the voxel-to-world matrix (affine) holds NaN or inf values")
    assert not (tmp_path / "out").exists()  # refused while loading, before the model or output
    assert time.perf_counter() - t0 < 60


def test_suggest_json_folder_checked_before_the_model(maps, tmp_path):
    image, prob, unc = maps
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_cli("suggest", "-i", image, "--json", blocker / "out.json")  # no maps: MG-Net
    _one_error_line(proc, f"{blocker}: output path exists and is not a folder")
    (tmp_path / "dir.json").mkdir()
    proc = run_cli("suggest", "-i", image, "--json", tmp_path / "dir.json")
    _one_error_line(proc, "is a folder; give the JSON file's name")
    # a missing folder is created, as the other commands do
    proc = run_cli("suggest", "-i", image, "--prob", prob, "--uncertainty", unc,
                   "--json", tmp_path / "new" / "deeper" / "s.json")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "deeper" / "s.json").is_file()


def test_float_map_as_scribbles_gets_a_short_message(maps, tmp_path):
    image, prob, unc = maps
    proc = run_cli("refine", "-i", image, "--prob", prob, "--scribbles", unc,
                   "-o", tmp_path / "r.nii.gz")
    line = _one_error_line(proc, f"--scribbles {unc}: values must be 0 (none), 1 (foreground) or 2")
    assert len(line) < 400
    assert not (tmp_path / "r.nii.gz").exists()


def test_truncated_and_garbage_inputs(tmp_path):
    short = tmp_path / "short.nii.gz"
    short.write_bytes(lying_header_gz((64, 64, 64), np.int16))
    proc = run_cli("predict", "-i", short, "-o", tmp_path / "out")
    _one_error_line(proc, f"{short}: the file is cut short: its header announces 524288 bytes")
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"\x5c\x01\x00\x00" + bytes(100))
    proc = run_cli("predict", "-i", junk, "-o", tmp_path / "out")
    _one_error_line(proc, f"{junk}: not a readable NIfTI image")
    assert not Path(tmp_path / "out").exists()
