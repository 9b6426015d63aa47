"""Road geometry of the synthetic world: a G1-continuous main road of straight and circular
segments, plus straight cross roads (intersections).

Everything on the ground is defined analytically from road coordinates ``(s, d)``: ``s`` is
arc length along the main road, ``d`` the signed lateral offset (positive = left of the
direction of travel). Because consecutive segments share tangents, the perpendicular slab
of a straight segment and the angular sector of an arc meet exactly on the common normal
line, so every ground point belongs to exactly one segment (no gaps at joints).

Queries are written in torch (float32 on the render device for pixels, float64 on CPU for
placement), so the same code paints the images and the BEV ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


@dataclass
class Segment:
    """A straight (``k == 0``) or circular (curvature ``k``, +left) piece of the main road."""

    s0: float
    length: float
    x0: float
    y0: float
    h0: float
    k: float = 0.0

    def pose(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre-line x, y and heading at arc length ``s`` (numpy, float64)."""
        u = np.asarray(s, dtype=np.float64) - self.s0
        if abs(self.k) < 1e-12:
            h = np.full_like(u, self.h0)
            return self.x0 + u * math.cos(self.h0), self.y0 + u * math.sin(self.h0), h
        h = self.h0 + self.k * u
        cx, cy = self.x0 - math.sin(self.h0) / self.k, self.y0 + math.cos(self.h0) / self.k
        return cx + np.sin(h) / self.k, cy - np.cos(h) / self.k, h

    def local(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, d)``: arc length from the segment start and signed lateral offset."""
        if abs(self.k) < 1e-12:
            c, s = math.cos(self.h0), math.sin(self.h0)
            rx, ry = x - self.x0, y - self.y0
            return rx * c + ry * s, -rx * s + ry * c
        k = self.k
        sk = 1.0 if k > 0 else -1.0
        cx, cy = self.x0 - math.sin(self.h0) / k, self.y0 + math.cos(self.h0) / k
        rx, ry = x - cx, y - cy
        r = torch.sqrt(rx * rx + ry * ry).clamp_min(1e-6)
        h = torch.atan2(sk * rx, -sk * ry)
        mid = self.h0 + k * self.length / 2
        u = _wrap(h - mid) / k + self.length / 2
        return u, 1.0 / k - sk * r

    @property
    def end(self) -> tuple[float, float, float]:
        x, y, h = self.pose(np.array([self.s0 + self.length]))
        return float(x[0]), float(y[0]), float(h[0])


@dataclass
class CrossRoad:
    """A straight road crossing the main road at main-road arc length ``s_main``."""

    x0: float
    y0: float
    heading: float
    half_length: float
    half_width: float
    lane_width: float
    s_main: float
    both_sides: bool = True  # False: a T junction (only the left half, d_main > 0 side)

    def local(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = math.cos(self.heading), math.sin(self.heading)
        rx, ry = x - self.x0, y - self.y0
        return rx * c + ry * s, -rx * s + ry * c


@dataclass
class RoadLayout:
    """Main road + cross roads + cross-section parameters (metres)."""

    segments: list[Segment]
    crossings: list[CrossRoad]
    lane_width: float = 3.5
    lanes_fwd: int = 1
    lanes_bwd: int = 1
    parking: float = 0.0        # parking-lane width each side (0 = none)
    shoulder: float = 0.5
    curb: float = 0.2
    sidewalk: float = 3.0
    yellow_center: bool = False
    dash: float = 3.0
    gap: float = 6.0
    extras: dict = field(default_factory=dict)

    # ------------------------------------------------------------ cross-section
    @property
    def lanes_edge_left(self) -> float:
        return self.lanes_bwd * self.lane_width

    @property
    def lanes_edge_right(self) -> float:
        return self.lanes_fwd * self.lane_width

    @property
    def half_width(self) -> float:
        """Half width of the drivable surface (symmetric: max of both sides)."""
        return max(self.lanes_fwd, self.lanes_bwd) * self.lane_width + self.parking + self.shoulder

    @property
    def outer(self) -> float:
        """Lateral offset of the outer sidewalk edge."""
        return self.half_width + self.curb + self.sidewalk

    def lane_center(self, lane: int) -> float:
        """Lateral offset of lane ``lane``: 0.. lanes_fwd-1 forward (right side, d < 0),
        -1.. -lanes_bwd backward (left side)."""
        if lane >= 0:
            return -(lane + 0.5) * self.lane_width
        return (-lane - 0.5) * self.lane_width

    @property
    def length(self) -> float:
        last = self.segments[-1]
        return last.s0 + last.length

    # ------------------------------------------------------------ queries
    def pose(self, s: np.ndarray, d: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World x, y, heading of road coordinates ``(s, d)`` (numpy)."""
        s = np.atleast_1d(np.asarray(s, dtype=np.float64))
        d = np.broadcast_to(np.asarray(d, dtype=np.float64), s.shape)
        x, y, h = np.zeros_like(s), np.zeros_like(s), np.zeros_like(s)
        starts = np.array([g.s0 for g in self.segments])
        idx = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(self.segments) - 1)
        for i, seg in enumerate(self.segments):
            m = idx == i
            if m.any():
                x[m], y[m], h[m] = seg.pose(s[m])
        return x - d * np.sin(h), y + d * np.cos(h), h

    def main_coords(self, x: torch.Tensor, y: torch.Tensor,
                    segments: list[Segment] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, d)`` on the main road for world points (nearest valid segment)."""
        segs = self.segments if segments is None else segments
        best_d = torch.full_like(x, 1e9)
        best_s = torch.zeros_like(x)
        first, last = self.segments[0], self.segments[-1]
        for seg in segs:
            u, d = seg.local(x, y)
            lo = -1e9 if seg is first else 0.0
            hi = 1e9 if seg is last else seg.length
            # arcs: ignore the far side of the circle (|d| beyond the radius)
            ok = (u >= lo) & (u <= hi)
            if abs(seg.k) > 1e-12:
                ok &= d.abs() < 0.95 / abs(seg.k)
            take = ok & (d.abs() < best_d.abs())
            best_d = torch.where(take, d, best_d)
            best_s = torch.where(take, u + seg.s0, best_s)
        return best_s, best_d

    def near_segments(self, x: float, y: float, radius: float) -> list[Segment]:
        """Segments that may come within ``radius`` of (x, y) (for per-frame culling)."""
        out = []
        for seg in self.segments:
            ss = np.linspace(seg.s0, seg.s0 + seg.length, 9)
            px, py, _ = seg.pose(ss)
            step = seg.length / 8
            if np.min(np.hypot(px - x, py - y)) < radius + step:
                out.append(seg)
        return out or [self.segments[0]]

    def near_crossings(self, x: float, y: float, radius: float) -> list[CrossRoad]:
        return [c for c in self.crossings if math.hypot(c.x0 - x, c.y0 - y) < radius + c.half_length]

    def surface(self, x: torch.Tensor, y: torch.Tensor, segments: list[Segment] | None = None,
                crossings: list[CrossRoad] | None = None) -> dict[str, torch.Tensor]:
        """Per-point ground description.

        Returns ``s``, ``d`` (main road coords), ``drivable`` (bool), ``sidewalk`` (bool),
        ``curb`` (bool), ``dc`` (distance beyond the nearest road edge, negative on the road),
        ``cross_u``/``cross_d`` (coords on the nearest cross road, or large values),
        ``in_cross`` (bool, on a cross road's drivable surface).
        """
        crossings = self.crossings if crossings is None else crossings
        s, d = self.main_coords(x, y, segments)
        hw = self.half_width
        edge = d.abs() - hw                                     # >0 off the main road
        cu = torch.full_like(x, 1e9)
        cd = torch.full_like(x, 1e9)
        cedge = torch.full_like(x, 1e9)
        for c in crossings:
            u, dd = c.local(x, y)
            ok = u.abs() <= c.half_length
            if not c.both_sides:
                ok &= d > 0
            e = torch.where(ok, dd.abs() - c.half_width, torch.full_like(x, 1e9))
            take = e < cedge
            cedge = torch.where(take, e, cedge)
            cu = torch.where(take, u, cu)
            cd = torch.where(take, dd, cd)
        dc = torch.minimum(edge, cedge)
        drivable = dc < 0
        curb = (dc >= 0) & (dc < self.curb)
        sidewalk = (dc >= self.curb) & (dc < self.curb + self.sidewalk)
        return {"s": s, "d": d, "dc": dc, "drivable": drivable, "curb": curb, "sidewalk": sidewalk,
                "cross_u": cu, "cross_d": cd, "in_cross": cedge < 0, "main_edge": edge}


def generate_layout(rng: np.random.Generator, length: float, intersections: float = 0.5,
                    curviness: float = 0.5) -> RoadLayout:
    """Random main road of at least ``length`` metres with curves and cross roads.

    ``intersections``: expected cross roads per 200 m of straight; ``curviness`` 0..1.
    """
    lanes_fwd = int(rng.choice([1, 1, 2, 2, 3], p=[0.35, 0.15, 0.25, 0.15, 0.10]))
    lanes_bwd = lanes_fwd if rng.random() < 0.8 else max(1, lanes_fwd - 1)
    lane_width = float(rng.uniform(3.0, 3.8))
    parking = float(rng.choice([0.0, 2.3], p=[0.5, 0.5]))
    layout_kw = dict(lane_width=lane_width, lanes_fwd=lanes_fwd, lanes_bwd=lanes_bwd, parking=parking,
                     shoulder=float(rng.uniform(0.3, 1.2)), curb=0.25, sidewalk=float(rng.uniform(2.0, 5.0)),
                     yellow_center=bool(rng.random() < 0.35), dash=float(rng.uniform(2.5, 4.5)),
                     gap=float(rng.uniform(4.0, 9.0)))
    segs: list[Segment] = []
    x, y, h, s = 0.0, 0.0, 0.0, 0.0
    first = True
    while s < length:
        straight = first or rng.random() > curviness * 0.8
        if straight:
            L = 200.0 if first else float(rng.uniform(50, 220))
            seg = Segment(s, L, x, y, h, 0.0)
        else:
            R = float(rng.uniform(50, 400))
            ang = float(rng.uniform(0.2, 1.2)) * rng.choice([-1, 1])
            seg = Segment(s, R * abs(ang), x, y, h, float(np.sign(ang) / R))
        segs.append(seg)
        x, y, h = seg.end
        s += seg.length
        first = False
    lay = RoadLayout(segs, [], **layout_kw)
    # cross roads at the middle of long enough straights (not the very first 120 m)
    for seg in segs:
        if seg.k != 0 or seg.length < 70:
            continue
        n = rng.poisson(intersections * seg.length / 200)
        for _ in range(min(n, 2)):
            u = float(rng.uniform(30, seg.length - 30))
            sm = seg.s0 + u
            if sm < 60 or any(abs(c.s_main - sm) < 60 for c in lay.crossings):
                continue
            px, py, ph = seg.pose(np.array([sm]))
            ang = float(ph[0] + math.pi / 2 + rng.uniform(-0.25, 0.25))
            cw = float(rng.uniform(3.0, 3.6))
            lay.crossings.append(CrossRoad(float(px[0]), float(py[0]), ang, 150.0, cw + 0.4, cw, sm,
                                           both_sides=bool(rng.random() < 0.75)))
    return lay
