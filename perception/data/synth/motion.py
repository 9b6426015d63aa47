"""Motion of the synthetic world's agents: car following, walking and world poses."""

from __future__ import annotations

import math

import numpy as np

from perception.data.synth.agents import Agent
from perception.data.synth.road import RoadLayout


def advance_agents(agents: list[Agent], ego: Agent, time: float, seed: int, dt: float) -> None:
    """Move ``agents`` and the ``ego`` along their roads by ``dt`` seconds from ``time``: intelligent
    driver model car following per lane, constant speed on sidewalks and cross roads."""
    lanes: dict[int, list[Agent]] = {}
    for a in agents + [ego]:
        if a.mode == "lane":
            lanes.setdefault(a.lane, []).append(a)
    for lane, group in lanes.items():
        direction = group[0].direction
        group.sort(key=lambda a: a.s * direction)
        for i, a in enumerate(group):
            v0 = a.v0
            if a is ego:   # the ego varies its cruise speed smoothly
                v0 = a.v0 * (1.0 + 0.15 * math.sin(0.25 * time + seed))
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
    for a in agents:
        if a.mode in ("sidewalk", "cross"):
            a.s += a.direction * a.speed * dt
        if a.cls in ("pedestrian", "cyclist") and a.speed > 0:
            stride = 1.4 if a.cls == "pedestrian" else 2.2
            a.phase += a.speed * dt / stride * 2 * math.pi


def update_poses(agents: list[Agent], lay: RoadLayout, dt: float | None = None) -> None:
    """World pose of every agent from its road coordinates; velocity by finite difference over
    ``dt`` (or from speed and heading when ``dt`` is None)."""
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
