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
