"""Static scenery of a synthetic episode: buildings, vegetation, poles, signs and barriers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from perception.data.synth import assets
from perception.data.synth.assets import Asset
from perception.data.synth.primitives import SEM, concat_prims, prims_to_world
from perception.data.synth.road import RoadLayout


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


def make_static(rng: np.random.Generator, lay: RoadLayout, scenery: str, seed: int, barriers: float,
                roadworks: float = 0.0, ego_s: float = 150.0, shrubs: float = 0.0, closures: float = 0.0,
                medians: float = 0.0, arcades: float = 0.0, lane_closures: float = 0.0, greenery: float = 0.0
                ) -> tuple[StaticScene, list[np.ndarray]]:
    """Buildings, hedges, trees, street lamps, signs, traffic lights and (optionally) roadside
    barriers, road-works barrier runs, bushes, lane-edge barrier lines, lane closures, a median
    barrier, arcaded building fronts and tall near greenery along ``lay``; returns them with the street-lamp light positions.
    ``ego_s``: where along the road the ego starts (road-works runs and barrier lines are placed
    near it)."""
    parts: list[dict[str, np.ndarray]] = []
    lamp_lights: list[np.ndarray] = []
    scen = scenery
    outer = lay.outer

    def free(points: np.ndarray, margin: float) -> bool:
        """True when all points are at least ``margin`` beyond every road's sidewalk."""
        x = torch.as_tensor(points[:, 0], dtype=torch.float64)
        y = torch.as_tensor(points[:, 1], dtype=torch.float64)
        surf = lay.surface(x, y)
        return bool((surf["dc"] >= lay.curb + lay.sidewalk + margin).all())

    def add(asset: Asset, x: float, y: float, yaw: float, sem: int, check: float | None = None,
            footprint: Asset | None = None, tag_rng: np.random.Generator | None = None) -> bool:
        """Place ``asset`` unless ``check`` is given and ``footprint`` (default: the asset)
        comes within ``check`` of a sidewalk. ``tag_rng``: the stream of its tag (default: the
        world's main stream; an opt-in option passes its own, so it leaves the rest unchanged)."""
        w = prims_to_world(asset, x, y, yaw)
        if check is not None:
            # footprint corners of every primitive's bounding box
            pts = []
            fw = w if footprint is None else prims_to_world(footprint, x, y, yaw)
            for c, h, Rt in zip(fw["center"], fw["half"], fw["R"]):
                for sx in (-1, 1):
                    for sy in (-1, 1):
                        pts.append(c + Rt.T @ np.array([sx * h[0], sy * h[1], 0.0]))
            if not free(np.array(pts), check):
                return False
        n = len(asset)
        w["sem"] = np.full(n, sem)
        w["tag"] = np.full(n, (rng if tag_rng is None else tag_rng).random())
        parts.append(w)
        return True

    total = lay.length
    # arcades: an own random stream, so that arcades=0 leaves every seed's world unchanged
    arc_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA2CA]))
    p_arcade = arcades * {"urban": 1.0, "suburban": 0.3, "rural": 0.0}[scen]
    # tall near greenery: an own random stream too (forecourt hedges, larger street trees)
    green_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x64EE]))
    p_forecourt = greenery * {"urban": 1.0, "suburban": 0.5, "rural": 0.0}[scen]
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
                forecourt = float(green_rng.uniform(2.5, 6.0)) if p_forecourt > 0 and green_rng.random() < p_forecourt else 0.0
                dd = side * (outer + setback + forecourt + w / 2)
                x, y, hd = lay.pose(np.array([sc]), dd)
                house = assets.building(rng, l, w, h, gable)
                shown = house
                if p_arcade > 0 and arc_rng.random() < p_arcade:   # same footprint, same check
                    shown = assets.with_arcade(house, arc_rng, facing=-side)
                placed = add(shown, float(x[0]), float(y[0]), float(hd[0]), SEM["building"], check=0.5, footprint=house)
                if placed and forecourt > 0:   # a tall hedge along the forecourt's road side
                    hl = l * float(green_rng.uniform(0.5, 1.0))
                    hs = sc + float(green_rng.uniform(-0.5, 0.5)) * (l - hl)
                    hx, hy, hh = lay.pose(np.array([hs]), side * (outer + 0.9 + float(green_rng.uniform(0.0, 1.0))))   # clear of the sidewalk
                    add(assets.tall_hedge(green_rng, hl), float(hx[0]), float(hy[0]), float(hh[0]),
                        SEM["vegetation"], check=0.0, tag_rng=green_rng)
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
                if greenery > 0 and green_rng.random() < greenery:   # an old street tree
                    scale *= float(green_rng.uniform(1.4, 2.0))
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
                lamp_lights.append(np.array([lx[0], ly[0], a.center[2][2]]))
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
    parts += roadside_barriers(seed, lay, scen, barriers)
    parts += roadworks_barriers(seed, lay, roadworks, ego_s)
    parts += roadside_shrubs(seed, lay, scen, shrubs)
    parts += lane_edge_barriers(seed, lay, closures, ego_s)
    parts += lane_closure_barriers(seed, lay, lane_closures, ego_s)
    parts += median_barrier(seed, lay, scen, medians)
    keys = ("kind", "center", "half", "R", "mat", "color", "sem", "tag")
    cat = concat_prims(parts, keys)
    return StaticScene(**cat), lamp_lights


def _clear_of_crossings(lay: RoadLayout, s: float, margin: float) -> bool:
    """True when arc length ``s`` of the main road is more than ``margin`` beyond every cross road's sidewalks."""
    return not any(abs(c.s_main - s) < c.half_width + lay.curb + lay.sidewalk + margin for c in lay.crossings)


def _segments(lay: RoadLayout, s: float, end: float, seg: float) -> list[tuple[int, float]]:
    """``(k, centre)`` of the ``seg``-long segments laid from arc length ``s`` to ``end``, without
    those at cross roads; ``k`` counts every segment, skipped ones included."""
    out, k = [], 0
    while s + seg < end:
        if _clear_of_crossings(lay, s + seg / 2, seg):
            out.append((k, s + seg / 2))
        s += seg
        k += 1
    return out


def _placed(lay: RoadLayout, a: Asset, s: float, dd: float, yaw: float, sem: int,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """World primitives of asset ``a`` at arc length ``s``, lateral offset ``dd``, turned ``yaw``
    from the road's heading, labelled ``sem``, with one texture tag drawn from ``rng``."""
    x, y, hd = lay.pose(np.array([s]), dd)
    w = prims_to_world(a, float(x[0]), float(y[0]), float(hd[0]) + yaw)
    w["sem"] = np.full(len(a), sem)
    w["tag"] = np.full(len(a), rng.random())
    return w


def roadside_barriers(seed: int, lay: RoadLayout, scenery: str, barriers: float) -> list[dict[str, np.ndarray]]:
    """Concrete barriers or guard rails just beyond the curb (``WorldConfig.barriers``), in
    segments of 6 m that follow the curves, broken at cross roads. Highways and rural roads
    have them; without them the detector took a real concrete median for a car."""
    p = barriers * {"rural": 1.0, "suburban": 0.35, "urban": 0.15}[scenery]
    if p <= 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBA55]))   # not the world's main stream
    parts = []
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
        for _, sc in _segments(lay, s, end, seg):
            a = assets.jersey_barrier(rng, seg + 0.02, **look) if concrete else \
                assets.guard_rail(rng, seg + 0.02, **look)
            parts.append(_placed(lay, a, sc, dd, math.pi if side > 0 else 0.0, SEM["building"], rng))
    return parts


def roadworks_barriers(seed: int, lay: RoadLayout, roadworks: float, ego_s: float) -> list[dict[str, np.ndarray]]:
    """Runs of plastic road-works barriers (``WorldConfig.roadworks``: the chance per road side),
    10-40 m long, starting 30 m behind to 60 m ahead of the ego's start ``ego_s``, on the sidewalk about 1 m
    beyond the curb: segments of 1.2-2 m alternating red, orange or yellow with
    white. Real ones are common in towns; without them the detector called a row of red-and-white
    barriers a row of cars (nuScenes keyframe, docs/benchmarks.md section 8)."""
    if roadworks <= 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x20AD]))   # not the world's main stream
    parts = []
    for side in (-1, 1):
        if rng.random() >= roadworks:
            continue
        color = assets.ROADWORKS_COLORS[rng.integers(len(assets.ROADWORKS_COLORS))]
        seg, hgt = float(rng.uniform(1.2, 2.0)), float(rng.uniform(0.8, 1.0))
        dd = side * (lay.half_width + lay.curb + 0.95)        # behind any concrete barrier or rail
        s = float(np.clip(ego_s + rng.uniform(-30, 60), 0.0, lay.length - 50))
        end = min(lay.length - 5.0, s + float(rng.uniform(10, 40)))
        parts += _barrier_line(lay, rng, s, end, seg, hgt, color, dd)
    return parts


def _barrier_line(lay: RoadLayout, rng: np.random.Generator, s: float, end: float, seg: float, hgt: float,
                  color: np.ndarray, dd: float) -> list[dict[str, np.ndarray]]:
    """Plastic barrier units of length ``seg`` from arc length ``s`` to ``end`` at lateral offset
    ``dd``, alternating ``color`` and white, skipping cross roads."""
    parts = []
    for k, sc in _segments(lay, s, end, seg):
        a = assets.roadworks_barrier(rng, seg - 0.05, color if k % 2 == 0 else assets.ROADWORKS_WHITE, hgt)
        parts.append(_placed(lay, a, sc, dd, math.pi if dd > 0 else 0.0, SEM["building"], rng))
    return parts


def lane_edge_barriers(seed: int, lay: RoadLayout, closures: float, ego_s: float) -> list[dict[str, np.ndarray]]:
    """Lines of plastic barriers on the road itself (``WorldConfig.closures``: the chance per road
    side), as around road works that take the road's edge: 20-80 m of red or orange and white
    units along the outer edge of the outermost lane (beyond the parking lane where there is
    one), starting 20 m behind to 40 m ahead of the ego's start ``ego_s``. Seen from the next
    lane they are a receding row of red boxes 2-4 m away, which the detector called a row of
    cars in the nuScenes keyframe; the sidewalk runs of ``roadworks`` are rarely in view."""
    if closures <= 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC105]))   # not the world's main stream
    parts = []
    edge = max(lay.lanes_fwd, lay.lanes_bwd) * lay.lane_width + lay.parking + 0.3
    for side in (-1, 1):
        if rng.random() >= closures:
            continue
        color = assets.ROADWORKS_COLORS[int(rng.integers(2))]          # red or orange
        seg, hgt = float(rng.uniform(1.2, 2.0)), float(rng.uniform(0.8, 1.1))
        s = float(np.clip(ego_s + rng.uniform(-20, 40), 0.0, lay.length - 90))
        end = min(lay.length - 5.0, s + float(rng.uniform(20, 80)))
        parts += _barrier_line(lay, rng, s, end, seg, hgt, color, side * edge)
    return parts


def lane_closure_barriers(seed: int, lay: RoadLayout, lane_closures: float, ego_s: float) -> list[dict[str, np.ndarray]]:
    """Lines of water-filled barriers that close the outer edge of the outermost traffic lane
    (``WorldConfig.lane_closures``: the chance per road side), in front of the parking lane where
    there is one, so parked cars stand behind them: 15-60 m of units 1.0-2.0 m long with raised
    ends, centred 0.25 m inside the lane, each turned up to 5 degrees and set 0-0.6 m apart, red,
    orange or white, alternating or in random order, starting 20 m behind to 40 m ahead of the
    ego's start ``ego_s``. Real streets have such lines with cars parked behind them, which the
    detector boxed together with the cars as one large car (nuScenes keyframe, docs/training.md
    "Real roads"); ``closures`` lines stand beyond the parking lane, in front of nothing. Traffic
    does not avoid them: a parked truck wider than the parking lane reaches up to 0.35 m into the
    line, and a car in the outermost lane of a 3 m wide road may brush it."""
    if lane_closures <= 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC107]))   # not the world's main stream
    parts = []
    offset = max(lay.lanes_fwd, lay.lanes_bwd) * lay.lane_width - 0.25     # unit centres from the centre line
    for side in (-1, 1):
        if rng.random() >= lane_closures:
            continue
        palette = [assets.ROADWORKS_COLORS[int(rng.integers(2))], assets.ROADWORKS_WHITE]
        alternate = rng.random() < 0.6
        seg, hgt, gap = float(rng.uniform(1.0, 2.0)), float(rng.uniform(0.8, 1.1)), float(rng.uniform(0.0, 0.4))
        s = float(np.clip(ego_s + rng.uniform(-20, 40), 0.0, lay.length - 70))
        end, k = min(lay.length - 5.0, s + float(rng.uniform(15, 60))), 0
        while s + seg < end:
            if _clear_of_crossings(lay, s + seg / 2, seg):
                color = palette[k % 2] if alternate else palette[int(rng.integers(2))]
                a = assets.water_barrier(rng, seg, color, hgt)
                yaw = (math.pi if side > 0 else 0.0) + float(rng.uniform(-0.09, 0.09))
                parts.append(_placed(lay, a, s + seg / 2, side * offset, yaw, SEM["building"], rng))
            s += seg + gap * float(rng.uniform(0.5, 1.5))
            k += 1
    return parts


def median_barrier(seed: int, lay: RoadLayout, scenery: str, medians: float) -> list[dict[str, np.ndarray]]:
    """A concrete barrier on the centre line between the two directions (``WorldConfig.medians``:
    the chance that the road has one; x1 rural, x0.5 suburban, x0.25 urban), in 6 m segments
    broken at cross roads, half of them with a steel rail on top. Divided highways have one
    next to the fast lane, and the opposite traffic shows above it; without it the detector
    boxed a real median cut by the image's edge as a car (shared dashcam clip)."""
    p = medians * {"rural": 1.0, "suburban": 0.5, "urban": 0.25}[scenery]
    if p <= 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3ED1]))   # not the world's main stream
    if rng.random() >= p:
        return []
    hgt, grey, rail = float(rng.uniform(0.8, 1.05)), float(rng.uniform(0.5, 0.8)), bool(rng.random() < 0.5)
    seg, parts = 6.0, []
    for _, sc in _segments(lay, float(rng.uniform(0, 6)), lay.length - 1.0, seg):
        a = assets.median_barrier(rng, seg + 0.02, hgt, grey, rail)
        parts.append(_placed(lay, a, sc, 0.0, 0.0, SEM["building"], rng))
    return parts


def roadside_shrubs(seed: int, lay: RoadLayout, scenery: str, shrubs: float) -> list[dict[str, np.ndarray]]:
    """Bushes and planters beside the road (``WorldConfig.shrubs``: the chance that a road side has
    them): rows of low bushes beyond the sidewalk (front gardens, verges), and in towns bushes in
    raised planters on the sidewalk's road side. Real streets are full of them 3-15 m from the
    camera; without them the model read real bushes and planters as far away (nuScenes and
    KITTI depth, docs/training.md "Real roads")."""
    if shrubs <= 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B0B]))   # not the world's main stream
    parts = []
    veg = SEM["vegetation"]
    for side in (-1, 1):
        if rng.random() >= shrubs:
            continue
        # bush rows beyond the sidewalk: runs of 5-40 m with gaps, 0.3-3 m behind its outer edge
        s = float(rng.uniform(0, 10))
        behind = float(rng.uniform(0.3, 1.0 if scenery == "urban" else 3.0))
        while s < lay.length:
            run_end = s + float(rng.uniform(5, 40))
            while s < run_end and s < lay.length:
                if _clear_of_crossings(lay, s, 1.0):
                    parts.append(_placed(lay, assets.shrub(rng, float(rng.uniform(0.8, 2.0))), s,
                                         side * (lay.outer + behind + float(rng.uniform(0.0, 1.0))),
                                         float(rng.uniform(0, 3)), veg, rng))
                s += float(rng.uniform(0.8, 2.5))
            s += float(rng.uniform(5, 40))
        # raised planters on the sidewalk's road side (towns only)
        if scenery != "rural" and rng.random() < 0.6:
            s = float(rng.uniform(0, 20))
            while s < lay.length:
                l = float(rng.uniform(1.5, 8.0))
                if _clear_of_crossings(lay, s, l):
                    parts.append(_placed(lay, assets.planter(rng, l), s,
                                         side * (lay.half_width + lay.curb + float(rng.uniform(0.7, 1.2))), 0.0, veg, rng))
                s += l + float(rng.uniform(2, 15))
    return parts
