"""Model variants built from the efficient blocks of :mod:`perception.nn.efficient`.

Backbone widths are chosen so the *fused backbone* has about the FLOPs of the fused rep-n
backbone at the same input (ratios measured by ``benchmarks/efficient_blocks.py``: dwsep and
MobileOne 0.88x, fire 0.98x, shuffle ~0.8x). Neck and heads keep rep-n's widths but use the
same block kind.

* ``mbv1-n`` and ``mobileone-n`` fuse to convolution + ReLU only and are in the main registry
  (so tests/test_models.py checks them like every other model).
* ``shuffle-n`` and ``squeeze-n`` are *not* in the main registry: after folding BN their
  graphs still run a channel shuffle (view/transpose/reshape), residual adds and concats, which
  the main registry's contract (fused backbone = conv/ReLU only) forbids. They live in
  :data:`EFFICIENT_ONLY` and are built with :func:`create_efficient_model` (used by the
  benchmark and tests/test_efficient.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import perception.nn.efficient  # noqa: F401  (registers the block kinds)
from perception.nn.backbone import BackboneConfig
from perception.nn.model import ModelConfig, PerceptionNet
from perception.nn.neck import NeckConfig
from perception.nn.registry import register_model

_N_NECK = dict(neck=NeckConfig(widths=(32, 48, 64, 128), depth=1), head_width=48, depth_width=24)
_DEPTHS = (1, 2, 4, 1)

EFFICIENT_WIDTHS: dict[str, tuple[str, tuple[int, int, int, int, int]]] = {
    "mbv1-n": ("dwsep", (32, 96, 192, 384, 768)),
    "mobileone-n": ("mobileone_dwpw", (32, 96, 192, 384, 768)),
    "shuffle-n": ("shuffle", (32, 192, 384, 768, 1536)),
    "squeeze-n": ("fire", (32, 96, 192, 384, 768)),
}


def efficient_config(name: str) -> ModelConfig:
    block, widths = EFFICIENT_WIDTHS[name]
    return ModelConfig(name=name, backbone=BackboneConfig(widths=widths, depths=_DEPTHS, block=block), **_N_NECK)


for _name in ("mbv1-n", "mobileone-n"):
    register_model(_name)(lambda n=_name: efficient_config(n))

EFFICIENT_ONLY: dict[str, Callable[[], ModelConfig]] = {
    n: (lambda n=n: efficient_config(n)) for n in ("shuffle-n", "squeeze-n")}


def list_efficient_models() -> list[str]:
    """Every efficient variant, in or out of the main registry."""
    return sorted(EFFICIENT_WIDTHS)


def create_efficient_model(name: str, **overrides: Any) -> PerceptionNet:
    if name not in EFFICIENT_WIDTHS:
        raise ValueError(f"unknown efficient model {name!r}; known: {list_efficient_models()}")
    cfg = efficient_config(name)
    return PerceptionNet(dataclasses.replace(cfg, **overrides) if overrides else cfg)
