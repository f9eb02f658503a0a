"""Model cards (issue 13 §2): written by training, filled in for old checkpoints, listed by
``segrefine models``, and the one-line warning when an input is unlike a model's training data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import run_cli

from segrefine import io
from segrefine.datasets import split_cases
from segrefine.nets.card import input_differences, model_warning
from segrefine.nets.checkpoint import SHIPPED, load_network, read_checkpoint, shipped_model
from segrefine.phantom import make_phantom, write_phantom_dataset

CARD_KEYS = ("dataset", "modality", "licence", "label_names", "profile", "normalisation", "slice_axis",
             "refinement_preset", "training_command", "val_dice")
TINY = ("--epochs", "1", "--iterations", "2", "--batch-size", "2", "--threads", "1",
        "--channels", "8,16,32,64,64")


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom-data")
    write_phantom_dataset(root, cases=6, val=1, test=1, seed=3)
    return root


@pytest.fixture(scope="module")
def tiny_model(phantom_root, tmp_path_factory):
    """A few training steps with the real ``segrefine train`` (1 thread)."""
    out = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    run_cli("train", "--dataset", phantom_root, "--arch", "mgnet", "--out", out, *TINY,
            "--preset", "paper", check=True)
    return out


def test_phantom_dataset_is_decathlon_layout_and_excludes_the_demo_phantom(phantom_root):
    meta = json.loads((phantom_root / "dataset.json").read_text(encoding="utf-8"))
    assert meta["licence"] and meta["labels"] == {"0": "background", "1": "structure"}
    cases = split_cases(phantom_root, "train")
    assert [c.name for c in cases] == [f"phantom_{n:03d}" for n in range(4)]
    demo_image, _ = make_phantom()
    for case in cases + split_cases(phantom_root, "val") + split_cases(phantom_root, "test"):
        image = io.load(case.image).array
        label = io.load(case.label, finite=False).array
        assert image.shape == label.shape and 0 < label.mean() < 0.5
        assert image.shape != demo_image.shape or not np.allclose(image, demo_image)


def test_phantom_dataset_refuses_bad_sizes_and_a_used_folder(phantom_root, tmp_path):
    proc = run_cli("phantom-dataset", "--out", tmp_path / "d", "--cases", "4", "--val", "2", "--test", "2")
    assert proc.returncode == 2 and "need cases > val + test" in proc.stderr
    proc = run_cli("phantom-dataset", "--out", phantom_root)
    assert proc.returncode == 2 and "not empty" in proc.stderr


def test_training_writes_the_card(tiny_model, phantom_root):
    payload = read_checkpoint(tiny_model)
    card = payload["card"]
    for key in CARD_KEYS:
        assert card.get(key) not in (None, ""), key
    assert card["dataset"] == "Phantom" and card["label_names"] == {"0": "background", "1": "structure"}
    assert card["refinement_preset"] == "paper" and card["slice_axis"] == 2
    assert card["training_command"].startswith("segrefine train --dataset ")
    assert "--channels 8,16,32,64,64" in card["training_command"]
    assert card["val_dice"] == pytest.approx(payload["summary"]["best_val_dice"], abs=1e-4)
    assert card["profile"]["spacing"] == [[1.0, 1.0]] * 3 and card["profile"]["cases"] == 4
    assert card["parameters"] == sum(p.numel() for p in load_network(tiny_model).parameters())


def test_card_fills_in_an_old_checkpoint_without_touching_its_weights(tiny_model, phantom_root, tmp_path):
    old = tmp_path / "old.pt"
    payload = read_checkpoint(tiny_model)
    payload.pop("card")
    torch.save(payload, old)
    proc = run_cli("models", "--model", old)
    assert proc.returncode == 0 and "card: none" in proc.stdout
    proc = run_cli("card", old, "--dataset", phantom_root, "--command", "segrefine train --the-original")
    assert proc.returncode == 0, proc.stderr
    filled = read_checkpoint(old)
    assert filled["card"]["training_command"] == "segrefine train --the-original"
    assert filled["card"]["dataset"] == "Phantom" and filled["card"]["val_dice"] is not None
    assert filled["summary"] == payload["summary"] and filled["config"] == payload["config"]
    for key, value in payload["state_dict"].items():
        assert torch.equal(filled["state_dict"][key], value), key
    proc = run_cli("card", old, "--dataset", phantom_root, "--preset", "nonsense")
    assert proc.returncode == 2 and "--preset must be one of" in proc.stderr


def test_models_lists_every_shipped_model_with_its_card():
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    for name, file in SHIPPED.items():
        assert re.search(rf"^{name}\s+\S*{file}", proc.stdout, re.M), name
    assert "card: none" not in proc.stdout
    for label in ("dataset:", "modality:", "licence of the training data:", "label names:",
                  "voxel spacing (mm):", "intensity normalisation:", "slice axis:", "refinement preset:",
                  "training command:", "val Dice:"):
        assert proc.stdout.count(label) == len(SHIPPED), label
    assert "CC-BY-SA 4.0" in proc.stdout  # the hippocampus models' data licence


def test_shipped_models_total_at_most_30_mb():
    assert sum(shipped_model(n).stat().st_size for n in SHIPPED) <= 30e6


def test_a_differing_spacing_size_or_intensity_is_named():
    card = read_checkpoint(shipped_model("phantom"))["card"]
    image, _ = make_phantom()
    assert input_differences(card, io.Volume(image), 2) == []
    coarse = io.Volume(image, affine=np.diag([1.0, 1.0, 3.0, 1.0]))
    assert [d.split(" ")[0] for d in input_differences(card, coarse, 2)] == ["spacing"]
    big = io.Volume(np.tile(image, (4, 4, 1)))
    assert [d.split(" ")[0] for d in input_differences(card, big, 2)] == ["in-plane"]
    flat = io.Volume(image * 0.1 + 1000)  # sd/mean far below the training range
    assert input_differences(card, flat, 2)[0].startswith("intensity sd/mean")
    assert input_differences(card, io.Volume(image), 0)[0].startswith("slice axis 0")
    hip = load_network(shipped_model("mgnet"))
    text = model_warning(hip, io.Volume(image), 2, what="phantom")
    assert text.startswith("warning: phantom is unlike the training data of mgnet_hippocampus.pt")
    assert "\n" not in text


def test_hippocampus_model_warns_on_fetal_stacks_not_on_hippocampus_cases(shared):
    net = load_network(shipped_model("mgnet"))
    for name in ("a26_12", "b15_05"):
        text = model_warning(net, io.load(shared / "fetal_stacks" / "images" / f"{name}.nii.gz"), 2,
                             what=name)
        assert text and "spacing" in text and "in-plane size 192 x 192" in text, text
    names = json.loads((shared / "hippocampus" / "splits.json").read_text(encoding="utf-8"))["test"]
    for name in names:
        vol = io.load(shared / "hippocampus" / "imagesTr" / f"{name}.nii.gz")
        assert model_warning(net, vol, 2, what=name) is None, name


def _warnings(proc) -> list[str]:
    """The model-card warning lines of a command's output."""
    return [line for line in proc.stderr.splitlines()
            if line.startswith("warning:") and "unlike the training data" in line]


def test_predict_and_suggest_warn_in_one_line_on_a_fetal_stack(shared, tmp_path):
    fetal = shared / "fetal_stacks" / "images" / "b15_05.nii.gz"
    proc = run_cli("predict", "-i", fetal, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    (line,) = _warnings(proc)
    assert "b15_05.nii.gz is unlike the training data of mgnet_hippocampus.pt" in line and "spacing" in line
    proc = run_cli("suggest", "-i", fetal, "--json", tmp_path / "s.json")
    assert proc.returncode == 0 and len(_warnings(proc)) == 1, proc.stderr
    hip = shared / "hippocampus" / "imagesTr"
    name = json.loads((shared / "hippocampus" / "splits.json").read_text(encoding="utf-8"))["test"][0]
    proc = run_cli("predict", "-i", hip / f"{name}.nii.gz", "-o", tmp_path / "hip")
    assert proc.returncode == 0 and _warnings(proc) == [], proc.stderr


def test_refine_gcn_and_predict_with_the_phantom_model(tmp_path):
    image, _ = make_phantom()
    path = io.save(io.Volume(image), tmp_path / "phantom.nii.gz")
    # the hippocampus U-Net (refine-gcn's default) on the phantom: one warning naming the intensity
    proc = run_cli("refine-gcn", "-i", path, "-o", tmp_path / "gcn", "--samples", "2")
    assert proc.returncode == 0, proc.stderr
    (line,) = _warnings(proc)
    assert "unet_hippocampus.pt" in line and "intensity sd/mean" in line
    # the phantom model, by its shipped name: no warning
    proc = run_cli("predict", "-i", path, "-o", tmp_path / "pred", "--model", "phantom")
    assert proc.returncode == 0 and _warnings(proc) == [], proc.stderr


# ---------------------------------------------------------------------- the web app's "Run MG-Net"
def test_server_predict_answers_the_card_warning(shared, tmp_path):
    """The real server on loopback: the hippocampus MG-Net warns on a fetal stack, not on a
    hippocampus test case."""
    import httpx
    from server_util import running_server

    name = json.loads((shared / "hippocampus" / "splits.json").read_text(encoding="utf-8"))["test"][0]
    cases = {"fetal_stacks/images/b15_05.nii.gz": True, f"hippocampus/imagesTr/{name}.nii.gz": False}
    (tmp_path / "ws").mkdir()
    with running_server(tmp_path / "ws", shared) as url:
        for rel, warns in cases.items():
            sid = httpx.post(f"{url}/api/sessions", json={"path": rel}).json()["id"]
            r = httpx.post(f"{url}/api/sessions/{sid}/predict", timeout=120)
            assert r.status_code == 200, r.text
            (change,) = r.json()["changes"]
            if warns:
                assert "unlike the training data of mgnet_hippocampus.pt" in change["warning"]
                assert "spacing 0.74 x 0.74 x 3.00 mm" in change["warning"]
            else:
                assert change["warning"] is None, change["warning"]


def test_server_with_the_phantom_model_suggests_and_refines(tmp_path):
    """``segrefine serve --model phantom`` (the demo without shared data): no warning on the
    phantom, Dice >= 0.9, suggestions ranked, and a scribble refines the slice."""
    import base64

    import httpx
    from server_util import running_server

    from segrefine.metrics import dice

    image, label = make_phantom()
    root = tmp_path / "sample"
    root.mkdir()
    io.save(io.Volume(image), root / "phantom.nii.gz")
    (tmp_path / "ws").mkdir()
    with running_server(tmp_path / "ws", root, model="phantom") as url:
        sid = httpx.post(f"{url}/api/sessions", json={"path": "phantom.nii.gz"}).json()["id"]
        (change,) = httpx.post(f"{url}/api/sessions/{sid}/predict", timeout=120).json()["changes"]
        assert change["warning"] is None
        r = httpx.get(f"{url}/api/sessions/{sid}/arrays/mask")
        mask = np.frombuffer(r.content, np.uint8).reshape(image.shape, order="F")  # X-Order: F
        assert dice(mask > 0, label > 0) >= 0.9
        sugg = httpx.get(f"{url}/api/sessions/{sid}/suggestions").json()
        assert sugg["budget_slices"] > 0 and sugg["slices"][0]["expected_errors"] > 0
        nxt = httpx.post(f"{url}/api/sessions/{sid}/next").json()
        k, q = sugg["slices"][0]["index"], nxt["queue"]
        # the phantom model is sure of itself: either the top slice comes first, or the queue
        # stops at once because the volume's expected errors are worth less than the stop's Dice
        assert nxt["index"] == k or (q["stopped_early"] and q["remaining_dice"] < q["stop_dice"])
        # a background scribble across the structure's centre row: the refined slice gives it up
        rows = np.flatnonzero(label[:, :, k].any(1))
        row = int(rows[len(rows) // 2])
        cols = np.flatnonzero(label[row, :, k])
        points = [[row, int(c)] for c in cols]
        out = httpx.post(f"{url}/api/sessions/{sid}/scribbles",
                         json={"index": k, "label": 2, "points": points, "refine": True}).json()
        assert [c["kind"] for c in out["changes"]] == ["scribble", "refine"]
        sl = np.frombuffer(base64.b64decode(out["slice"]["mask"]), np.uint8).reshape(out["slice"]["shape"])
        assert not sl[row, cols].any() and sl.sum() < mask[:, :, k].sum()


def test_own_data_path_train_predict_serve(tiny_model, phantom_root, tmp_path):
    """docs/own-data.md end to end on the generated dataset: the trained checkpoint predicts
    without a warning (its own kind of data) and the web app runs it by path."""
    import httpx
    from server_util import running_server

    out = tmp_path / "pred"
    proc = run_cli("predict", "-i", phantom_root / "imagesTr", "-o", out, "--model", tiny_model)
    assert proc.returncode == 0 and _warnings(proc) == [], proc.stderr
    assert len(list(out.glob("*_uncertainty.nii.gz"))) == 6
    proc = run_cli("models", "--model", tiny_model)
    assert proc.returncode == 0 and "dataset: Phantom" in proc.stdout and "refinement preset: paper" in proc.stdout
    (tmp_path / "ws").mkdir()
    with running_server(tmp_path / "ws", phantom_root, model=str(tiny_model)) as url:
        sid = httpx.post(f"{url}/api/sessions", json={"path": "imagesTr/phantom_005.nii.gz"}).json()["id"]
        r = httpx.post(f"{url}/api/sessions/{sid}/predict", timeout=120)
        assert r.status_code == 200 and r.json()["changes"][0]["warning"] is None
        assert r.json()["status"]["has_maps"]


def test_serve_refuses_a_model_that_is_not_an_mgnet(tmp_path):
    proc = run_cli("serve", "--model", "unet", "--workspace", tmp_path / "ws", "--data-root", tmp_path)
    assert proc.returncode == 2 and "holds a unet network; the web app runs an MG-Net" in proc.stderr
    proc = run_cli("serve", "--model", tmp_path / "missing.pt", "--workspace", tmp_path / "ws")
    assert proc.returncode == 2 and "missing.pt: checkpoint not found" in proc.stderr
