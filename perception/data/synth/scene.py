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
import torch

from perception.data.classes import CLASSES
from perception.data.synth import assets
from perception.data.synth.assets import Asset
from perception.data.synth.materials import make_palette
from perception.data.synth.road import RoadLayout, generate_layout
from perception.geometry.transforms import rot_z

log = logging.getLogger(__name__)

# semantic ids of the per-pixel semantic map (extras["semantic"])
SEMANTIC_CLASSES: tuple[str, ...] = ("sky", "road", "lane_marking", "sidewalk", "terrain", "building",
                                     "vegetation", "pole", "car", "truck", "bus", "pedestrian", "cyclist")
SEM = {n: i for i, n in enumerate(SEMANTIC_CLASSES)}
CLS = {n: i for i, n in enumerate(CLASSES)}

SIZE_RANGES = {  # (l, w, h) min/max in metres
    "car": ((3.8, 1.65, 1.4), (5.0, 2.0, 1.75)),
    "truck": ((6.5, 2.3, 2.8), (10.0, 2.55, 3.8)),
    "bus": ((10.0, 2.5, 3.0), (12.5, 2.6, 3.4)),
    "pedestrian": ((0.5, 0.5, 1.5), (0.7, 0.7, 1.95)),
    "cyclist": ((1.65, 0.55, 1.6), (1.9, 0.7, 1.85)),
}


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
    ego_speed: tuple[float, float] = (6.0, 14.0)


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


@dataclass
class StaticScene:
    """Static primitives in world coordinates (built once per world)."""

    kind: np.ndarray
    center: np.ndarray
    half: np.ndarray
    R: np.ndarray                      # world -> primitive rotation
    mat: np.ndarray
    color: np.ndarray
    sem: np.ndarray
    tag: np.ndarray                    # per-primitive random number for textures


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

    @property
    def extras_palette(self) -> dict:
        return self.palette


def _prims_to_world(asset: Asset, x: float, y: float, yaw: float, z: float = 0.0) -> dict[str, np.ndarray]:
    Rz = rot_z(yaw)
    R_wp = Rz[None] @ asset.R                     # primitive -> world
    return {"kind": asset.kind, "center": asset.center @ Rz.T + np.array([x, y, z]), "half": asset.half,
            "R": np.transpose(R_wp, (0, 2, 1)), "mat": asset.mat, "color": asset.color}


def _cat(parts: list[dict[str, np.ndarray]], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not parts:
        shapes = {"kind": (0,), "center": (0, 3), "half": (0, 3), "R": (0, 3, 3), "mat": (0,), "color": (0, 3),
                  "sem": (0,), "tag": (0,), "obj": (0,)}
        return {k: np.zeros(shapes[k], np.int64 if k in ("kind", "mat", "sem", "obj") else np.float64) for k in keys}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


class World:
    """One procedurally generated episode (deterministic for a given seed and config)."""

    def __init__(self, seed: int = 0, config: WorldConfig | None = None) -> None:
        self.seed = int(seed)
        self.config = config or WorldConfig()
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED]))
        rng = self.rng
        cfg = self.config
        self.time = 0.0
        self.index = 0
        self._next_id = 1
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
        self.lighting = self._make_lighting()
        self.static = self._make_static()
        self.agents: list[Agent] = []
        self._make_traffic(s_start, length)
        self._update_poses()
        log.debug("world seed=%d scenery=%s lanes=%d+%d weather=%s/%s agents=%d static prims=%d", self.seed,
                  self.scenery, lay.lanes_fwd, lay.lanes_bwd, self.lighting.weather, self.lighting.time_of_day,
                  len(self.agents), len(self.static.kind))

    # ------------------------------------------------------------------ lighting
    def _make_lighting(self) -> Lighting:
        rng, cfg = self.rng, self.config
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

    # ------------------------------------------------------------------ static scenery
    def _make_static(self) -> StaticScene:
        rng, lay = self.rng, self.layout
        parts: list[dict[str, np.ndarray]] = []
        self._lamp_lights: list[np.ndarray] = []
        scen = self.scenery
        outer = lay.outer

        def free(points: np.ndarray, margin: float) -> bool:
            """True when all points are at least ``margin`` beyond every road's sidewalk."""
            x = torch.as_tensor(points[:, 0], dtype=torch.float64)
            y = torch.as_tensor(points[:, 1], dtype=torch.float64)
            surf = lay.surface(x, y)
            return bool((surf["dc"] >= lay.curb + lay.sidewalk + margin).all())

        def add(asset: Asset, x: float, y: float, yaw: float, sem: int, check: float | None = None) -> bool:
            w = _prims_to_world(asset, x, y, yaw)
            if check is not None:
                # footprint corners of every primitive's bounding box
                pts = []
                for c, h, Rt in zip(w["center"], w["half"], w["R"]):
                    for sx in (-1, 1):
                        for sy in (-1, 1):
                            pts.append(c + Rt.T @ np.array([sx * h[0], sy * h[1], 0.0]))
                if not free(np.array(pts), check):
                    return False
            n = len(asset)
            w["sem"] = np.full(n, sem)
            w["tag"] = np.full(n, rng.random())
            parts.append(w)
            return True

        total = lay.length
        # buildings / houses along both sides
        if scen != "rural":
            for side in (-1, 1):
                s = float(rng.uniform(0, 10))
                while s < total:
                    if scen == "urban":
                        l, w, h = rng.uniform(10, 30), rng.uniform(10, 20), rng.uniform(8, 35)
                        setback = rng.uniform(0.0, 2.0)
                        gap = rng.uniform(0.0, 6.0) if rng.random() < 0.7 else rng.uniform(8, 20)
                        gable = False
                    else:
                        l, w, h = rng.uniform(8, 14), rng.uniform(8, 12), rng.uniform(3.5, 7)
                        setback = rng.uniform(4.0, 12.0)
                        gap = rng.uniform(6.0, 18.0)
                        gable = rng.random() < 0.75
                    sc = s + l / 2
                    dd = side * (outer + setback + w / 2)
                    x, y, hd = lay.pose(np.array([sc]), dd)
                    add(assets.building(rng, l, w, h, gable), float(x[0]), float(y[0]), float(hd[0]), SEM["building"],
                        check=0.5)
                    if scen == "suburban" and rng.random() < 0.5:   # front-garden hedge / wall
                        hl = l * rng.uniform(0.6, 1.0)
                        hx, hy, hh = lay.pose(np.array([sc]), side * (outer + 0.6))
                        a = assets.hedge(rng, hl) if rng.random() < 0.6 else assets.wall(rng, hl)
                        add(a, float(hx[0]), float(hy[0]), float(hh[0]),
                            SEM["vegetation"] if a.mat[0] == assets.HEDGE else SEM["building"], check=0.0)
                    s += l + gap
        # trees
        spacing = {"urban": 18.0, "suburban": 11.0, "rural": 8.0}[scen]
        for side in (-1, 1):
            s = float(rng.uniform(0, spacing))
            while s < total:
                if scen == "rural":
                    dd = side * (outer + rng.uniform(1.0, 25.0))
                    scale = rng.uniform(1.0, 1.8)
                else:
                    dd = side * (lay.half_width + lay.curb + lay.sidewalk - 0.8)
                    scale = rng.uniform(0.8, 1.2)
                x, y, _ = lay.pose(np.array([s]), dd)
                tpts = np.array([[x[0], y[0]]])
                surf = lay.surface(torch.as_tensor(tpts[:, 0]), torch.as_tensor(tpts[:, 1]))
                if float(surf["dc"][0]) > lay.curb + 0.5:
                    add(assets.tree(rng, scale), float(x[0]), float(y[0]), 0.0, SEM["vegetation"])
                s += spacing * rng.uniform(0.6, 1.6)
        # street lamps (both sides, staggered) and signs
        lamp_sp = rng.uniform(25, 40)
        for side in (-1, 1):
            s = float(rng.uniform(0, lamp_sp))
            while s < total:
                dd = side * (lay.half_width + lay.curb + 0.4)
                x, y, hd = lay.pose(np.array([s]), dd)
                arm = rng.uniform(1.0, 2.5)
                surf = lay.surface(torch.as_tensor(x), torch.as_tensor(y))
                if float(surf["dc"][0]) > lay.curb:
                    a = assets.street_lamp(rng, -side * arm)
                    add(a, float(x[0]), float(y[0]), float(hd[0]), SEM["pole"])
                    lx, ly, _ = lay.pose(np.array([s]), dd - side * (arm - 0.25))
                    self._lamp_lights.append(np.array([lx[0], ly[0], a.center[2][2]]))
                if rng.random() < 0.3:
                    ss = s + rng.uniform(5, 15)
                    x2, y2, h2 = lay.pose(np.array([ss]), side * (lay.half_width + lay.curb + 0.5))
                    add(assets.sign_post(rng), float(x2[0]), float(y2[0]),
                        float(h2[0]) + (math.pi if side > 0 else 0.0), SEM["pole"])
                s += lamp_sp
        # traffic lights at the corners of intersections
        for c in lay.crossings:
            for sx, sy in ((1, 1), (-1, -1), (1, -1), (-1, 1)):
                if not c.both_sides and sy < 0:
                    continue
                dd = sy * (lay.half_width + lay.curb + 0.5)
                sm = c.s_main + sx * (c.half_width + lay.curb + 0.5)
                x, y, hd = lay.pose(np.array([sm]), dd)
                add(assets.traffic_light(rng), float(x[0]), float(y[0]),
                    float(hd[0]) + (math.pi if sx > 0 else 0.0), SEM["pole"])
        parts += self._roadside_barriers()
        keys = ("kind", "center", "half", "R", "mat", "color", "sem", "tag")
        cat = _cat(parts, keys)
        return StaticScene(**cat)

    def _roadside_barriers(self) -> list[dict[str, np.ndarray]]:
        """Concrete barriers or guard rails just beyond the curb (``WorldConfig.barriers``), in
        segments of 6 m that follow the curves, broken at cross roads. Highways and rural roads
        have them; without them the detector took a real concrete median for a car."""
        p = self.config.barriers * {"rural": 1.0, "suburban": 0.35, "urban": 0.15}[self.scenery]
        if p <= 0:
            return []
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xBA55]))   # not self.rng
        lay, parts = self.layout, []
        seg = 6.0
        for side in (-1, 1):
            if rng.random() >= p:
                continue
            concrete = rng.random() < 0.55
            look = dict(hgt=rng.uniform(0.8, 1.05), grey=rng.uniform(0.5, 0.8)) if concrete else \
                dict(top=rng.uniform(0.55, 0.8), grey=rng.uniform(0.75, 1.15))
            dd = side * (lay.half_width + lay.curb + (0.35 if concrete else 0.25))
            s = float(rng.uniform(0, 20))
            end = lay.length - float(rng.uniform(0, 20))
            while s + seg < end:
                sc = s + seg / 2
                if not any(abs(c.s_main - sc) < c.half_width + lay.curb + lay.sidewalk + seg for c in lay.crossings):
                    x, y, hd = lay.pose(np.array([sc]), dd)
                    a = assets.jersey_barrier(rng, seg + 0.02, **look) if concrete else \
                        assets.guard_rail(rng, seg + 0.02, **look)
                    w = _prims_to_world(a, float(x[0]), float(y[0]), float(hd[0]) + (math.pi if side > 0 else 0.0))
                    w["sem"] = np.full(len(a), SEM["building"])
                    w["tag"] = np.full(len(a), rng.random())
                    parts.append(w)
                s += seg
        return parts

    # ------------------------------------------------------------------ traffic
    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def _agent(self, cls: str, mode: str, **kw) -> Agent:
        lo, hi = SIZE_RANGES[cls]
        size = self.rng.uniform(lo, hi)
        a = Agent(self._new_id(), cls, size, mode, asset_seed=int(self.rng.integers(1 << 31)),
                  phase=float(self.rng.uniform(0, 2 * math.pi)), **kw)
        if cls not in ("pedestrian", "cyclist"):
            a.asset = self._build_asset(a)
        self.agents.append(a)
        return a

    def _build_asset(self, a: Agent) -> Asset:
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

    def _animated_asset(self, a: Agent) -> Asset:
        """Pedestrian / cyclist shape at its walk (pedal) phase, quantised to 16 poses and cached."""
        k = int(round(a.phase / (2 * math.pi) * 16)) % 16
        cache = self._pose_cache.setdefault(a.id, {})
        if k not in cache:
            phase = a.phase
            a.phase = k * 2 * math.pi / 16
            cache[k] = self._build_asset(a)
            a.phase = phase
        return cache[k]

    def _vehicle_class(self) -> str:
        return str(self.rng.choice(["car", "truck", "bus"], p=[0.82, 0.11, 0.07]))

    def _make_traffic(self, s_start: float, total: float) -> None:
        rng, lay, cfg = self.rng, self.layout, self.config
        dens = {"urban": 1.0, "suburban": 0.7, "rural": 0.45}[self.scenery] * cfg.traffic
        lo, hi = 20.0, total - 20
        # moving vehicles per lane
        for lane in list(range(lay.lanes_fwd)) + [-(i + 1) for i in range(lay.lanes_bwd)]:
            direction = 1 if lane >= 0 else -1
            s = lo + rng.uniform(0, 20)
            while s < hi:
                gap = rng.exponential(35.0 / max(dens, 1e-3)) + 8
                s += gap
                if lane == self.ego_lane and abs(s - s_start) < 15:
                    continue
                if s >= hi:
                    break
                cls = self._vehicle_class()
                v0 = float(rng.uniform(7, 15)) * (0.85 if cls != "car" else 1.0)
                a = self._agent(cls, "lane", s=s, d=lay.lane_center(lane), direction=direction, lane=lane, v0=v0)
                a.speed = v0 * rng.uniform(0.6, 1.0)
                s += a.size[0]
        # parked cars in the parking lanes
        if lay.parking > 0:
            for side in (-1, 1):
                dd = side * (max(lay.lanes_fwd, lay.lanes_bwd) * lay.lane_width + lay.parking / 2)
                s = lo
                while s < hi:
                    s += rng.uniform(1.0, 4.0) if rng.random() < 0.7 * cfg.parked else rng.uniform(8, 30)
                    a_cls = "car" if rng.random() < 0.93 else "truck"
                    lo_s, hi_s = SIZE_RANGES[a_cls]
                    if any(abs(c.s_main - (s + 3)) < c.half_width + 8 for c in lay.crossings):
                        s += 10
                        continue
                    a = self._agent(a_cls, "parked", s=s + 3, d=dd, direction=1 if rng.random() < 0.9 or side < 0 else -1)
                    if side > 0:
                        a.direction = -1 if rng.random() < 0.8 else 1
                    a.d = side * (max(lay.lanes_fwd, lay.lanes_bwd) * lay.lane_width + lay.parking - a.size[1] / 2 - 0.15)
                    s += a.size[0]
        # cross-road vehicles: queued at the stop line or driving away
        for ci, c in enumerate(lay.crossings):
            for lane_side in (-1, 1):
                for arm in (-1, 1):
                    if not c.both_sides and self._arm_is_missing(c, arm):
                        continue
                    n = rng.poisson(1.5 * dens)
                    u = lay.half_width + lay.curb + lay.sidewalk + 2.0
                    moving = rng.random() < 0.5
                    for _ in range(n):
                        cls = self._vehicle_class()
                        a = self._agent(cls, "cross", cross=ci)
                        u += a.size[0] / 2
                        a.s = arm * u                     # signed distance along the cross road
                        a.d = lane_side * c.lane_width / 2
                        # right-hand traffic: on the arm side +1, lane_side -1 drives away (+u)
                        away = (lane_side == -1) == (arm == 1)
                        a.direction = arm if away else -arm
                        a.v0 = float(rng.uniform(6, 12)) if (away and moving) else 0.0
                        a.speed = a.v0
                        u += a.size[0] / 2 + rng.uniform(2, 12 if not away else 25)
        # pedestrians on sidewalks (some standing)
        pd = {"urban": 9.0, "suburban": 3.0, "rural": 0.6}[self.scenery] * cfg.pedestrians
        for side in (-1, 1):
            n = rng.poisson(pd * total / 100)
            for s in np.sort(rng.uniform(lo, hi, n)):
                dd = side * (lay.half_width + lay.curb + rng.uniform(0.5, max(0.6, lay.sidewalk - 0.5)))
                a = self._agent("pedestrian", "sidewalk", s=float(s), d=float(dd), direction=int(rng.choice([-1, 1])))
                a.v0 = float(rng.uniform(0.9, 1.7)) if rng.random() < 0.8 else 0.0
                a.speed = a.v0
                if a.v0 == 0:
                    a.yaw = float(rng.uniform(-math.pi, math.pi))
        # cyclists close to the right edge of the outer lanes
        cd = {"urban": 1.2, "suburban": 1.0, "rural": 0.4}[self.scenery] * cfg.pedestrians
        for side in (-1, 1):
            n = rng.poisson(cd * total / 200)
            nl = lay.lanes_fwd if side < 0 else lay.lanes_bwd
            lane = nl - 1 if side < 0 else -nl
            for s in rng.uniform(lo, hi, n):
                if lane == self.ego_lane and abs(s - s_start) < 20:
                    continue
                a = self._agent("cyclist", "lane", s=float(s), d=lay.lane_center(lane) + side * 0.9,
                                direction=1 if side < 0 else -1, lane=lane)
                a.v0 = float(rng.uniform(3.5, 7.0))
                a.speed = a.v0

    def _arm_is_missing(self, c, arm: int) -> bool:
        # T junction: the arm on the right of the main road (d_main < 0) does not exist
        x = c.x0 + arm * 20 * math.cos(c.heading)
        y = c.y0 + arm * 20 * math.sin(c.heading)
        _, d = self.layout.main_coords(torch.tensor([x], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))
        return float(d[0]) < 0

    # ------------------------------------------------------------------ motion
    def step(self, dt: float = 0.1) -> None:
        """Advance the world by ``dt`` seconds."""
        lanes: dict[int, list[Agent]] = {}
        for a in self.agents + [self.ego]:
            if a.mode == "lane":
                lanes.setdefault(a.lane, []).append(a)
        for lane, group in lanes.items():
            direction = group[0].direction
            group.sort(key=lambda a: a.s * direction)
            for i, a in enumerate(group):
                v0 = a.v0
                if a is self.ego:   # the ego varies its cruise speed smoothly
                    v0 = a.v0 * (1.0 + 0.15 * math.sin(0.25 * self.time + self.seed))
                acc = 1.5 * (1 - (a.speed / max(v0, 0.1)) ** 4)
                if i + 1 < len(group):
                    b = group[i + 1]
                    gap = (b.s - a.s) * direction - (a.size[0] + b.size[0]) / 2
                    s_star = 2.5 + a.speed * 1.2 + a.speed * (a.speed - b.speed) / (2 * math.sqrt(1.5 * 2.0))
                    acc -= 1.5 * (max(s_star, 0) / max(gap, 0.5)) ** 2
                acc = max(acc, -7.0)
                new_v = max(0.0, a.speed + acc * dt)
                a.s += direction * 0.5 * (a.speed + new_v) * dt
                a.speed = new_v
        for a in self.agents:
            if a.mode in ("sidewalk", "cross"):
                a.s += a.direction * a.speed * dt
            if a.cls in ("pedestrian", "cyclist") and a.speed > 0:
                stride = 1.4 if a.cls == "pedestrian" else 2.2
                a.phase += a.speed * dt / stride * 2 * math.pi
        self.time += dt
        self.index += 1
        self._update_poses(dt)

    def _update_poses(self, dt: float | None = None) -> None:
        lay = self.layout
        agents = self.agents + [self.ego]
        prev = np.array([(a.x, a.y) for a in agents])
        road = [a for a in agents if a.mode in ("lane", "parked", "sidewalk")]
        if road:
            x, y, h = lay.pose(np.array([a.s for a in road]), np.array([a.d for a in road]))
            for a, xi, yi, hi in zip(road, x, y, h):
                a.x, a.y = float(xi), float(yi)
                if a.mode != "sidewalk" or a.speed > 0:
                    a.yaw = float(hi) + (0.0 if a.direction > 0 else math.pi)
        for a in agents:
            if a.mode == "cross":
                c = lay.crossings[a.cross]
                ch, sh = math.cos(c.heading), math.sin(c.heading)
                a.x = c.x0 + a.s * ch - a.d * sh
                a.y = c.y0 + a.s * sh + a.d * ch
                a.yaw = c.heading + (0.0 if a.direction > 0 else math.pi)
        for a, (px, py) in zip(agents, prev):
            if dt:
                a.vx, a.vy = (a.x - px) / dt, (a.y - py) / dt
            else:
                a.vx, a.vy = a.speed * math.cos(a.yaw), a.speed * math.sin(a.yaw)
            a.yaw = math.atan2(math.sin(a.yaw), math.cos(a.yaw))

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
            asset = a.asset if a.asset is not None else self._animated_asset(a)
            w = _prims_to_world(asset, a.x, a.y, a.yaw)
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
        prims = _cat(parts, ("kind", "center", "half", "R", "mat", "color", "sem", "tag", "obj"))
        objects = {"id": np.array(ids, np.int64), "label": np.array(labels, np.int64),
                   "center": np.array(centers, np.float64).reshape(-1, 3), "size": np.array(sizes).reshape(-1, 3),
                   "yaw": np.array(yaws, np.float64), "velocity": np.array(vels, np.float64).reshape(-1, 2)}
        lamps = np.array(self._lamp_lights).reshape(-1, 3)
        if len(lamps):
            lamps = lamps[np.hypot(lamps[:, 0] - ex, lamps[:, 1] - ey) < R]
        return Frame(self.time, self.index, self.T_world_ego, np.array([self.ego.vx, self.ego.vy]), prims, objects,
                     self.lighting, self.layout, lamps, self.seed, self.palette)
