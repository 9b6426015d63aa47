"""Shapes of the synthetic world's things as analytic primitives in the object's own frame.

Object frame: x forward, y left, z up, origin on the ground at the centre of the footprint.
Every primitive of a labelled object lies inside its 3D box ``[-l/2, l/2] x [-w/2, w/2] x
[0, h]`` so projected 3D boxes always bound the rendered masks.

A primitive is ``(kind, centre[3], half[3], R[3x3] primitive-to-object, material, rgb[3])``:
``BOX`` (half extents), ``CYL`` (capped cylinder along its local z: radius = half[0],
half length = half[2]) and ``ELL`` (ellipsoid with radii = half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perception.geometry.transforms import rot_x, rot_y, rot_z

BOX, CYL, ELL = 0, 1, 2

# materials (the shader in materials.py switches on these)
PAINT, CABIN, RUBBER, FACADE, ROOF, FOLIAGE, BARK, METAL, CLOTH, SKIN, LAMP, SIGN, BUSBODY, PLAIN, HEDGE, WINDOW = range(16)

CAR_COLORS = np.array([
    [0.85, 0.85, 0.84], [0.05, 0.05, 0.06], [0.55, 0.56, 0.58], [0.32, 0.33, 0.35], [0.62, 0.05, 0.04],
    [0.08, 0.16, 0.45], [0.03, 0.06, 0.18], [0.12, 0.30, 0.15], [0.70, 0.62, 0.48], [0.80, 0.45, 0.05],
    [0.90, 0.90, 0.92], [0.20, 0.10, 0.06], [0.45, 0.02, 0.05], [0.25, 0.45, 0.70], [0.95, 0.78, 0.10],
])
CAR_COLOR_P = np.array([18, 16, 14, 12, 6, 5, 4, 2, 3, 1.5, 8, 2, 2, 2, 1.0])
CAR_COLOR_P = CAR_COLOR_P / CAR_COLOR_P.sum()

FACADE_COLORS = np.array([
    [0.55, 0.25, 0.18], [0.75, 0.68, 0.55], [0.62, 0.62, 0.60], [0.85, 0.83, 0.78], [0.40, 0.42, 0.45],
    [0.30, 0.40, 0.50], [0.70, 0.55, 0.40], [0.85, 0.75, 0.60], [0.50, 0.35, 0.25], [0.60, 0.65, 0.58],
])

I3 = np.eye(3)


@dataclass
class Asset:
    """Primitives of one object in its frame (arrays of equal length)."""

    kind: np.ndarray
    center: np.ndarray
    half: np.ndarray
    R: np.ndarray
    mat: np.ndarray
    color: np.ndarray

    @classmethod
    def build(cls, prims: list[tuple]) -> "Asset":
        k, c, h, R, m, col = zip(*prims)
        return cls(np.array(k, np.int64), np.array(c, np.float64), np.array(h, np.float64),
                   np.array(R, np.float64), np.array(m, np.int64), np.array(col, np.float64))

    def __len__(self) -> int:
        return len(self.kind)


def _wheels(l: float, w: float, r: float, xs: list[float], width: float = 0.11) -> list[tuple]:
    Rw = rot_x(math.pi / 2)  # cylinder axis (local z) -> object y
    out = []
    for x in xs:
        for sy in (-1, 1):
            out.append((CYL, (x, sy * (w / 2 - width - 0.005), r), (r, r, width), Rw, RUBBER, (0.03, 0.03, 0.03)))
    return out


def _slope(x_base: float, z_base: float, dx: float, dh: float, half_w: float, front: bool, col) -> tuple:
    """A box whose outer face is the sloped window from (x_base, z_base) rising ``dh`` over ``dx``
    towards the cabin (windscreen when ``front``, rear window otherwise); it is thick enough to
    fill the triangle under the slope and otherwise hides inside the body/cabin boxes."""
    L = math.hypot(dx, dh)
    a = math.atan2(dh, dx)
    T = dx * dh / L + 0.02
    if front:
        nrm = np.array([dh, 0.0, dx]) / L
        mid = np.array([x_base - dx / 2, 0.0, z_base + dh / 2])
        R = rot_y(a)
    else:
        nrm = np.array([-dh, 0.0, dx]) / L
        mid = np.array([x_base + dx / 2, 0.0, z_base + dh / 2])
        R = rot_y(-a)
    c = mid - nrm * T / 2
    return (BOX, tuple(c), (L / 2, half_w, T / 2), R, WINDOW, col)


def car(rng: np.random.Generator, l: float, w: float, h: float) -> Asset:
    col = CAR_COLORS[rng.choice(len(CAR_COLORS), p=CAR_COLOR_P)] * rng.uniform(0.85, 1.1)
    col = np.clip(col, 0, 1)
    r = min(0.33, 0.22 * h)
    style = rng.random()
    if style < 0.45:      # sedan
        belt, hood, trunk, kf, kr = h * rng.uniform(0.55, 0.6), 0.27, 0.2, 1.5, 1.1
    elif style < 0.75:    # hatchback
        belt, hood, trunk, kf, kr = h * rng.uniform(0.55, 0.6), 0.25, 0.03, 1.4, 0.35
    else:                 # SUV / van
        belt, hood, trunk, kf, kr = h * rng.uniform(0.5, 0.56), 0.2, 0.02, 1.0, 0.15
    gh = h - belt
    body_lo = r * 0.55
    x_fb, x_rb = l / 2 - hood * l, -l / 2 + trunk * l
    dx_f, dx_r = kf * gh, kr * gh
    roof0, roof1 = x_rb + dx_r, x_fb - dx_f
    if roof1 - roof0 < 0.4:
        dx_f = dx_r = max(0.05, (x_fb - x_rb - 0.4) / 2)
        roof0, roof1 = x_rb + dx_r, x_fb - dx_f
    cw = w / 2 * 0.84
    prims = [
        (BOX, (0, 0, (body_lo + belt) / 2), (l / 2, w / 2 - 0.04, (belt - body_lo) / 2), I3, PAINT, col),
        (BOX, ((roof0 + roof1) / 2, 0, (belt + h) / 2), ((roof1 - roof0) / 2, cw, gh / 2), I3, CABIN, col),
        _slope(x_fb, belt, dx_f, gh, cw, True, col),
        _slope(x_rb, belt, dx_r, gh, cw, False, col),
    ]
    prims += _wheels(l, w, r, [l / 2 - 0.2 * l, -l / 2 + 0.19 * l], 0.12)
    return Asset.build(prims)


def truck(rng: np.random.Generator, l: float, w: float, h: float) -> Asset:
    cab_col = np.clip(CAR_COLORS[rng.integers(len(CAR_COLORS))] * rng.uniform(0.9, 1.1), 0, 1)
    box_col = np.array([0.9, 0.9, 0.88]) * rng.uniform(0.6, 1.05) if rng.random() < 0.6 else \
        np.clip(rng.uniform(0.1, 0.9, 3), 0, 1)
    r = 0.48
    cab_l = min(2.3, 0.3 * l)
    prims = [
        (BOX, (l / 2 - cab_l / 2, 0, (0.55 + h * 0.82) / 2), (cab_l / 2, w / 2 * 0.96, (h * 0.82 - 0.55) / 2),
         I3, CABIN, cab_col),
        (BOX, (-cab_l / 2 - 0.1, 0, (1.0 + h) / 2), ((l - cab_l - 0.2) / 2, w / 2, (h - 1.0) / 2), I3, PLAIN, box_col),
        (BOX, (0, 0, 0.75), (l / 2 * 0.97, w / 2 * 0.8, 0.22), I3, RUBBER, (0.08, 0.08, 0.08)),
    ]
    prims += _wheels(l, w, r, [l / 2 - 0.9, -l / 2 + 1.6, -l / 2 + 2.7], 0.15)
    return Asset.build(prims)


def bus(rng: np.random.Generator, l: float, w: float, h: float) -> Asset:
    col = np.array([[0.85, 0.15, 0.1], [0.95, 0.75, 0.1], [0.2, 0.4, 0.75], [0.9, 0.9, 0.9],
                    [0.2, 0.55, 0.3]])[rng.integers(5)] * rng.uniform(0.85, 1.05)
    prims = [(BOX, (0, 0, (0.35 + h) / 2), (l / 2, w / 2, (h - 0.35) / 2), I3, BUSBODY, np.clip(col, 0, 1))]
    prims += _wheels(l, w, 0.5, [l / 2 - 2.2, -l / 2 + 2.8], 0.15)
    return Asset.build(prims)


def pedestrian(rng: np.random.Generator, l: float, w: float, h: float, phase: float = 0.0) -> Asset:
    shirt = np.clip(rng.uniform(0.05, 0.9, 3) * rng.uniform(0.5, 1.0), 0, 1)
    pants = np.array([[0.1, 0.12, 0.25], [0.05, 0.05, 0.05], [0.3, 0.3, 0.32], [0.45, 0.38, 0.28]])[rng.integers(4)]
    skin = np.array([[0.85, 0.65, 0.5], [0.6, 0.42, 0.3], [0.35, 0.22, 0.15], [0.9, 0.75, 0.62]])[rng.integers(4)]
    leg_len = 0.47 * h
    torso_h = 0.34 * h
    head_r = 0.065 * h
    swing = 0.35 * math.sin(phase)
    prims = []
    for sy, sgn in ((-0.09, 1), (0.09, -1)):
        a = sgn * swing
        cx = math.sin(a) * leg_len / 2
        prims.append((CYL, (cx, sy, leg_len / 2 * math.cos(a) + 0.01), (0.075, 0.075, leg_len / 2), rot_y(a), CLOTH, pants))
    prims.append((ELL, (0, 0, leg_len + torso_h / 2), (0.13, min(0.22, w / 2 - 0.02), torso_h / 2 + 0.04), I3, CLOTH, shirt))
    for sy, sgn in ((-0.23, -1), (0.23, 1)):
        a = sgn * swing * 0.8
        arm = 0.3 * h
        prims.append((CYL, (math.sin(a) * arm / 2, min(abs(sy), w / 2 - 0.06) * np.sign(sy), leg_len + torso_h - arm / 2 * math.cos(a)),
                      (0.045, 0.045, arm / 2), rot_y(a), CLOTH, shirt))
    prims.append((ELL, (0.01, 0, h - head_r - 0.005), (head_r * 0.9, head_r * 0.85, head_r), I3, SKIN, skin))
    return Asset.build(prims)


def cyclist(rng: np.random.Generator, l: float, w: float, h: float, phase: float = 0.0) -> Asset:
    frame_col = np.clip(rng.uniform(0.0, 1.0, 3), 0, 1)
    shirt = np.clip(rng.uniform(0.05, 0.95, 3), 0, 1)
    skin = np.array([[0.85, 0.65, 0.5], [0.6, 0.42, 0.3], [0.35, 0.22, 0.15]])[rng.integers(3)]
    r = min(0.34, l * 0.19)
    Rw = rot_x(math.pi / 2)
    wx = l / 2 - r - 0.01
    prims = [
        (CYL, (wx, 0, r), (r, r, 0.025), Rw, RUBBER, (0.03, 0.03, 0.03)),
        (CYL, (-wx, 0, r), (r, r, 0.025), Rw, RUBBER, (0.03, 0.03, 0.03)),
        (BOX, (0, 0, r + 0.25), (wx * 0.75, 0.025, 0.03), rot_y(0.15), METAL, frame_col),
        (BOX, (-0.1, 0, r + 0.15), (0.03, 0.025, 0.25), rot_y(-0.3), METAL, frame_col),
        (BOX, (wx * 0.8, 0, r + 0.35), (0.03, 0.025, 0.3), rot_y(-0.35), METAL, frame_col),
        (BOX, (wx * 0.75, 0, r + 0.66), (0.03, min(0.28, w / 2 - 0.01), 0.02), I3, METAL, (0.1, 0.1, 0.1)),
    ]
    seat = (-0.2, r + 0.62)
    torso_len = 0.6
    lean = 0.7
    tc = (seat[0] + math.sin(lean) * torso_len / 2, seat[1] + math.cos(lean) * torso_len / 2)
    prims.append((ELL, (tc[0], 0, tc[1]), (0.12, min(0.2, w / 2 - 0.02), torso_len / 2), rot_y(lean), CLOTH, shirt))
    head_z = min(h - 0.12, seat[1] + math.cos(lean) * torso_len + 0.12)
    prims.append((ELL, (seat[0] + math.sin(lean) * torso_len + 0.06, 0, head_z), (0.11, 0.1, 0.12), I3, SKIN, skin))
    for sy, ph in ((-0.12, phase), (0.12, phase + math.pi)):
        a = 0.35 * math.sin(ph)
        prims.append((CYL, (seat[0] + 0.12 + 0.1 * math.sin(a), sy, (seat[1] + r) / 2 + 0.05), (0.06, 0.06, 0.36),
                      rot_y(0.25 + a), CLOTH, (0.1, 0.1, 0.15)))
    return Asset.build(prims)


def tree(rng: np.random.Generator, scale: float = 1.0) -> Asset:
    th = rng.uniform(1.8, 3.5) * scale
    tr = rng.uniform(0.12, 0.28) * scale
    leaf = np.array([0.16, 0.30, 0.08]) * rng.uniform(0.6, 1.3, 3)
    if rng.random() < 0.15:
        leaf = np.array([0.45, 0.35, 0.1]) * rng.uniform(0.7, 1.2)   # autumn
    cr = rng.uniform(1.4, 3.2) * scale
    ch = rng.uniform(1.6, 3.8) * scale
    prims = [(CYL, (0, 0, th / 2 + ch * 0.3), (tr, tr, th / 2 + ch * 0.3), I3, BARK, (0.25, 0.18, 0.12))]
    prims.append((ELL, (0, 0, th + ch), (cr, cr * rng.uniform(0.85, 1.15), ch), rot_z(rng.uniform(0, 3)), FOLIAGE, np.clip(leaf, 0, 1)))
    for _ in range(rng.integers(0, 3)):
        a = rng.uniform(0, 2 * math.pi)
        o = cr * 0.5
        prims.append((ELL, (o * math.cos(a), o * math.sin(a), th + ch * rng.uniform(0.6, 1.2)),
                      (cr * 0.7, cr * 0.7, ch * 0.65), I3, FOLIAGE, np.clip(leaf * rng.uniform(0.8, 1.2), 0, 1)))
    return Asset.build(prims)


def street_lamp(rng: np.random.Generator, arm_dir: float) -> Asset:
    """Pole at the origin with an arm reaching ``arm_dir`` metres along object +y."""
    hgt = rng.uniform(6.5, 9.0)
    col = np.array([0.35, 0.36, 0.38]) * rng.uniform(0.7, 1.3)
    arm = abs(arm_dir)
    sy = np.sign(arm_dir)
    return Asset.build([
        (CYL, (0, 0, hgt / 2), (0.09, 0.09, hgt / 2), I3, METAL, col),
        (BOX, (0, sy * arm / 2, hgt - 0.1), (0.06, arm / 2, 0.05), I3, METAL, col),
        (BOX, (0, sy * (arm - 0.25), hgt - 0.22), (0.18, 0.3, 0.07), I3, LAMP, (1.0, 0.95, 0.8)),
    ])


def sign_post(rng: np.random.Generator) -> Asset:
    hgt = rng.uniform(2.2, 2.8)
    kind = rng.integers(3)
    col = [(0.8, 0.08, 0.08), (0.1, 0.3, 0.75), (0.95, 0.8, 0.1)][kind]
    face = (CYL, (0, 0, hgt), (0.33, 0.33, 0.02), rot_y(math.pi / 2), SIGN, col) if kind == 0 else \
        (BOX, (0, 0, hgt), (0.02, 0.32, 0.32), I3 if kind == 1 else rot_x(math.pi / 4), SIGN, col)
    return Asset.build([(CYL, (0, 0, hgt / 2), (0.035, 0.035, hgt / 2), I3, METAL, (0.6, 0.6, 0.62)), face])


def traffic_light(rng: np.random.Generator) -> Asset:
    hgt = rng.uniform(2.8, 3.5)
    state = rng.integers(3)
    lamps = [(CYL, (0.16, 0, hgt + 0.25 - 0.25 * i), (0.08, 0.08, 0.02), rot_y(math.pi / 2), LAMP,
              ((1, 0.1, 0.05), (1, 0.7, 0.05), (0.1, 1, 0.4))[i] if i == state else (0.08, 0.08, 0.08)) for i in range(3)]
    return Asset.build([(CYL, (0, 0, hgt / 2), (0.07, 0.07, hgt / 2), I3, METAL, (0.2, 0.2, 0.2)),
                        (BOX, (0, 0, hgt), (0.14, 0.17, 0.42), I3, PLAIN, (0.08, 0.08, 0.08))] + lamps)


def building(rng: np.random.Generator, l: float, w: float, h: float, gable: bool) -> Asset:
    """Facade box of footprint l x w (x along the street) and height h; optional gable roof."""
    col = FACADE_COLORS[rng.integers(len(FACADE_COLORS))] * rng.uniform(0.75, 1.15, 3)
    prims = [(BOX, (0, 0, h / 2), (l / 2, w / 2, h / 2), I3, FACADE, np.clip(col, 0, 1))]
    if gable:
        side = w / math.sqrt(2) * 1.04
        roof = np.array([0.45, 0.18, 0.12]) * rng.uniform(0.5, 1.2) if rng.random() < 0.7 else np.array([0.25, 0.25, 0.28])
        prims.append((BOX, (0, 0, h), (l / 2 + 0.3, side / 2, side / 2), rot_x(math.pi / 4), ROOF, np.clip(roof, 0, 1)))
    return Asset.build(prims)


def with_arcade(building_asset: Asset, rng: np.random.Generator, facing: int) -> Asset:
    """``building_asset`` (from :func:`building`) with an arcade on its street front: the ground
    storey (3.5-8 m, at most 60 % of the height) set back 2-5 m under the upper floors, which rest
    on a row of large plain concrete pillars (0.5-1.4 m, square or round, every 4-8 m) along the
    front. ``facing``: the side of the street front along the local y axis (+1 or -1). The
    footprint does not change."""
    cx, cy, _ = building_asset.center[0]          # the facade box, standing on z = 0
    hl, hw, hh = building_asset.half[0]
    h = 2 * hh
    hp = min(float(rng.uniform(3.5, 8.0)), 0.6 * h)
    recess = min(float(rng.uniform(2.0, 5.0)), hw)
    col = building_asset.color[0]
    grey = np.clip(np.array([0.6, 0.59, 0.56]) * rng.uniform(0.7, 1.3) * rng.uniform(0.96, 1.04, 3), 0, 1)
    shade = np.clip(col * rng.uniform(0.35, 0.7), 0, 1)          # the ground storey lies in shadow
    prims = [(BOX, (cx, cy, hp + (h - hp) / 2), (hl, hw, (h - hp) / 2), I3, FACADE, col),
             (BOX, (cx, cy - facing * recess / 2, hp / 2), (hl, hw - recess / 2, hp / 2), I3, FACADE, shade)]
    pw = float(rng.uniform(0.25, 0.7))
    n = max(2, int(round(2 * hl / float(rng.uniform(4.0, 8.0)))) + 1)
    round_pillars = rng.random() < 0.4
    y = cy + facing * (hw - pw)
    for x in np.linspace(cx - hl + pw, cx + hl - pw, n):
        if round_pillars:
            prims.append((CYL, (float(x), y, hp / 2), (pw, pw, hp / 2), I3, PLAIN, grey))
        else:
            prims.append((BOX, (float(x), y, hp / 2), (pw, pw, hp / 2), I3, PLAIN, grey))
    rest = [(int(building_asset.kind[i]), building_asset.center[i], building_asset.half[i], building_asset.R[i],
             int(building_asset.mat[i]), building_asset.color[i]) for i in range(1, len(building_asset))]
    return Asset.build(prims + rest)


def hedge(rng: np.random.Generator, l: float) -> Asset:
    hgt = rng.uniform(0.8, 1.6)
    col = np.array([0.12, 0.25, 0.08]) * rng.uniform(0.7, 1.3)
    return Asset.build([(BOX, (0, 0, hgt / 2), (l / 2, 0.4, hgt / 2), I3, HEDGE, np.clip(col, 0, 1))])


def tall_hedge(rng: np.random.Generator, l: float) -> Asset:
    """Dense hedge 1.2-2.4 m tall and ``l`` long, 0.8-1.6 m deep, with a lumpy top, standing on
    the ground or (40 %) on a raised concrete planter 0.4-0.9 m high, as along building forecourts
    (``WorldConfig.greenery``)."""
    base = float(rng.uniform(0.4, 0.9)) if rng.random() < 0.4 else 0.0
    hgt, dep = float(rng.uniform(1.2, 2.4)), float(rng.uniform(0.8, 1.6))
    col = np.array([0.10, 0.21, 0.07]) * rng.uniform(0.55, 1.25) * rng.uniform(0.9, 1.1, 3)
    prims = []
    if base > 0:
        grey = np.array([0.55, 0.54, 0.51]) * rng.uniform(0.6, 1.25)
        prims.append((BOX, (0, 0, base / 2), (l / 2 + 0.1, dep / 2 + 0.1, base / 2), I3, PLAIN, np.clip(grey, 0, 1)))
    body = hgt * 0.8
    prims.append((BOX, (0, 0, base + body / 2), (l / 2, dep / 2, body / 2), I3, HEDGE, np.clip(col, 0, 1)))
    n = max(1, int(l / 1.5))
    for i in range(n):   # the lumpy top: one ellipsoid per 1.5 m
        x = -l / 2 + (i + 0.5) * l / n
        rz = hgt * float(rng.uniform(0.12, 0.3))
        prims.append((ELL, (x, 0, base + body), (l / n * 0.6, dep / 2 * 1.05, rz), I3, HEDGE,
                      np.clip(col * rng.uniform(0.85, 1.15), 0, 1)))
    return Asset.build(prims)


def shrub(rng: np.random.Generator, size: float = 1.0) -> Asset:
    """Low bush on the ground: one to three overlapping foliage ellipsoids, 0.4-1.6 m high
    (times ``size``), in greens from dark to yellowish."""
    leaf = np.array([0.11, 0.22, 0.06]) * rng.uniform(0.55, 1.5) * rng.uniform(0.85, 1.15, 3)
    if rng.random() < 0.2:
        leaf = np.array([0.30, 0.32, 0.10]) * rng.uniform(0.7, 1.2)          # light / yellowish
    prims = []
    for k in range(int(rng.integers(1, 4))):
        rx, ry = rng.uniform(0.35, 1.2, 2) * size
        rz = rng.uniform(0.25, 0.8) * size
        x = rng.uniform(-0.8, 0.8) * size * (k > 0)
        y = rng.uniform(-0.3, 0.3) * size * (k > 0)
        prims.append((ELL, (x, y, 0.85 * rz), (rx, ry, rz), rot_z(rng.uniform(0, 3)), FOLIAGE,
                      np.clip(leaf * rng.uniform(0.85, 1.15), 0, 1)))
    return Asset.build(prims)


def planter(rng: np.random.Generator, l: float) -> Asset:
    """Raised concrete planter box (0.4-0.9 m) of length ``l`` with bushes on top, as on town
    sidewalks and building forecourts."""
    hgt, w = rng.uniform(0.4, 0.9), rng.uniform(0.6, 1.3)
    grey = np.array([0.55, 0.54, 0.51]) * rng.uniform(0.6, 1.25)
    leaf = np.array([0.10, 0.22, 0.06]) * rng.uniform(0.6, 1.4) * rng.uniform(0.85, 1.15, 3)
    prims = [(BOX, (0, 0, hgt / 2), (l / 2, w / 2, hgt / 2), I3, PLAIN, np.clip(grey, 0, 1))]
    n = max(1, int(l / 1.2))
    for i in range(n):
        x = -l / 2 + (i + 0.5) * l / n
        rz = rng.uniform(0.25, 0.7)
        prims.append((ELL, (x, 0, hgt + 0.6 * rz), (min(l / n, 1.4) * rng.uniform(0.5, 0.75), w / 2 * 0.95, rz),
                      I3, FOLIAGE, np.clip(leaf * rng.uniform(0.85, 1.15), 0, 1)))
    return Asset.build(prims)


def wall(rng: np.random.Generator, l: float) -> Asset:
    hgt = rng.uniform(0.6, 2.0)
    col = FACADE_COLORS[rng.integers(len(FACADE_COLORS))] * rng.uniform(0.7, 1.1)
    return Asset.build([(BOX, (0, 0, hgt / 2), (l / 2, 0.15, hgt / 2), I3, PLAIN, np.clip(col, 0, 1))])


def _jersey_prims(rng: np.random.Generator, l: float, hgt: float, grey: float | None) -> list[tuple]:
    g = (rng.uniform(0.5, 0.8) if grey is None else grey) * rng.uniform(0.96, 1.04)
    col = np.clip(np.array([g, g * rng.uniform(0.97, 1.0), g * rng.uniform(0.92, 1.0)]), 0, 1)
    z1, z2 = 0.1 * hgt, 0.4 * hgt
    return [
        (BOX, (0, 0, z1 / 2), (l / 2, 0.3, z1 / 2), I3, PLAIN, col),
        (BOX, (0, 0, (z1 + z2) / 2), (l / 2, 0.22, (z2 - z1) / 2), I3, PLAIN, col * 0.95),
        (BOX, (0, 0, (z2 + hgt) / 2), (l / 2, 0.11, (hgt - z2) / 2), I3, PLAIN, col),
    ]


def jersey_barrier(rng: np.random.Generator, l: float, hgt: float | None = None, grey: float | None = None) -> Asset:
    """Concrete roadside barrier segment of length ``l`` (x along the road): the New Jersey profile
    as three stacked slabs, wide foot to narrow top, 0.8-1.05 m high (``hgt``, ``grey``: keep a
    run of segments alike; each segment still varies by a few per cent)."""
    hgt = rng.uniform(0.8, 1.05) if hgt is None else hgt
    return Asset.build(_jersey_prims(rng, l, hgt, grey))


def median_barrier(rng: np.random.Generator, l: float, hgt: float, grey: float, rail: bool) -> Asset:
    """Concrete median barrier segment between the two directions of a road: the New Jersey profile
    of :func:`jersey_barrier`, seen from both sides, and with ``rail`` a steel rail on posts on top
    (0.25-0.3 m above the concrete), as on many highways."""
    prims = _jersey_prims(rng, l, hgt, grey)
    if not rail:
        return Asset.build(prims)
    col = np.clip(np.array([0.62, 0.64, 0.66]) * rng.uniform(0.75, 1.15), 0, 1)
    top = hgt + rng.uniform(0.25, 0.3)
    prims.append((BOX, (0, 0, top - 0.04), (l / 2, 0.05, 0.04), I3, METAL, col))
    n = max(2, int(round(l / 2.0)))
    for i in range(n):
        x = -l / 2 + (i + 0.5) * l / n
        prims.append((BOX, (x, 0, (hgt + top) / 2), (0.04, 0.04, (top - hgt) / 2), I3, METAL, col * 0.8))
    return Asset.build(prims)


ROADWORKS_COLORS = (np.array([0.78, 0.10, 0.08]), np.array([0.95, 0.42, 0.05]), np.array([0.92, 0.78, 0.08]))
ROADWORKS_WHITE = np.array([0.90, 0.90, 0.87])


def roadworks_barrier(rng: np.random.Generator, l: float, color: np.ndarray, hgt: float) -> Asset:
    """Plastic (water-filled) road-works barrier of length ``l``: a body ``hgt`` high on a wider
    foot, with a narrow ridge on top, in one colour (runs alternate ``color`` and white)."""
    col = np.clip(color * rng.uniform(0.9, 1.05), 0, 1)
    z1 = 0.25 * hgt
    return Asset.build([
        (BOX, (0, 0, z1 / 2), (l / 2, 0.25, z1 / 2), I3, PLAIN, col),
        (BOX, (0, 0, (z1 + 0.9 * hgt) / 2), (l / 2 - 0.05, 0.17, (0.9 * hgt - z1) / 2), I3, PLAIN, col),
        (BOX, (0, 0, 0.95 * hgt), (l / 2 - 0.15, 0.09, 0.05 * hgt), I3, PLAIN, col * 0.92),
    ])


def water_barrier(rng: np.random.Generator, l: float, color: np.ndarray, hgt: float) -> Asset:
    """Water-filled plastic barrier unit of length ``l`` as used to close a lane: a wide foot,
    a lower middle and raised ends ``hgt`` high (where the units interlock), in one colour."""
    col = np.clip(color * rng.uniform(0.8, 1.05), 0, 1)
    z1, zm, end = 0.25 * hgt, rng.uniform(0.7, 0.85) * hgt, min(0.25, 0.2 * l)
    return Asset.build([
        (BOX, (0, 0, z1 / 2), (l / 2, 0.2, z1 / 2), I3, PLAIN, col),
        (BOX, (0, 0, (z1 + zm) / 2), (l / 2 - end, 0.14, (zm - z1) / 2), I3, PLAIN, col),
        (BOX, (-l / 2 + end / 2, 0, (z1 + hgt) / 2), (end / 2, 0.16, (hgt - z1) / 2), I3, PLAIN, col * 0.95),
        (BOX, (l / 2 - end / 2, 0, (z1 + hgt) / 2), (end / 2, 0.16, (hgt - z1) / 2), I3, PLAIN, col * 0.95),
    ])


def guard_rail(rng: np.random.Generator, l: float, top: float | None = None, grey: float | None = None) -> Asset:
    """Steel W-beam guard rail segment of length ``l``: a beam 0.55-0.8 m up (``top``) on posts
    every ~2 m."""
    col = np.array([0.62, 0.64, 0.66]) * (rng.uniform(0.75, 1.15) if grey is None else grey)
    top = rng.uniform(0.55, 0.8) if top is None else top
    n = max(2, int(round(l / 2.0)))
    prims = [(BOX, (0, 0, top - 0.16), (l / 2, 0.05, 0.16), I3, METAL, np.clip(col, 0, 1))]
    for i in range(n):
        x = -l / 2 + (i + 0.5) * l / n
        prims.append((BOX, (x, -0.1, (top - 0.1) / 2), (0.06, 0.06, (top - 0.1) / 2), I3, METAL,
                      np.clip(col * 0.7, 0, 1)))   # +y faces the road: posts behind the beam
    return Asset.build(prims)
