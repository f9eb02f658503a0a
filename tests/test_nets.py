import numpy as np
import pytest
import torch

from segrefine.errors import InputError
from segrefine.nets.checkpoint import load_network, save_checkpoint
from segrefine.nets.segnet import GroupedUNet, count_parameters, group_concat, mgnet_config, unet_config
from segrefine.nets.train import dice_loss


def test_shapes_and_parameter_counts():
    mg, un = GroupedUNet(mgnet_config()), GroupedUNet(unet_config())
    x = torch.randn(2, 1, 32, 48)
    assert mg(x).shape == (2, 4, 2, 32, 48)
    assert un(x).shape == (2, 1, 2, 32, 48)
    # the paper's 4.86 M (docs/models.md)
    assert count_parameters(mg) == 4_856_200
    assert count_parameters(un) == 4_979_906


def test_mgnet_is_the_published_configuration():
    """UGIR's mgnet.cfg and MGNet.py: 64-128-256-512-512 channels in 4-4-4-4-1 groups, group
    norm, dropout 0.1-0.5 after the encoder blocks only, leaky ReLU after the transposed
    convolutions, a grouped 3x3 output convolution."""
    from segrefine.nets.segnet import NetConfig

    cfg = mgnet_config(norm="group")
    assert cfg.channels == (64, 128, 256, 512, 512) and cfg.groups == (4, 4, 4, 4, 1)
    # the default (the shipped network) differs only in the normalisation, same parameter count
    shipped = mgnet_config()
    assert shipped.norm == "instance" and shipped == mgnet_config(norm="instance")
    assert count_parameters(GroupedUNet(shipped)) == count_parameters(GroupedUNet(cfg)) == 4_856_200
    net = GroupedUNet(cfg)
    assert [m.p for m in net.drop] == [0.1, 0.2, 0.3, 0.4, 0.5]
    in_blocks = [m for b in list(net.down) + list(net.dec) for m in b.modules()
                 if isinstance(m, torch.nn.Dropout)]
    assert in_blocks == []  # no dropout inside blocks, none in the decoder
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and not any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
    assert [n.num_groups for n in norms[:2]] == [4, 4]
    assert all(isinstance(u[1], torch.nn.LeakyReLU) for u in net.up)
    assert net.head.kernel_size == (3, 3) and net.head.groups == 4
    # the group-by-group head equals PyTorch's grouped convolution
    x = torch.randn(2, 64, 8, 8)
    ref = torch.nn.functional.conv2d(x, net.head.weight, net.head.bias, padding=1, groups=4)
    assert torch.allclose(net.head(x), ref, atol=1e-5)
    # checkpoints saved before these options existed rebuild the first shipped layout
    old = NetConfig.from_dict({"arch": "mgnet", "channels": [64, 128, 256, 512, 256],
                               "groups": [4, 4, 4, 4, 1], "heads": 4, "dropout": [0.1, 0.2, 0.3, 0.3, 0.3]})
    assert old.norm == "instance" and old.dropout_at == "block" and old.head_kernel == 1
    assert count_parameters(GroupedUNet(old)) == 2_822_024


def test_group_concat_is_groupwise():
    a = torch.arange(4).float().reshape(1, 4, 1, 1)  # groups [0 1] [2 3]
    b = torch.arange(10, 14).float().reshape(1, 4, 1, 1)  # groups [10 11] [12 13]
    out = group_concat(a, b, 2).flatten().tolist()
    assert out == [0, 1, 10, 11, 2, 3, 12, 13]
    assert group_concat(a, b, 1).flatten().tolist() == [0, 1, 2, 3, 10, 11, 12, 13]


def _perturb_group(net, group, x):
    """Outputs for x, and for x with only input copy ``group`` changed."""
    copies = x.repeat(1, 4, 1, 1)
    changed = copies.clone()
    changed[:, group] += torch.randn_like(changed[:, group])
    net.in_groups = 1  # feed the four copies directly
    with torch.no_grad():
        return net(copies), net(changed)


def test_groups_are_independent_except_at_the_lowest_level():
    torch.manual_seed(0)
    net = GroupedUNet(mgnet_config()).eval()
    x = torch.randn(1, 1, 32, 32)
    # with the lowest (ungrouped) level silenced, group 1's input only reaches head 1
    lowest = net.down[-1]
    handle = lowest.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    a, b = _perturb_group(net, 1, x)
    handle.remove()
    diff = (a - b).abs().amax(dim=(0, 2, 3, 4))
    assert diff[1] > 1e-3
    assert torch.all(diff[[0, 2, 3]] == 0)
    # with it active, the sub-networks communicate there: every head changes
    a, b = _perturb_group(net, 1, x)
    assert torch.all((a - b).abs().amax(dim=(0, 2, 3, 4)) > 1e-6)


def test_dice_loss_averages_heads():
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    y[:, 2:6, 2:6] = 1
    perfect = torch.stack([(y == 0).float(), (y == 1).float()], 1)[:, None] * 40
    wrong = torch.stack([(y == 1).float(), (y == 0).float()], 1)[:, None] * 40
    assert dice_loss(perfect, y) < 1e-3
    assert dice_loss(torch.cat([perfect, wrong], 1), y) == pytest.approx(0.5, abs=1e-3)


def test_checkpoint_roundtrip_and_wrong_arch(tmp_path):
    net = GroupedUNet(mgnet_config()).eval()
    path = save_checkpoint(net, tmp_path / "m.pt", {"note": 1})
    back = load_network(path, arch="mgnet")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), back(x), atol=5e-2)
    with pytest.raises(InputError, match="holds a mgnet network, unet expected"):
        load_network(path, arch="unet")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a segrefine checkpoint"):
        load_network(tmp_path / "junk.pt")
    assert np.isclose(back.summary["note"], 1)


def test_training_ablation_options():
    from segrefine.nets.train import _config_for

    cfg = _config_for("mgnet", 2, {"dropout_at": "block", "dropout": [0.1, 0.2, 0.3, 0.3, 0.3]})
    assert cfg.dropout_at == "block" and cfg.dropout == (0.1, 0.2, 0.3, 0.3, 0.3)
    assert cfg.channels == mgnet_config().channels and cfg.norm == "instance"
    net = GroupedUNet(cfg)
    assert all(isinstance(m, torch.nn.Identity) for m in net.drop)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 9  # 5 encoder + 4 decoder blocks
    assert _config_for("mgnet", 2) == mgnet_config()


def test_train_cli_refuses_bad_ablation_options(tmp_path):
    from conftest import run_cli

    for args, msg in ((["--dropout", "0.1,0.2"], "--dropout must be 5"),
                      (["--dropout-at", "decoder"], "--dropout-at must be"),
                      (["--arch", "unet", "--dropout-at", "block"], "apply to --arch mgnet only")):
        proc = run_cli("train", "--dataset", tmp_path, "--out", tmp_path / "m.pt", *args)
        assert proc.returncode != 0 and msg in proc.stderr, proc.stderr


@pytest.mark.parametrize("config", [mgnet_config(), mgnet_config(norm="group"), unet_config()],
                         ids=["mgnet", "mgnet-group-norm", "unet"])
def test_inference_graph_computes_the_same_function(config):
    from segrefine.nets.inference import REWRITES, InferenceGraph

    torch.manual_seed(0)
    net = GroupedUNet(config).eval()
    for p in net.parameters():  # away from the initial values (biases 0, norm weights 1)
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 1, 32, 48)
    with torch.inference_mode():
        ref = net(x)
        for rewrites in [REWRITES] + [(r,) for r in REWRITES]:
            assert torch.allclose(InferenceGraph(net, rewrites)(x), ref, atol=1e-4), rewrites
    with pytest.raises(ValueError, match="rewrites"):
        InferenceGraph(net, ("nope",))
