"""Lighting and weather of a synthetic episode: sun, sky, fog, rain and exposure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from perception.data.synth.scene import WorldConfig


@dataclass
class Lighting:
    sun_dir: np.ndarray                # unit vector towards the sun (world)
    sun_color: np.ndarray
    sun_intensity: float
    ambient: np.ndarray                # sky ambient rgb
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    fog_density: float                 # 1/m (extinction)
    fog_color: np.ndarray
    rain: float                        # 0..1 streak intensity
    wet: float                         # 0..1 road wetness
    night: bool
    clouds: float                      # 0..1 cloud cover
    exposure: float
    weather: str
    time_of_day: str


def make_lighting(rng: np.random.Generator, cfg: WorldConfig) -> Lighting:
    """Time of day, weather, sun and sky of one episode (draws from ``rng``)."""
    tod = cfg.time_of_day or str(rng.choice(["day", "dusk", "night"],
                                             p=[1 - cfg.p_night - cfg.p_dusk, cfg.p_dusk, cfg.p_night]))
    weather = cfg.weather or str(rng.choice(["clear", "overcast", "rain", "fog"], p=[0.5, 0.25, 0.13, 0.12]))
    elev = {"day": rng.uniform(0.25, 1.2), "dusk": rng.uniform(0.03, 0.2), "night": rng.uniform(-0.3, -0.1)}[tod]
    az = rng.uniform(-math.pi, math.pi)
    sun = np.array([math.cos(az) * math.cos(elev), math.sin(az) * math.cos(elev), math.sin(elev)])
    warm = np.clip(1.0 - elev / 0.6, 0, 1)
    sun_col = np.array([1.0, 0.96 - 0.25 * warm, 0.9 - 0.5 * warm])
    zen = np.array([0.10, 0.26, 0.75]) * rng.uniform(0.85, 1.15, 3)
    hor = np.array([0.55, 0.70, 0.92]) * rng.uniform(0.9, 1.05, 3)
    if tod == "dusk":
        hor = np.array([0.95, 0.6, 0.35]) * rng.uniform(0.8, 1.1, 3)
        zen = np.array([0.20, 0.25, 0.50])
    clouds = {"clear": rng.uniform(0.0, 0.4), "overcast": rng.uniform(0.7, 1.0), "rain": 1.0,
              "fog": rng.uniform(0.5, 1.0)}[weather]
    sun_int = {"day": rng.uniform(2.2, 3.0), "dusk": 1.6, "night": 0.0}[tod] * (1 - 0.8 * clouds ** 2)
    amb = 0.55 * (0.6 * zen + 0.4 * hor) + 0.35 * clouds
    fog = {"clear": rng.uniform(0.0005, 0.004), "overcast": rng.uniform(0.002, 0.008),
           "rain": rng.uniform(0.008, 0.02), "fog": rng.uniform(0.02, 0.06)}[weather]
    fog_col = 0.5 * hor + 0.5 * np.array([0.7, 0.72, 0.75])
    if clouds > 0.6:
        grey = np.array([0.62, 0.64, 0.67]) * rng.uniform(0.75, 1.1)
        zen = zen * (1 - clouds) + grey * 0.9 * clouds
        hor = hor * (1 - clouds) + grey * clouds
        fog_col = grey
    exposure = 1.0
    if tod == "night":
        zen, hor = np.array([0.005, 0.008, 0.02]), np.array([0.03, 0.03, 0.045])
        amb = np.array([0.02, 0.025, 0.04])
        fog_col = np.array([0.04, 0.04, 0.05])
        exposure = 2.5
    elif tod == "dusk":
        amb = amb * 0.55
        exposure = 1.5
    return Lighting(sun, sun_col, float(sun_int), np.asarray(amb, float), zen, hor, float(fog), fog_col,
                    rain=float(rng.uniform(0.4, 1.0)) if weather == "rain" else 0.0,
                    wet=float(rng.uniform(0.6, 1.0)) if weather == "rain" else float(rng.uniform(0, 0.15)),
                    night=tod == "night", clouds=float(clouds), exposure=exposure * float(rng.uniform(0.85, 1.15)),
                    weather=weather, time_of_day=tod)
