"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from perception.data.sample import Sample
from perception.data.sample_folder import write_sample_folder


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so that fusing
    them is really exercised (fresh BN layers are the identity in eval mode)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.6 + 0.7)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


def fake_sample(seed: int, width: int = 96, height: int = 64) -> Sample:
    """A tiny two-camera frame with exact labels (the compression proxy task's data: cars and
    pedestrians on a textured ground), for tests that must not depend on the synthetic world."""
    from perception.compress.common import proxy_sample  # lazily: most tests only need randomize_bn

    return proxy_sample(seed, width, height)


def fake_folder(root: Path, frames: int = 8, **kw) -> Path:
    """``frames`` :func:`fake_sample` frames written as a sample folder at ``root``."""
    write_sample_folder((fake_sample(i, **kw) for i in range(frames)), root)
    return root
