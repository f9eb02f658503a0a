import json

import torch
from conftest import run_cli

from segrefine.nets.checkpoint import load_network


def test_train_cli_few_steps_saves_a_self_describing_checkpoint(hippo, tmp_path):
    splits = json.loads((hippo / "splits.json").read_text())
    small = {"train": splits["train"][:3], "val": splits["val"][:2]}
    (tmp_path / "s.json").write_text(json.dumps(small))
    out = tmp_path / "unet.pt"
    proc = run_cli("train", "--dataset", hippo, "--arch", "unet", "--out", out, "--splits",
                   tmp_path / "s.json", "--epochs", "2", "--iterations", "2", "--batch-size", "4",
                   check=True)
    assert "val Dice" in proc.stderr
    net = load_network(out)  # no architecture or settings repeated
    assert net.config.arch == "unet"
    assert net.summary["train"]["patch"] == [48, 64]
    assert net.summary["train_cases"] == 3 and len(net.summary["history"]) >= 1
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 48, 64)).shape == (1, 1, 2, 48, 64)


def test_train_rejects_unknown_arch(hippo, tmp_path):
    proc = run_cli("train", "--dataset", hippo, "--arch", "resnet", "--out", tmp_path / "x.pt")
    assert proc.returncode == 2 and "--arch must be mgnet, unet or rnet" in proc.stderr
    assert not (tmp_path / "x.pt").exists()


def test_fit_rnet_a_few_steps(tmp_path):
    """R-Net's training loop (nets/rnet.py) on a few synthetic slices: it runs, keeps the best
    checkpoint, and the saved network loads back as an R-Net."""
    import numpy as np

    from segrefine.nets.checkpoint import load_network
    from segrefine.nets.rnet import fit_rnet

    rng = np.random.default_rng(0)
    ys = [(rng.random((20, 24)) > 0.5).astype(np.int64) for _ in range(4)]
    xs = [np.stack([y.astype(np.float32), y * 0.8, 1 - y * 0.5, y * 0.5]).astype(np.float32) for y in ys]
    out = tmp_path / "rnet.pt"
    summary = fit_rnet(xs, ys, xs[:2], ys[:2], out, epochs=2, iterations=2, batch_size=2, log=lambda *a: None)
    assert [h["epoch"] for h in summary["history"]][:1] == [1] and 0 <= summary["best_val_slice_dice"] <= 1
    net = load_network(out, arch="rnet")
    assert net.config.in_channels == 4
