"""The RepVGG / QARepVGG model family (``rep-*``, ``qarep-*``, ``rep-s-p2``), registered into
:mod:`perception.nn.registry`. The efficient-block variants are in :mod:`perception.nn.zoo_efficient`."""

from __future__ import annotations

import dataclasses

from perception.nn.backbone import BackboneConfig
from perception.nn.model import ModelConfig
from perception.nn.neck import NeckConfig
from perception.nn.registry import register_model


def _rep(name_block: str, widths, depths, neck, head: int, depth_width: int) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig(widths=widths, depths=depths, block=name_block),
                       neck=NeckConfig(widths=neck, depth=1), head_width=head, depth_width=depth_width)


# Sizes: n for Jetson Orin Nano class devices, s the default, m for larger GPUs.
_SIZES = {
    "n": dict(widths=(32, 32, 64, 128, 256), depths=(1, 2, 4, 1), neck=(32, 48, 64, 128), head=48, depth_width=24),
    "s": dict(widths=(32, 48, 96, 192, 384), depths=(1, 3, 6, 1), neck=(32, 64, 128, 192), head=64, depth_width=32),
    "m": dict(widths=(48, 64, 128, 256, 512), depths=(2, 4, 8, 1), neck=(48, 96, 160, 256), head=96, depth_width=48),
}

for _size, _p in _SIZES.items():
    for _prefix, _block in (("rep", "repvgg"), ("qarep", "qarepvgg")):
        register_model(f"{_prefix}-{_size}")(
            lambda b=_block, p=_p: _rep(b, p["widths"], p["depths"], p["neck"], p["head"], p["depth_width"]))


@register_model("rep-s-p2")
def _rep_s_p2() -> ModelConfig:
    """rep-s with a fourth detection level at stride 4 (fed by the neck's stride-4 feature, which
    the depth head also reads), for the small objects that stride 8 localises badly: on the
    synthetic test split three quarters of the cars are under 32x32 px at 256x448 (models/rep-s
    card). The level goes last, so rep-s weights initialise everything else (`init:`)."""
    p = _SIZES["s"]
    return dataclasses.replace(_rep("repvgg", p["widths"], p["depths"], p["neck"], p["head"], p["depth_width"]),
                               det_strides=(8, 16, 32, 4))

