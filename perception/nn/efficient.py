"""Efficient building blocks with the ``make_block`` interface ``(cin, cout, stride, groups, act)``.

* ``dwsep``      MobileNet v1 depthwise-separable unit: dw 3x3 ConvBNAct + pw 1x1 ConvBNAct
                 (Howard et al. 2017). Fuses to conv/ReLU only.
* ``mobileone``  is the existing dense :class:`MobileOneBlock`; ``mobileone_dwpw`` is the
                 real MobileOne unit: a depthwise 3x3 MobileOneBlock + a pointwise 1x1
                 MobileOneBlock, each with ``num_branches`` over-parameterised branches
                 (Vasu et al. 2023). Reparameterizes to conv/ReLU only.
* ``shuffle``    ShuffleNet v1 unit: grouped 1x1 -> channel shuffle -> dw 3x3 -> grouped 1x1,
                 residual add when shapes allow (Zhang et al. 2018). Its BN folds, but the
                 fused graph keeps the shuffle (view/transpose) and the residual add.
* ``fire``       SqueezeNet fire module: squeeze 1x1 -> (expand 1x1 || expand 3x3) concat
                 (Iandola et al. 2016). BN folds; the fused graph keeps the concat.

Importing this module adds the kinds to :data:`perception.nn.blocks.BLOCKS`, so backbones,
necks and heads built from a ``ModelConfig`` with ``block="dwsep"`` etc. use them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from perception.nn.blocks import BLOCKS, ConvBNAct, MobileOneBlock, make_act


class DepthwiseSeparable(nn.Module):
    """MobileNet v1: ``pw(dw(x))`` with BN + activation after each conv."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, stride, groups=cin, act=act)
        self.pw = ConvBNAct(cin, cout, 1, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileOneUnit(nn.Module):
    """MobileOne: depthwise 3x3 + pointwise 1x1 :class:`MobileOneBlock` (``num_branches`` each)."""

    num_branches = 2

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        super().__init__()
        k = self.num_branches
        self.dw = MobileOneBlock(cin, cin, 3, stride, groups=cin, num_branches=k, act=act)
        self.pw = MobileOneBlock(cin, cout, 1, 1, num_branches=k, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _groups_for(*channels: int, wanted: int = 4) -> int:
    g = wanted
    while g > 1 and any(c % g for c in channels):
        g //= 2
    return g


class ShuffleUnit(nn.Module):
    """ShuffleNet v1 unit (bottleneck ``cout/4``); ``act(x + f(x))`` when cin == cout, stride 1."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        super().__init__()
        mid = max(4, cout // 4)
        mid = int(math.ceil(mid / 4) * 4)
        self.g = _groups_for(cin, mid, cout)
        self.g1 = ConvBNAct(cin, mid, 1, groups=self.g, act=act)
        self.dw = ConvBNAct(mid, mid, 3, stride, groups=mid, act=None)
        self.g2 = ConvBNAct(mid, cout, 1, groups=self.g, act=None)
        self.residual = stride == 1 and cin == cout
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.g2(self.dw(channel_shuffle(self.g1(x), self.g)))
        return self.act(x + y if self.residual else y)


class FireModule(nn.Module):
    """SqueezeNet fire: squeeze 1x1 to ``cout/8``, expand 1x1 and 3x3 to ``cout/2`` each, concat.

    Stride 2 is applied by both expand convolutions (SqueezeNet uses max-pooling between fires).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        super().__init__()
        squeeze = max(4, cout // 8)
        e1 = cout // 2
        self.squeeze = ConvBNAct(cin, squeeze, 1, act=act)
        self.expand1 = ConvBNAct(squeeze, e1, 1, stride, act=act)
        self.expand3 = ConvBNAct(squeeze, cout - e1, 3, stride, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


EFFICIENT_BLOCKS: dict[str, type[nn.Module]] = {
    "dwsep": DepthwiseSeparable,
    "mobileone_dwpw": MobileOneUnit,
    "shuffle": ShuffleUnit,
    "fire": FireModule,
}

# Plain-graph kinds: their fused form is convolution + ReLU only (what tests/test_models.py demands).
PLAIN_GRAPH_KINDS = ("dwsep", "mobileone_dwpw")

for _kind, _cls in EFFICIENT_BLOCKS.items():
    BLOCKS.setdefault(_kind, _cls)
