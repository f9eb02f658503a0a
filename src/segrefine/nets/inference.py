"""The inference graph of a :class:`GroupedUNet`: the same function, rewritten for speed.

ONNX Runtime's CPU kernels are fast for plain and grouped convolutions in its
blocked (NCHWc) layout and slow for a few other operators the network uses. Each
rewrite below computes exactly what the training graph computes (up to float
rounding; the test compares both) from the same weights:

- ``first``: the input is repeated once per group and a grouped 1x1 convolution
  with one input channel per group follows; every group sees the same image, so it
  is one plain 1x1 convolution from one channel (no ``Tile``).
- ``skips``: the decoder's group-wise concatenation feeds a grouped 1x1
  convolution; split its weight into the part that reads the skip and the part
  that reads the up-sampled path and add the two convolutions (no ``Concat``).
- ``head``: a grouped 3x3 convolution with 2 outputs per group is the dense
  convolution with a block-diagonal weight (zeros between groups); with so few
  outputs per group ONNX Runtime's grouped kernel runs outside its blocked layout.

:func:`segrefine.nets.onnx.export` exports this graph when asked
(``OnnxOptions(rewrites=REWRITES)``); by default it exports the training graph,
because end to end the rewrites were not measurably faster on this project's
machine (``segrefine bench graph``: 0.97-1.11x on the fetal stack, docs/benchmarks.md),
although ONNX Runtime's profiler put the group-wise ``Concat`` at 0.49 of 1.94 s.
Two more rewrites were slower in the profiler and left out (transposed convolution
as 1x1 convolution + depth-to-space; instance normalisation from global average pools).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segrefine.nets.segnet import GroupedUNet, group_concat

REWRITES = ("first", "skips", "head")


def _block_diagonal(conv: nn.Conv2d) -> torch.Tensor:
    """The dense weight ``(C_out, C_in, k, k)`` equal to the grouped ``conv``'s."""
    g = conv.groups
    cout, cin_g = conv.weight.shape[:2]
    dense = conv.weight.new_zeros(cout, cin_g * g, *conv.weight.shape[2:])
    per = cout // g
    for i in range(g):
        dense[i * per:(i + 1) * per, i * cin_g:(i + 1) * cin_g] = conv.weight[i * per:(i + 1) * per]
    return dense


class InferenceGraph(nn.Module):
    """``net``'s forward with the rewrites in ``rewrites`` (all by default); shares
    ``net``'s modules (normalisation, activations, dropout) and copies the weights it
    rearranges, so build it again after the weights change."""

    def __init__(self, net: GroupedUNet, rewrites: tuple[str, ...] = REWRITES):
        super().__init__()
        unknown = set(rewrites) - set(REWRITES)
        if unknown:
            raise ValueError(f"rewrites must be among {REWRITES}, got {sorted(unknown)}")
        self.net, self.config = net, net.config
        first = net.down[0].body[0]
        self.first = "first" in rewrites and net.in_groups > 1 and net.config.in_channels == 1
        if self.first:  # one input channel per group: every group reads the same image
            self.register_buffer("first_w", first.weight.detach().clone())
            self.register_buffer("first_b", first.bias.detach().clone())
        self.skips = "skips" in rewrites
        head = net.head
        self.dense_head = "head" in rewrites and head.groups > 1
        if self.dense_head:
            self.register_buffer("head_w", _block_diagonal(head).detach())

    def _decode(self, dec: nn.Module, skip: torch.Tensor, up: torch.Tensor, groups: int) -> torch.Tensor:
        conv, rest = dec.body[0], dec.body[1:]
        if not self.skips:
            return dec(group_concat(skip, up, groups))
        ca = skip.shape[1] // groups
        w = conv.weight
        y = F.conv2d(skip, w[:, :ca], conv.bias, groups=groups) + F.conv2d(up, w[:, ca:], None, groups=groups)
        return rest(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        skips = []
        for k, (block, drop) in enumerate(zip(net.down, net.drop)):
            if k == 0 and self.first:
                x = block.body[1:](F.conv2d(x, self.first_w, self.first_b))
            else:
                if k == 0 and net.in_groups > 1:
                    x = x.repeat(1, net.in_groups, 1, 1)
                x = block(x)
            x = drop(x)
            if k < net.levels - 1:
                skips.append(x)
                x = net.pool(x)
        for i, dec in enumerate(net.dec):
            k = net.levels - 2 - i
            x = self._decode(dec, skips[k], net.up[i](x), self.config.groups[k])
        head = net.head
        if self.dense_head:
            out = F.conv2d(x, self.head_w, head.bias, padding=head.padding)
        else:
            out = head(x)
        b, _, h, w = out.shape
        return out.reshape(b, self.config.heads, self.config.num_classes, h, w)
