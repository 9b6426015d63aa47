"""The synthetic world: procedural layout, static scenery, traffic and ego motion.

``World(seed, config)`` builds one episode deterministically from ``seed`` (numpy
``Generator``); ``world.step(dt)`` advances traffic (intelligent-driver-model car
following per lane), pedestrians and the ego car; ``world.frame()`` returns the primitives,
objects and lighting of the current instant in world coordinates for the renderer.

World frame: x, y on the ground, z up, arbitrary origin (start of the main road). The ego
frame (x forward, y left, z up, origin on the ground under the rear axle) is the ego pose
``(x, y, yaw)`` in that frame; the ego car is flat on the ground (no pitch/roll).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from perception.data.classes import CLASSES
from perception.data.synth.agents import SIZE_RANGES, Agent, animated_asset
from perception.data.synth.assets import Asset
from perception.data.synth.lighting import Lighting, make_lighting
from perception.data.synth.materials import make_palette
from perception.data.synth.motion import advance_agents, update_poses
from perception.data.synth.primitives import SEM, SEMANTIC_CLASSES, concat_prims, prims_to_world
from perception.data.synth.road import RoadLayout, generate_layout
from perception.data.synth.scenery import StaticScene, make_static
from perception.data.synth.traffic import AgentSpawner, make_traffic
from perception.geometry.transforms import rot_z

__all__ = ["SEM", "SEMANTIC_CLASSES", "SIZE_RANGES", "Agent", "Frame", "Lighting", "StaticScene", "World",
           "WorldConfig"]

log = logging.getLogger(__name__)

CLS = {n: i for i, n in enumerate(CLASSES)}


@dataclass
class WorldConfig:
    """Knobs of the generator (defaults give varied urban/suburban/rural driving)."""

    duration: float = 20.0             # seconds the episode must support (road length)
    traffic: float = 1.0               # vehicle density multiplier
    pedestrians: float = 1.0           # pedestrian density multiplier
    parked: float = 1.0                # parked-car density multiplier
    intersections: float = 0.6         # expected cross roads per 200 m of straight road
    curviness: float = 0.5
    scenery: str | None = None         # "urban" | "suburban" | "rural" (None: random)
    weather: str | None = None         # "clear" | "overcast" | "rain" | "fog" (None: random)
    time_of_day: str | None = None     # "day" | "dusk" | "night" (None: random)
    p_night: float = 0.15
    p_dusk: float = 0.15
    draw_distance: float = 160.0       # metres around the ego that are rendered
    barriers: float = 0.0              # chance that a road side has concrete barriers / guard rails
                                       # (x1 rural, x0.35 suburban, x0.15 urban; own random stream,
                                       # so 0 leaves every existing seed's world unchanged)
    roadworks: float = 0.0             # chance per road side of a 10-40 m run of plastic road-works
                                       # barriers (own random stream, like ``barriers``)
    shrubs: float = 0.0                # chance per road side of bushes beyond the sidewalk and (in
                                       # towns) planters on it (own random stream, like ``barriers``)
    closures: float = 0.0              # chance per road side of a 20-80 m line of plastic barriers on
                                       # the road's edge (own random stream, like ``barriers``)
    medians: float = 0.0               # chance that the road has a concrete median barrier on its centre
                                       # line (x1 rural, x0.5 suburban, x0.25 urban; own random stream)
    arcades: float = 0.0               # chance that a town building has an arcade: upper floors on large
                                       # plain concrete pillars over a recessed ground storey (x1 urban,
                                       # x0.3 suburban; own random stream)
    lane_closures: float = 0.0         # chance per road side of a line of water-filled barriers closing the
                                       # outer lane's edge, parked cars behind it (own random stream)
    greenery: float = 0.0              # chance that a town building stands back behind a tall hedge (x1
                                       # urban, x0.5 suburban) and that a street tree is 1.4-2x larger
                                       # (own random stream)
    leaves: float = 0.0                # strength (0-1) of leaf-scale texture (2-3 cm) on bushes, hedges
                                       # and tree crowns, faded out where a pixel covers more than a
                                       # leaf (a render-time texture: 0 leaves every image unchanged)
    fast_shutter: float = 0.0          # chance that a daylight frame is exposed for 1/1000 s instead of
                                       # 1/150 s, as real cameras in sun are, so that near things get no
                                       # motion blur (render time, own random stream: 0 changes nothing)
    ego_speed: tuple[float, float] = (6.0, 14.0)


@dataclass
class Frame:
    """Everything the renderer needs for one instant (world coordinates)."""

    time: float
    index: int
    ego_pose: np.ndarray               # T_world_ego 4x4
    ego_velocity: np.ndarray           # world vx, vy
    prims: dict[str, np.ndarray]       # kind, center, half, R, mat, color, sem, tag, obj
    objects: dict[str, np.ndarray]     # id, label, center, size, yaw, velocity (world)
    lighting: Lighting
    layout: RoadLayout
    lamps: np.ndarray                  # [L, 3] street-lamp light positions (world)
    seed: int
    palette: dict = field(default_factory=dict)
    leaves: float = 0.0                # WorldConfig.leaves
    fast_shutter: float = 0.0          # WorldConfig.fast_shutter

    @property
    def extras_palette(self) -> dict:
        return self.palette


class World:
    """One procedurally generated episode (deterministic for a given seed and config).

    Composes the road layout (``road``), lighting (``lighting``), static scenery (``scenery``),
    traffic (``traffic``) and its motion (``motion``). They draw from one random stream in a
    fixed order (layout, palette, ego, lighting, scenery, traffic), so a seed always gives the
    same world; the roadside barriers have their own stream.
    """

    def __init__(self, seed: int = 0, config: WorldConfig | None = None) -> None:
        self.seed = int(seed)
        self.config = config or WorldConfig()
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED]))
        rng = self.rng
        cfg = self.config
        self.time = 0.0
        self.index = 0
        self._pose_cache: dict[int, dict[int, Asset]] = {}
        self.scenery = cfg.scenery or str(rng.choice(["urban", "suburban", "rural"], p=[0.45, 0.4, 0.15]))
        s_start = 150.0
        length = s_start + cfg.duration * (cfg.ego_speed[1] + 2) + 400
        inter = cfg.intersections * (0.3 if self.scenery == "rural" else 1.0)
        self.layout = generate_layout(rng, length, inter, cfg.curviness)
        lay = self.layout
        self.palette = make_palette(rng, self.scenery)
        self.ego_lane = int(rng.integers(0, lay.lanes_fwd))
        self.ego = Agent(0, "car", np.array([4.6, 1.85, 1.5]), "lane", s=s_start, d=lay.lane_center(self.ego_lane),
                         direction=1, lane=self.ego_lane, v0=float(rng.uniform(*cfg.ego_speed)))
        self.ego.speed = self.ego.v0
        self.lighting = make_lighting(rng, cfg)
        self.static, self._lamp_lights = make_static(rng, lay, self.scenery, self.seed, cfg.barriers, cfg.roadworks, s_start,
                                                        cfg.shrubs, cfg.closures, cfg.medians,
                                                        cfg.arcades, cfg.lane_closures, cfg.greenery)
        spawner = AgentSpawner(rng)
        self.agents: list[Agent] = spawner.agents
        make_traffic(spawner, lay, cfg, self.scenery, self.ego_lane, s_start, length)
        self._next_id = spawner.next_id
        update_poses(self.agents + [self.ego], lay)
        log.debug("world seed=%d scenery=%s lanes=%d+%d weather=%s/%s agents=%d static prims=%d", self.seed,
                  self.scenery, lay.lanes_fwd, lay.lanes_bwd, self.lighting.weather, self.lighting.time_of_day,
                  len(self.agents), len(self.static.kind))

    # ------------------------------------------------------------------ motion
    def step(self, dt: float = 0.1) -> None:
        """Advance the world by ``dt`` seconds."""
        advance_agents(self.agents, self.ego, self.time, self.seed, dt)
        self.time += dt
        self.index += 1
        update_poses(self.agents + [self.ego], self.layout, dt)

    # ------------------------------------------------------------------ snapshot
    @property
    def T_world_ego(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = rot_z(self.ego.yaw)
        T[:2, 3] = (self.ego.x, self.ego.y)
        return T

    def frame(self) -> Frame:
        """Primitives and objects near the ego at the current time."""
        ex, ey = self.ego.x, self.ego.y
        R = self.config.draw_distance
        st = self.static
        near = np.hypot(st.center[:, 0] - ex, st.center[:, 1] - ey) < R + np.linalg.norm(st.half, axis=1)
        parts = [{"kind": st.kind[near], "center": st.center[near], "half": st.half[near], "R": st.R[near],
                  "mat": st.mat[near], "color": st.color[near], "sem": st.sem[near], "tag": st.tag[near],
                  "obj": np.zeros(int(near.sum()), np.int64)}]
        ids, labels, centers, sizes, yaws, vels = [], [], [], [], [], []
        for a in self.agents:
            if math.hypot(a.x - ex, a.y - ey) > R:
                continue
            asset = a.asset if a.asset is not None else animated_asset(a, self._pose_cache)
            w = prims_to_world(asset, a.x, a.y, a.yaw)
            n = len(asset)
            w["sem"] = np.full(n, SEM[a.cls])
            w["tag"] = np.full(n, (a.asset_seed % 1000) / 1000.0)
            w["obj"] = np.full(n, a.id)
            parts.append(w)
            ids.append(a.id)
            labels.append(CLS[a.cls])
            centers.append((a.x, a.y, a.size[2] / 2))
            sizes.append(a.size)
            yaws.append(a.yaw)
            vels.append((a.vx, a.vy))
        prims = concat_prims(parts, ("kind", "center", "half", "R", "mat", "color", "sem", "tag", "obj"))
        objects = {"id": np.array(ids, np.int64), "label": np.array(labels, np.int64),
                   "center": np.array(centers, np.float64).reshape(-1, 3), "size": np.array(sizes).reshape(-1, 3),
                   "yaw": np.array(yaws, np.float64), "velocity": np.array(vels, np.float64).reshape(-1, 2)}
        lamps = np.array(self._lamp_lights).reshape(-1, 3)
        if len(lamps):
            lamps = lamps[np.hypot(lamps[:, 0] - ex, lamps[:, 1] - ey) < R]
        return Frame(self.time, self.index, self.T_world_ego, np.array([self.ego.vx, self.ego.vy]), prims, objects,
                     self.lighting, self.layout, lamps, self.seed, self.palette, self.config.leaves,
                     self.config.fast_shutter)
