import json
import os

import nibabel as nib
import numpy as np
import torch
import pytest
from conftest import run_cli

from segrefine import io
from segrefine.uncertainty import Predictor, binary_entropy


@pytest.fixture(scope="module")
def hippo_case(hippo):
    return hippo / "imagesTr" / "hippocampus_014.nii.gz", hippo / "labelsTr" / "hippocampus_014.nii.gz"


@pytest.mark.parametrize("method", ["mgnet", "unet", "mcdropout"])
def test_predictor_methods_share_one_result_type(hippo_case, method):
    vol = io.load(hippo_case[0])
    pred = Predictor(method, passes=3)(vol.array, keep_samples=True)
    assert pred.prob.shape == pred.label.shape == pred.uncertainty.shape == vol.shape
    assert pred.label.dtype == np.uint8 and pred.prob.dtype == np.float32
    assert np.array_equal(pred.label > 0, pred.prob > 0.5) or method != "unet"
    if method == "unet":
        assert pred.samples.shape[0] == 1
        assert np.allclose(pred.uncertainty, binary_entropy(pred.prob), atol=1e-5)
    else:
        n = 4 if method == "mgnet" else 3
        assert pred.samples.shape == (n, *vol.shape)
        assert np.allclose(pred.uncertainty, pred.samples.var(0), atol=1e-6)
        assert pred.uncertainty.max() <= 0.25 + 1e-6


def test_any_axis_and_odd_sizes(hippo_case):
    vol = io.load(hippo_case[0])
    p = Predictor("mgnet", axis=0)
    out = p(vol.array[:, 3:40, 1:30])  # odd in-plane size, slices along axis 0
    assert out.label.shape == (vol.shape[0], 37, 29)


def test_predict_cli_writes_three_files_with_affine(hippo_case, tmp_path, shared):
    fetal = shared / "fetal_stacks" / "images" / "a26_12.nii.gz"
    run_cli("predict", "-i", fetal, "-o", tmp_path, check=True)
    ref = nib.load(str(fetal))
    for suffix, dtype in (("", np.uint8), ("_prob", np.float32), ("_uncertainty", np.float32)):
        img = nib.load(str(tmp_path / f"a26_12{suffix}.nii.gz"))
        assert np.array_equal(img.affine, ref.affine)
        assert img.shape == ref.shape
        assert img.get_data_dtype() == dtype
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a26_12.nii.gz", "a26_12_prob.nii.gz", "a26_12_uncertainty.nii.gz"]


def test_predict_then_evaluate_cli(hippo_case, tmp_path):
    img, lab = hippo_case
    run_cli("predict", "-i", img, "-o", tmp_path / "pred", "--method", "mgnet", check=True)
    refs = tmp_path / "ref"
    refs.mkdir()
    os.symlink(lab, refs / lab.name)
    proc = run_cli("evaluate", "--pred", tmp_path / "pred", "--ref", refs, "--json", tmp_path / "s.json",
                   check=True)
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["cases"][0]["case"] == "hippocampus_014"
    assert 0.5 < data["mean"]["dice"] <= 1.0
    assert data["mean"]["assd"] > 0
    assert "hippocampus_014" in proc.stdout


def test_bad_inputs_give_one_line_errors_and_no_output(tmp_path, hippo_case):
    out = tmp_path / "out"
    cases = []
    cases.append((["-i", tmp_path / "missing.nii.gz"], "no such file"))
    txt = tmp_path / "x.txt"
    txt.write_text("x")
    cases.append((["-i", txt], "not an image file"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    cases.append((["-i", tmp_path / "flat.nii.gz"], "expected a 3D image, got 2D"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), str(tmp_path / "4d.nii.gz"))
    cases.append((["-i", tmp_path / "4d.nii.gz"], "got 4D"))
    arr = np.ones((8, 8, 8), np.float32)
    arr[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "inf.nii.gz"))
    cases.append((["-i", tmp_path / "inf.nii.gz"], "NaN or inf"))
    from segrefine.nets.checkpoint import shipped_model

    cases.append((["-i", hippo_case[0], "--method", "unet", "--model", shipped_model("mgnet")],
                  "holds a mgnet network, unet expected"))
    for args, message in cases:
        proc = run_cli("predict", *args, "-o", out)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_folder(tmp_path, hippo_case):
    if os.geteuid() == 0:  # root ignores permission bits; sysfs refuses even root
        ro = "/sys/kernel"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    proc = run_cli("predict", "-i", hippo_case[0], "-o", ro)
    assert proc.returncode == 2 and "output folder is not writable" in proc.stderr, proc.stderr


def test_output_path_is_a_file(tmp_path, hippo_case):
    f = tmp_path / "file"
    f.write_text("")
    proc = run_cli("predict", "-i", hippo_case[0], "-o", f)
    assert proc.returncode == 2 and "not a folder" in proc.stderr


def test_onnx_backend_matches_torch(hippo_case, tmp_path, monkeypatch):
    from segrefine.nets.inference import REWRITES
    from segrefine.uncertainty import OnnxOptions

    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path))
    vol = io.load(hippo_case[0])
    a = Predictor("mgnet", backend="torch")(vol.array)
    b = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(precision="fp32"))(vol.array)
    assert np.abs(a.prob - b.prob).max() < 1e-3
    assert np.abs(a.uncertainty - b.uncertainty).max() < 1e-3
    assert list(tmp_path.glob("onnx/mgnet-*.onnx"))
    # the rewritten inference graph (segrefine bench graph) computes the same on ONNX Runtime
    c = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(REWRITES, 48 * 48))(vol.array)
    assert np.abs(c.prob - b.prob).max() < 1e-3
    assert list(tmp_path.glob("onnx/mgnet-*-first+skips+head.onnx"))


def test_mc_dropout_on_onnx_samples_like_torch(hippo_case, tmp_path, monkeypatch):
    """MC dropout through ONNX Runtime keeps dropout on: its passes differ, and its mean and
    variance agree with MC dropout in PyTorch up to the sampling noise."""
    from segrefine.metrics import dice

    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path))
    vol = io.load(hippo_case[0])
    torch.manual_seed(0)
    a = Predictor("mcdropout", backend="torch", passes=10)(vol.array, keep_samples=True)
    b = Predictor("mcdropout", backend="onnx", passes=10)(vol.array, keep_samples=True)
    assert list(tmp_path.glob("onnx/unet-*-mc.onnx"))
    assert b.samples.shape == a.samples.shape and np.abs(b.samples[0] - b.samples[1]).max() > 0.1
    assert dice(a.label > 0, b.label > 0) > 0.95
    assert np.abs(a.prob - b.prob).mean() < 0.01
    assert 0.5 < b.uncertainty.sum() / a.uncertainty.sum() < 2.0


def test_shared_predictor_is_loaded_once_and_warmed(tmp_path, monkeypatch):
    from segrefine.uncertainty import shared_predictor, warm_up

    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path))
    shared_predictor.cache_clear()
    seconds = warm_up("mgnet", shape=(40, 40, 2))
    pred = shared_predictor("mgnet")
    assert seconds > 0 and pred is shared_predictor("mgnet") and pred.backend == "onnx"
    keys = set(pred.nets[0]._ort_sessions)  # (dropout, rewrites, threads, index, precision)
    precision = pred.onnx.precision_for(pred.nets[0])  # int8 where the CPU has VNNI
    assert keys == ({(False, (), 1, i, precision) for i in range(torch.get_num_threads())}
                    if torch.get_num_threads() > 1 else {(False, (), 1, 0, precision)})
    # the training graph, dropout off, a one-thread session per worker
    assert shared_predictor("mgnet", None, 0) is not pred
    shared_predictor.cache_clear()


def test_onnx_runs_hold_at_most_pixels_per_run(tmp_path, monkeypatch):
    """A run takes at most OnnxOptions().pixels_per_run pixels (2^16: one 192x192 slice; at
    2^17 3 slices; a larger slice alone), which bounds the memory ONNX Runtime keeps and what the first
    call on a new shape pays for (docs/benchmarks.md); with 2 workers the runs come in a
    multiple of 2 of about equal size, each on its own one-thread session, and a run left
    over runs on one session with torch's threads; the result does not depend on either
    (fp32 here: int8 rounds the activations, so a different split may move a probability
    by a quantisation step)."""
    import segrefine.nets.onnx as onnx_module
    from segrefine.uncertainty import OnnxOptions

    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path))
    assert OnnxOptions().pixels_per_run == 2**16
    runs = []
    run = onnx_module.run_onnx
    monkeypatch.setattr(onnx_module, "run_onnx", lambda net, x, **kw: runs.append((x.shape, kw)) or run(net, x, **kw))
    rng = np.random.default_rng(0)
    stack = rng.normal(100, 20, (192, 192, 7)).astype(np.float32)
    two = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(pixels_per_run=2**17, workers=2,
                                                               precision="fp32"))(stack)
    assert sorted(s[0] for s, _ in runs) == [1, 2, 2, 2] and all(s[2:] == (192, 192) for s, _ in runs)
    assert {kw["threads"] for _, kw in runs} == {1} and {kw["index"] for _, kw in runs} <= {0, 1}
    runs.clear()
    one = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(pixels_per_run=2**17, workers=1,
                                                               precision="fp32"))(stack)
    assert [s[0] for s, _ in runs] == [3, 2, 2]
    runs.clear()
    single = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(pixels_per_run=1, workers=1,
                                                                  precision="fp32"))(stack)
    assert [s[0] for s, _ in runs] == [1] * 7
    runs.clear()
    odd = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(workers=2, precision="fp32"))(stack)
    assert [s[0] for s, _ in runs] == [1] * 7  # the default: 6 on the two one-thread sessions, the 7th on all threads
    assert [kw.get("threads") for _, kw in runs].count(1) == 6 and runs[-1][1].get("threads") is None
    for pred in (one, single, odd):
        assert np.abs(two.prob - pred.prob).max() < 1e-4 and np.array_equal(two.label, pred.label)
    runs.clear()
    Predictor("mgnet", backend="onnx", onnx=OnnxOptions(workers=2))(rng.normal(100, 20, (400, 400, 1)).astype(np.float32))
    assert [s[0] for s, _ in runs] == [1]


def test_int8_quantises_the_deep_convolutions_close_to_fp32(hippo_case, tmp_path, monkeypatch):
    """The shipped MG-Net carries its int8 calibration: int8 runs its convolutions of level 1
    and deeper in int8 (QDQ, fused by ONNX Runtime), the first level and the head in fp32,
    and predicts close to fp32; ``auto`` picks int8 only on a CPU with VNNI and never for MC
    dropout; a model without calibration refuses int8."""
    from collections import Counter

    import onnx

    from segrefine.errors import InputError
    from segrefine.metrics import dice
    from segrefine.nets.onnx import export
    from segrefine.nets.quantize import cpu_has_vnni
    from segrefine.uncertainty import OnnxOptions

    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path))
    vol = io.load(hippo_case[0])
    fp = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(precision="fp32"))(vol.array)
    q = Predictor("mgnet", backend="onnx", onnx=OnnxOptions(precision="int8"))
    net = q.nets[0]
    nodes = net.int8["nodes"]
    assert len(nodes) == 14 and not any(n.startswith(("/down.0/", f"/dec.{net.levels - 2}/", "/head")) for n in nodes)
    p = q(vol.array)
    [path] = tmp_path.glob("onnx/mgnet-*-int8-*.onnx")
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    quantised = {n.name for n in graph.node if n.op_type == "Conv"
                 and any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    assert quantised == set(nodes)
    assert dice(p.label > 0, fp.label > 0) > 0.97 and np.abs(p.prob - fp.prob).mean() < 0.01
    assert OnnxOptions().precision_for(net) == ("int8" if cpu_has_vnni() else "fp32")
    assert OnnxOptions().precision_for(net, dropout=True) == "fp32"
    unet = Predictor("unet", backend="onnx")
    assert OnnxOptions().precision_for(unet.nets[0]) == "fp32"
    with pytest.raises(InputError, match="unet_hippocampus.pt has none"):
        Predictor("unet", backend="onnx", onnx=OnnxOptions(precision="int8"))
    with pytest.raises(InputError, match="no int8 calibration"):  # below the Predictor's check
        export(unet.nets[0], precision="int8")


def test_predict_precision_option(hippo_case, tmp_path):
    """--precision fp32 gives the fp32 result on any CPU; bad values and int8 without a
    calibration are refused with one line, before anything is written."""
    from segrefine.uncertainty import OnnxOptions

    out = tmp_path / "fp32"
    run_cli("predict", "-i", hippo_case[0], "-o", out, "--precision", "fp32", check=True)
    ref = Predictor("mgnet", onnx=OnnxOptions(precision="fp32"))(io.load(hippo_case[0]).array)
    assert np.array_equal(io.load(out / "hippocampus_014.nii.gz").array, ref.label)
    bad = run_cli("predict", "-i", hippo_case[0], "-o", tmp_path / "a", "--precision", "bf16")
    assert bad.returncode == 2 and "--precision must be one of auto, fp32, int8" in bad.stderr
    bad = run_cli("predict", "-i", hippo_case[0], "-o", tmp_path / "b", "--precision", "int8", "--method", "unet")
    assert bad.returncode == 2 and "--precision int8 needs" in bad.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_calibrate_cli_writes_a_copy_with_the_ranges(hippo, tmp_path):
    from segrefine.nets.checkpoint import load_network, read_checkpoint, shipped_model

    out = tmp_path / "mg.pt"
    proc = run_cli("calibrate", "--model", "mgnet", "--dataset", hippo, "--cases", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    payload, shipped = read_checkpoint(out), read_checkpoint(shipped_model("mgnet"))
    assert payload["int8"]["volumes"] == 1 and len(payload["int8"]["nodes"]) == 14
    assert all(lo <= hi for lo, hi in payload["int8"]["ranges"].values())
    assert all(torch.equal(v, shipped["state_dict"][k]) for k, v in payload["state_dict"].items())
    assert load_network(out).int8 == payload["int8"]
    bad = run_cli("calibrate", "--model", "mgnet", "--dataset", hippo, "--cases", "0", "--out", tmp_path / "x.pt")
    assert bad.returncode == 2 and "--cases must be at least 1" in bad.stderr and not (tmp_path / "x.pt").exists()
