"""RepVGG-style backbone: a stem and four stages of reparameterizable 3x3 blocks.

Each stage starts with a stride-2 block; the fused network is a plain stack of
3x3 conv + ReLU, which is what CPUs and GPUs run best. Outputs features at strides
4, 8, 16 and 32 (C2..C5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from perception.nn.blocks import make_block


@dataclass(frozen=True)
class BackboneConfig:
    """``widths``: stem then the four stages; ``depths``: blocks per stage."""

    widths: tuple[int, int, int, int, int] = (32, 48, 96, 192, 384)
    depths: tuple[int, int, int, int] = (1, 2, 4, 1)
    block: str = "repvgg"
    act: str = "relu"

    def __post_init__(self) -> None:
        if len(self.widths) != 5 or len(self.depths) != 4:
            raise ValueError("BackboneConfig needs 5 widths (stem + 4 stages) and 4 depths")
        if any(d < 1 for d in self.depths):
            raise ValueError("every stage needs at least one block")


class RepStage(nn.Sequential):
    """``depth`` blocks; the first changes width and applies ``stride``."""

    def __init__(self, cin: int, cout: int, depth: int, stride: int, block: str, act: str):
        super().__init__(*[make_block(block, cin if i == 0 else cout, cout, stride if i == 0 else 1, act=act)
                           for i in range(depth)])


class RepBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        w, d = cfg.widths, cfg.depths
        self.stem = make_block(cfg.block, 3, w[0], stride=2, act=cfg.act)
        self.stages = nn.ModuleList(RepStage(w[i], w[i + 1], d[i], 2, cfg.block, cfg.act) for i in range(4))

    @property
    def out_channels(self) -> tuple[int, int, int, int]:
        return tuple(self.cfg.widths[1:])  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
