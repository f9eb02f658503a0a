"""The 2D U-Net with dropout and MG-Net (Wang et al., MICCAI 2020), as one backbone.

Both networks share the same encoder-decoder: at each resolution level a block
of a 1x1 convolution and a 3x3 convolution, each with instance normalisation
and leaky ReLU, dropout between them, max pooling down, 2x2 transposed convolutions up and concatenation skips.

MG-Net makes every convolution *grouped* with N groups (N = 4; C = 16
channels per group at the first level, doubling at each level), uses
transposed grouped convolutions for up-sampling and a *group-wise*
concatenation in the skips, so that the N groups form N independent
sub-networks everywhere except at the lowest resolution level, where the group
count is 1 and the sub-networks exchange information. The last layer gives N
heads; softmax is applied per head. At inference the mean of the heads is the
probability and their variance the uncertainty.

The U-Net is the same network with group count 1 and one head. With
``channels=(32, 64, 128, 256, 512)`` it has the same multiply-adds per pixel
as MG-Net with N = 4, C = 16 at every grouped level, so timings compare the
method, not the width.

Instance normalisation (per channel, per image) is used instead of batch
normalisation: it keeps the groups independent and avoids the variance shift
between dropout-on training and dropout-off inference.

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetConfig:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**kw)


def mgnet_config(*, groups: int = 4, c: int = 16, num_classes: int = 2,
                 dropout: tuple[float, ...] = (0.1, 0.2, 0.3, 0.3, 0.3)) -> NetConfig:
    """MG-Net: N groups of C, 2C, 4C, 8C channels, and an ungrouped lowest level of 8C*N/2."""
    chans = tuple(groups * c * 2**k for k in range(4)) + (groups * c * 8 // 2,)
    return NetConfig("mgnet", 1, num_classes, chans, (groups,) * 4 + (1,), groups, dropout)


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


class Block(nn.Module):
    """1x1 conv -> IN -> LReLU -> dropout -> 3x3 conv -> IN -> LReLU, both with ``groups`` groups.

    The 1x1 convolution changes the width (it mixes channels only within a group), the
    3x3 one gives the spatial context (the paper's "1x1 + 3x3 grouped convolutions").
    """

    def __init__(self, cin: int, cout: int, groups: int, dropout: float):
        super().__init__()
        layers = [nn.Conv2d(cin, cout, 1, groups=groups),
                  nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.01, inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Conv2d(cout, cout, 3, padding=1, groups=groups),
                   nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.01, inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SegNet(nn.Module):
    """Encoder-decoder with optional grouping and several heads (see module docstring)."""

    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        ch, gr, dr = config.channels, config.groups, config.dropout
        if not (len(ch) == len(gr) == len(dr)):
            raise ValueError("channels, groups and dropout need one entry per level")
        self.levels = len(ch)
        self.in_groups = gr[0]
        cin = config.in_channels * gr[0]  # each group gets its own copy of the input
        self.down = nn.ModuleList()
        for k in range(self.levels):
            self.down.append(Block(cin, ch[k], gr[k], dr[k]))
            cin = ch[k]
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for k in range(self.levels - 2, -1, -1):
            # transposed conv into level k's grouping; the lowest level may be ungrouped
            self.up.append(nn.ConvTranspose2d(ch[k + 1], ch[k], 2, stride=2, groups=gr[k]))
            self.dec.append(Block(2 * ch[k], ch[k], gr[k], dr[k]))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(ch[0], config.num_classes * config.heads, 1, groups=gr[0])

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(B, heads, classes, H, W)``."""
        if self.in_groups > 1:
            x = x.repeat(1, self.in_groups, 1, 1)
        skips = []
        for k, block in enumerate(self.down):
            x = block(x)
            if k < self.levels - 1:
                skips.append(x)
                x = self.pool(x)
        for i, (up, dec) in enumerate(zip(self.up, self.dec)):
            k = self.levels - 2 - i
            x = dec(group_concat(skips[k], up(x), self.config.groups[k]))
        out = self.head(x)
        b, _, h, w = out.shape
        return out.reshape(b, self.config.heads, self.config.num_classes, h, w)


def UNet(**kw) -> SegNet:
    return SegNet(unet_config(**kw))


def MGNet(**kw) -> SegNet:
    return SegNet(mgnet_config(**kw))


def build_network(config: NetConfig | dict) -> SegNet:
    if isinstance(config, dict):
        config = NetConfig.from_dict(config)
    return SegNet(config)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
