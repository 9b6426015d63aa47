"""Model registry: names and the configs they stand for (``register_model``, ``list_models``,
``get_config``).

The registry holds configs only and imports no model zoo: the zoo modules
(:mod:`perception.nn.zoo`, :mod:`perception.nn.zoo_efficient`) register into it, and
:func:`perception.nn.create_model` (:mod:`perception.nn.resolve`) builds networks from it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from perception.nn.model import ModelConfig

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
    """The config registered as ``name`` (``name`` field set), with ``overrides`` replacing fields."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    cfg = dataclasses.replace(_REGISTRY[name](), name=name)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
