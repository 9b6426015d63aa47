"""Labelled agents of the synthetic world (vehicles, pedestrians, cyclists) and their shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perception.data.synth import assets
from perception.data.synth.assets import Asset

SIZE_RANGES = {  # (l, w, h) min/max in metres
    "car": ((3.8, 1.65, 1.4), (5.0, 2.0, 1.75)),
    "truck": ((6.5, 2.3, 2.8), (10.0, 2.55, 3.8)),
    "bus": ((10.0, 2.5, 3.0), (12.5, 2.6, 3.4)),
    "pedestrian": ((0.5, 0.5, 1.5), (0.7, 0.7, 1.95)),
    "cyclist": ((1.65, 0.55, 1.6), (1.9, 0.7, 1.85)),
}


@dataclass
class Agent:
    """A labelled object (vehicle, pedestrian, cyclist) with its motion state."""

    id: int
    cls: str
    size: np.ndarray                   # l, w, h
    mode: str                          # "lane" | "parked" | "sidewalk" | "cross" | "static"
    s: float = 0.0                     # road coordinate (mode lane/parked/sidewalk)
    d: float = 0.0
    direction: int = 1                 # +1 along +s, -1 against
    speed: float = 0.0
    v0: float = 0.0                    # desired speed
    lane: int = 0
    cross: int = -1                    # cross road index (mode cross)
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    phase: float = 0.0
    asset_seed: int = 0
    asset: Asset | None = None


def build_asset(a: Agent) -> Asset:
    """The shape of ``a`` (deterministic in its ``asset_seed``, size and walk phase)."""
    rng = np.random.default_rng(a.asset_seed)
    l, w, h = a.size
    if a.cls == "car":
        return assets.car(rng, l, w, h)
    if a.cls == "truck":
        return assets.truck(rng, l, w, h)
    if a.cls == "bus":
        return assets.bus(rng, l, w, h)
    if a.cls == "pedestrian":
        return assets.pedestrian(rng, l, w, h, a.phase)
    return assets.cyclist(rng, l, w, h, a.phase)


def animated_asset(a: Agent, pose_cache: dict[int, dict[int, Asset]]) -> Asset:
    """Pedestrian / cyclist shape at its walk (pedal) phase, quantised to 16 poses and
    cached in ``pose_cache`` (agent id -> pose index -> shape)."""
    k = int(round(a.phase / (2 * math.pi) * 16)) % 16
    cache = pose_cache.setdefault(a.id, {})
    if k not in cache:
        phase = a.phase
        a.phase = k * 2 * math.pi / 16
        cache[k] = build_asset(a)
        a.phase = phase
    return cache[k]
