"""Anchor-free decoupled detection head (per level) and the intrinsics-aware depth head.

Raw detection output, per anchor point (one per feature-map cell of strides 8/16/32),
channels in this order (see :data:`DET_LAYOUT`):

* ``cls``    num_classes logits (sigmoid gives quality-aware class scores)
* ``ltrb``   4 raw distances from the anchor point to the box sides; ``softplus(.) * stride`` pixels
* ``offset`` 2: projected 3D centre minus anchor point, in stride units
* ``depth``  1: log of the *canonical* depth of the 3D centre (for focal length ``f_ref``)
* ``size``   3: log of (length, width, height) in metres
* ``angle``  2: (sin, cos) of the observation angle alpha (KITTI); yaw = alpha + atan2(x, z)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from perception.nn.blocks import ConvBNAct, make_block

ATTR_CHANNELS = {"ltrb": 4, "offset": 2, "depth": 1, "size": 3, "angle": 2}


def det_layout(num_classes: int) -> dict[str, slice]:
    """Channel slices of the raw detection tensor ``[B, A, num_classes + 12]``."""
    layout, start = {"cls": slice(0, num_classes)}, num_classes
    for name, n in ATTR_CHANNELS.items():
        layout[name] = slice(start, start + n)
        start += n
    return layout


def det_channels(num_classes: int) -> int:
    return num_classes + sum(ATTR_CHANNELS.values())


class DetectionLevelHead(nn.Module):
    """Decoupled head of one pyramid level: a classification and a regression branch."""

    def __init__(self, cin: int, width: int, num_classes: int, block: str, act: str, prior_prob: float = 0.01):
        super().__init__()
        self.stem = ConvBNAct(cin, width, 1, act=act)
        self.cls_conv = make_block(block, width, width, act=act)
        self.reg_conv = make_block(block, width, width, act=act)
        self.cls_pred = nn.Conv2d(width, num_classes, 1)
        self.reg_pred = nn.Conv2d(width, sum(ATTR_CHANNELS.values()), 1)
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.normal_(self.reg_pred.weight, std=0.01)
        bias = torch.zeros(sum(ATTR_CHANNELS.values()))
        bias[ATTR_CHANNELS["ltrb"] + ATTR_CHANNELS["offset"]] = math.log(15.0)  # canonical depth prior
        bias[7:10] = torch.log(torch.tensor([4.0, 1.8, 1.6]))  # size prior: a car
        bias[11] = 1.0  # cos(alpha) prior
        self.reg_pred.bias.data.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return torch.cat([self.cls_pred(self.cls_conv(x)), self.reg_pred(self.reg_conv(x))], 1)


class DetectionHead(nn.Module):
    """One :class:`DetectionLevelHead` per level; output ``[B, A, C]`` over all levels."""

    def __init__(self, in_channels: tuple[int, ...], width: int, num_classes: int, strides: tuple[int, ...],
                 block: str = "repvgg", act: str = "relu"):
        super().__init__()
        self.strides = strides
        self.num_classes = num_classes
        self.levels = nn.ModuleList(DetectionLevelHead(c, width, num_classes, block, act) for c in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        outs = [head(f).flatten(2) for head, f in zip(self.levels, feats)]  # [B, C, HW] per level
        return torch.cat(outs, 2).transpose(1, 2)


class DepthHead(nn.Module):
    """Dense log canonical depth at stride 4 (rescaled by ``fx / f_ref`` in the model)."""

    def __init__(self, cin: int, width: int, block: str = "repvgg", act: str = "relu"):
        super().__init__()
        self.conv = make_block(block, cin, width, act=act)
        self.pred = nn.Conv2d(width, 1, 1)
        nn.init.normal_(self.pred.weight, std=0.01)
        nn.init.constant_(self.pred.bias, math.log(15.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred(self.conv(x))
