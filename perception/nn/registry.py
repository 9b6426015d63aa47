"""Model registry: named configs, ``list_models`` and ``create_model`` (timm-style)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from perception.nn.backbone import BackboneConfig
from perception.nn.model import ModelConfig, PerceptionNet
from perception.nn.neck import NeckConfig

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}

# Focal length (px at the network input) of most of the shipped weights' training images: the
# nuScenes-like surround6 rig (fx 1266 px at 1600 wide) at 448 wide. The depth head rescales by
# fx / f_ref, but the networks only learned to read apparent size near this focal length, so
# `perception run` sizes its input to match it (docs/pipeline.md, "Input size").
TRAIN_FOCAL_PX = 354.0

MODELS_DIR = Path(os.environ.get("PERCEPTION_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))


def register_model(name: str) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    """Decorator registering a zero-argument function that returns a :class:`ModelConfig`."""
    def wrap(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn
    return wrap


def list_models() -> list[str]:
    """Every registered model name."""
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    cfg = dataclasses.replace(_REGISTRY[name](), name=name)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def create_model(name: str, pretrained: bool | str | os.PathLike = False, **overrides: Any) -> PerceptionNet:
    """Build a registered model.

    ``pretrained=True`` loads the checkpoint shipped in ``models/<name>/`` (no network);
    a path loads that file (its saved config wins over ``name``). Overrides replace fields
    of :class:`ModelConfig` (e.g. ``classes=("car",)``, ``f_ref=700.0``).
    """
    from perception.nn.checkpoint import load_checkpoint, shipped_checkpoint

    if pretrained is True:
        return load_checkpoint(shipped_checkpoint(name))
    if pretrained:
        return load_checkpoint(pretrained)
    return PerceptionNet(get_config(name, **overrides))


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


from perception.nn import zoo_efficient as _zoo_efficient  # noqa: E402,F401  (mbv1-n, mobileone-n)
