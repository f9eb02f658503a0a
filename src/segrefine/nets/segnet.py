"""The 2D U-Net with dropout and MG-Net (Wang et al., MICCAI 2020), as one backbone.

Both networks share the same encoder-decoder: at each resolution level a block
of a 1x1 convolution and a 3x3 convolution, each followed by normalisation and
leaky ReLU, max pooling down, 2x2 transposed convolutions up and concatenation
skips.

MG-Net (:func:`mgnet_config`) is the published network (UGIR's ``MGNet.py`` and
``mgnet.cfg``): every convolution is *grouped* with N groups (N = 4; C = 16
channels per group at the first level, doubling at each level), the up-sampling
uses transposed grouped convolutions followed by a leaky ReLU, the skips use a
*group-wise* concatenation, so that the N groups form N independent sub-networks
everywhere except at the lowest resolution level (512 channels), where the group
count is 1 and the sub-networks exchange information; group normalisation with
the level's groups; dropout 0.1, 0.2, 0.3, 0.4, 0.5 on the outputs of the five
encoder blocks; a grouped 3x3 convolution gives N heads, softmax per head. At
inference the mean of the heads is the probability and their variance the
uncertainty. 4.86 M parameters.

The dropout U-Net (:func:`unet_config`) is the same network with group count 1,
one head, instance normalisation and dropout inside every block (the first
shipped layout, kept for the shipped U-Net, the ensemble and MC dropout).
Instance and group normalisation both work per image: unlike batch
normalisation there is no variance shift between dropout-on training and
dropout-off inference.

Tensors are ``(B, 1, H, W)`` in, ``(B, heads, classes, H, W)`` logits out;
H and W must be multiples of ``2 ** (levels - 1)`` (padding is done by the
predictor, not here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class NetConfig:
    """Everything needed to rebuild a network; stored in checkpoints."""

    arch: str = "mgnet"
    in_channels: int = 1
    num_classes: int = 2
    channels: tuple[int, ...] = (64, 128, 256, 512, 512)
    groups: tuple[int, ...] = (4, 4, 4, 4, 1)
    heads: int = 4
    dropout: tuple[float, ...] = (0.1, 0.2, 0.3, 0.3, 0.3)
    # The defaults below describe the first shipped networks (and so every checkpoint
    # saved before these fields existed); mgnet_config sets the authors' values.
    norm: str = "instance"          # "instance" (per channel) or "group" (per group of channels)
    dropout_at: str = "block"       # "block": inside every block; "encoder": after encoder blocks
    head_kernel: int = 1            # kernel of the output convolution (authors: 3, grouped)
    up_activation: bool = False     # leaky ReLU after each transposed convolution (authors: yes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetConfig:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**kw)


def mgnet_config(*, groups: int = 4, c: int = 16, num_classes: int = 2,
                 dropout: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5),
                 norm: str = "instance") -> NetConfig:
    """MG-Net as published (UGIR's ``mgnet.cfg`` and ``MGNet.py``), with instance
    normalisation unless ``norm="group"``.

    N groups of C, 2C, 4C, 8C channels and an ungrouped lowest level of 8C*N channels
    (64, 128, 256, 512, 512 for N = 4, C = 16: 4.86 M parameters); dropout 0.1-0.5
    after each encoder block only; a leaky ReLU after each transposed convolution; a
    grouped 3x3 output convolution. ``norm="group"`` (group normalisation with N
    groups) is the published network exactly; the default, instance normalisation,
    is the shipped one: on the hippocampus ``val`` split it trained to a higher
    Dice on this project's CPU budget (docs/models.md, the measured ablation).
    """
    chans = tuple(groups * c * 2**k for k in range(4)) + (groups * c * 8,)
    return NetConfig("mgnet", 1, num_classes, chans, (groups,) * 4 + (1,), groups, dropout,
                     norm=norm, dropout_at="encoder", head_kernel=3, up_activation=True)


def unet_config(*, base: int = 32, num_classes: int = 2,
                dropout: tuple[float, ...] = (0.1, 0.2, 0.3, 0.3, 0.3)) -> NetConfig:
    """The dropout U-Net: base, 2 base, ... 16 base channels, one head."""
    chans = tuple(base * 2**k for k in range(5))
    return NetConfig("unet", 1, num_classes, chans, (1,) * 5, 1, dropout)


def group_concat(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """Group-wise concatenation: [a_1 b_1 a_2 b_2 ... a_N b_N] along channels.

    ``a`` and ``b`` are ``(B, C_a, H, W)`` and ``(B, C_b, H, W)`` whose channels are
    ``groups`` consecutive groups. With ``groups == 1`` this is plain concatenation.
    """
    if groups == 1:
        return torch.cat([a, b], dim=1)
    bsz, ca, h, w = a.shape
    cb = b.shape[1]
    a = a.reshape(bsz, groups, ca // groups, h, w)
    b = b.reshape(bsz, groups, cb // groups, h, w)
    return torch.cat([a, b], dim=2).reshape(bsz, ca + cb, h, w)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    """Instance norm (per channel) or group norm with the convolution's groups; both
    normalise each image on its own and never mix the groups of a grouped level."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be 'instance' or 'group', got {kind!r}")


class Block(nn.Module):
    """1x1 conv -> norm -> LReLU [-> dropout] -> 3x3 conv -> norm -> LReLU, ``groups`` groups.

    The 1x1 convolution changes the width (it mixes channels only within a group), the
    3x3 one gives the spatial context (the paper's "1x1 + 3x3 grouped convolutions").
    ``dropout`` > 0 puts dropout between the two (the first shipped networks); the
    published MG-Net has none inside its blocks (see ``NetConfig.dropout_at``).
    """

    def __init__(self, cin: int, cout: int, groups: int, dropout: float, norm: str = "instance"):
        super().__init__()
        layers = [nn.Conv2d(cin, cout, 1, groups=groups),
                  _norm(norm, cout, groups), nn.LeakyReLU(0.01, inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Conv2d(cout, cout, 3, padding=1, groups=groups),
                   _norm(norm, cout, groups), nn.LeakyReLU(0.01, inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class GroupedHead(nn.Conv2d):
    """A grouped convolution computed group by group.

    Same parameters and result as ``nn.Conv2d(..., groups=g)``; with few output channels
    per group (2 in MG-Net's head) PyTorch's grouped kernel is about 3x slower on the
    CPU than ``g`` plain convolutions (measured: 0.195 vs 0.074 s forward + backward for
    16 slices of 48x64, 64 -> 8 channels, 3x3, one thread).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        if g == 1 or torch.onnx.is_in_onnx_export():  # ONNX Runtime's grouped kernel is fine
            return super().forward(x)
        parts = zip(x.chunk(g, 1), self.weight.chunk(g, 0), self.bias.chunk(g, 0))
        return torch.cat([nn.functional.conv2d(xi, wi, bi, padding=self.padding)
                          for xi, wi, bi in parts], 1)


class GroupedUNet(nn.Module):
    """U-Net encoder-decoder with optional grouping and several heads (see module docstring):
    group count 1 and one head is the dropout U-Net, N groups and N heads MG-Net."""

    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        ch, gr, dr = config.channels, config.groups, config.dropout
        if not (len(ch) == len(gr) == len(dr)):
            raise ValueError("channels, groups and dropout need one entry per level")
        self.levels = len(ch)
        self.in_groups = gr[0]
        if config.dropout_at not in ("block", "encoder"):
            raise ValueError(f"dropout_at must be 'block' or 'encoder', got {config.dropout_at!r}")
        in_block = config.dropout_at == "block"
        norm = config.norm
        cin = config.in_channels * gr[0]  # each group gets its own copy of the input
        self.down = nn.ModuleList()
        for k in range(self.levels):
            self.down.append(Block(cin, ch[k], gr[k], dr[k] if in_block else 0.0, norm))
            cin = ch[k]
        # dropout on each encoder block's output (skip and pooled path alike), as the authors
        self.drop = nn.ModuleList(
            nn.Dropout(p) if (not in_block and p > 0) else nn.Identity() for p in dr)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for k in range(self.levels - 2, -1, -1):
            # transposed conv into level k's grouping; the lowest level may be ungrouped
            up = nn.ConvTranspose2d(ch[k + 1], ch[k], 2, stride=2, groups=gr[k])
            self.up.append(nn.Sequential(up, nn.LeakyReLU(0.01, inplace=True))
                           if config.up_activation else up)
            self.dec.append(Block(2 * ch[k], ch[k], gr[k], dr[k] if in_block else 0.0, norm))
        self.pool = nn.MaxPool2d(2)
        kh = config.head_kernel
        self.head = GroupedHead(ch[0], config.num_classes * config.heads, kh, padding=kh // 2,
                                groups=gr[0])

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(B, heads, classes, H, W)``."""
        if self.in_groups > 1:
            x = x.repeat(1, self.in_groups, 1, 1)
        skips = []
        for k, (block, drop) in enumerate(zip(self.down, self.drop)):
            x = drop(block(x))
            if k < self.levels - 1:
                skips.append(x)
                x = self.pool(x)
        for i, (up, dec) in enumerate(zip(self.up, self.dec)):
            k = self.levels - 2 - i
            x = dec(group_concat(skips[k], up(x), self.config.groups[k]))
        out = self.head(x)
        b, _, h, w = out.shape
        return out.reshape(b, self.config.heads, self.config.num_classes, h, w)


def build_unet(**kw) -> GroupedUNet:
    """The dropout U-Net (:func:`unet_config` keywords)."""
    return GroupedUNet(unet_config(**kw))


def build_mgnet(**kw) -> GroupedUNet:
    """MG-Net as published (:func:`mgnet_config` keywords)."""
    return GroupedUNet(mgnet_config(**kw))


def build_network(config: NetConfig | dict) -> GroupedUNet:
    if isinstance(config, dict):
        config = NetConfig.from_dict(config)
    return GroupedUNet(config)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
