"""Initial traffic of a synthetic episode: vehicles per lane, parked cars, cross-road queues,
pedestrians and cyclists."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from perception.data.synth.agents import SIZE_RANGES, Agent, build_asset
from perception.data.synth.road import RoadLayout

if TYPE_CHECKING:
    from perception.data.synth.scene import WorldConfig


class AgentSpawner:
    """Creates agents with consecutive ids from the world's random stream."""

    def __init__(self, rng: np.random.Generator, next_id: int = 1) -> None:
        self.rng = rng
        self.next_id = next_id
        self.agents: list[Agent] = []

    def spawn(self, cls: str, mode: str, **kw) -> Agent:
        """A new agent of class ``cls`` with a random size, shape seed and walk phase."""
        lo, hi = SIZE_RANGES[cls]
        size = self.rng.uniform(lo, hi)
        a = Agent(self.next_id, cls, size, mode, asset_seed=int(self.rng.integers(1 << 31)),
                  phase=float(self.rng.uniform(0, 2 * math.pi)), **kw)
        if cls not in ("pedestrian", "cyclist"):
            a.asset = build_asset(a)
        self.next_id += 1
        self.agents.append(a)
        return a

    def vehicle_class(self) -> str:
        return str(self.rng.choice(["car", "truck", "bus"], p=[0.82, 0.11, 0.07]))


def make_traffic(spawner: AgentSpawner, lay: RoadLayout, cfg: WorldConfig, scenery: str, ego_lane: int,
                 s_start: float, total: float) -> None:
    """Moving and parked vehicles, cross-road queues, pedestrians and cyclists along ``lay``
    (appended to ``spawner.agents``; the ego starts at ``s_start`` in lane ``ego_lane``)."""
    rng = spawner.rng
    dens = {"urban": 1.0, "suburban": 0.7, "rural": 0.45}[scenery] * cfg.traffic
    lo, hi = 20.0, total - 20
    # moving vehicles per lane
    for lane in list(range(lay.lanes_fwd)) + [-(i + 1) for i in range(lay.lanes_bwd)]:
        direction = 1 if lane >= 0 else -1
        s = lo + rng.uniform(0, 20)
        while s < hi:
            gap = rng.exponential(35.0 / max(dens, 1e-3)) + 8
            s += gap
            if lane == ego_lane and abs(s - s_start) < 15:
                continue
            if s >= hi:
                break
            cls = spawner.vehicle_class()
            v0 = float(rng.uniform(7, 15)) * (0.85 if cls != "car" else 1.0)
            a = spawner.spawn(cls, "lane", s=s, d=lay.lane_center(lane), direction=direction, lane=lane, v0=v0)
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
                a = spawner.spawn(a_cls, "parked", s=s + 3, d=dd, direction=1 if rng.random() < 0.9 or side < 0 else -1)
                if side > 0:
                    a.direction = -1 if rng.random() < 0.8 else 1
                a.d = side * (max(lay.lanes_fwd, lay.lanes_bwd) * lay.lane_width + lay.parking - a.size[1] / 2 - 0.15)
                s += a.size[0]
    # cross-road vehicles: queued at the stop line or driving away
    for ci, c in enumerate(lay.crossings):
        for lane_side in (-1, 1):
            for arm in (-1, 1):
                if not c.both_sides and arm_is_missing(lay, c, arm):
                    continue
                n = rng.poisson(1.5 * dens)
                u = lay.half_width + lay.curb + lay.sidewalk + 2.0
                moving = rng.random() < 0.5
                for _ in range(n):
                    cls = spawner.vehicle_class()
                    a = spawner.spawn(cls, "cross", cross=ci)
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
    pd = {"urban": 9.0, "suburban": 3.0, "rural": 0.6}[scenery] * cfg.pedestrians
    for side in (-1, 1):
        n = rng.poisson(pd * total / 100)
        for s in np.sort(rng.uniform(lo, hi, n)):
            dd = side * (lay.half_width + lay.curb + rng.uniform(0.5, max(0.6, lay.sidewalk - 0.5)))
            a = spawner.spawn("pedestrian", "sidewalk", s=float(s), d=float(dd), direction=int(rng.choice([-1, 1])))
            a.v0 = float(rng.uniform(0.9, 1.7)) if rng.random() < 0.8 else 0.0
            a.speed = a.v0
            if a.v0 == 0:
                a.yaw = float(rng.uniform(-math.pi, math.pi))
    # cyclists close to the right edge of the outer lanes
    cd = {"urban": 1.2, "suburban": 1.0, "rural": 0.4}[scenery] * cfg.pedestrians
    for side in (-1, 1):
        n = rng.poisson(cd * total / 200)
        nl = lay.lanes_fwd if side < 0 else lay.lanes_bwd
        lane = nl - 1 if side < 0 else -nl
        for s in rng.uniform(lo, hi, n):
            if lane == ego_lane and abs(s - s_start) < 20:
                continue
            a = spawner.spawn("cyclist", "lane", s=float(s), d=lay.lane_center(lane) + side * 0.9,
                            direction=1 if side < 0 else -1, lane=lane)
            a.v0 = float(rng.uniform(3.5, 7.0))
            a.speed = a.v0


def arm_is_missing(lay: RoadLayout, c, arm: int) -> bool:
    # T junction: the arm on the right of the main road (d_main < 0) does not exist
    x = c.x0 + arm * 20 * math.cos(c.heading)
    y = c.y0 + arm * 20 * math.sin(c.heading)
    _, d = lay.main_coords(torch.tensor([x], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))
    return float(d[0]) < 0
