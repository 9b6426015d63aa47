"""Rep-PAN neck (as in YOLOv6): top-down then bottom-up fusion over strides 8/16/32,
plus a stride-4 branch that feeds the dense depth head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from perception.nn.backbone import RepStage
from perception.nn.blocks import ConvBNAct, make_block


@dataclass(frozen=True)
class NeckConfig:
    """``widths`` at strides (4, 8, 16, 32); ``depth`` blocks per fusion stage."""

    widths: tuple[int, int, int, int] = (32, 64, 96, 128)
    depth: int = 1


class RepPAN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int, int], cfg: NeckConfig, block: str = "repvgg",
                 act: str = "relu"):
        super().__init__()
        c2, c3, c4, c5 = in_channels
        w4, w8, w16, w32 = cfg.widths
        n = cfg.depth
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        # top-down
        self.reduce5 = ConvBNAct(c5, w16, 1, act=act)
        self.td4 = RepStage(w16 + c4, w16, n, 1, block, act)
        self.reduce4 = ConvBNAct(w16, w8, 1, act=act)
        self.td3 = RepStage(w8 + c3, w8, n, 1, block, act)
        # bottom-up
        self.down3 = make_block(block, w8, w8, stride=2, act=act)
        self.bu4 = RepStage(w8 + w8, w16, n, 1, block, act)
        self.down4 = make_block(block, w16, w16, stride=2, act=act)
        self.bu5 = RepStage(w16 + w16, w32, n, 1, block, act)
        # stride 4 for depth
        self.reduce3 = ConvBNAct(w8, w4, 1, act=act)
        self.td2 = RepStage(w4 + c2, w4, n, 1, block, act)
        self.out_channels = (w4, w8, w16, w32)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the stride-4 depth feature and the detection features at strides 8/16/32."""
        c2, c3, c4, c5 = feats
        p5 = self.reduce5(c5)
        p4 = self.reduce4(self.td4(torch.cat([self.up(p5), c4], 1)))
        n3 = self.td3(torch.cat([self.up(p4), c3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), p4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        d2 = self.td2(torch.cat([self.up(self.reduce3(n3)), c2], 1))
        return d2, [n3, n4, n5]
