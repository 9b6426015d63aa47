"""Procedural textures and materials (torch): noise bank, ground/road paint, object surfaces, sky.

Textures are functions of world or object-local coordinates, so they are consistent across
cameras and frames. Noise comes from a small tileable bank generated from the world seed
with numpy (identical on every device) and looked up with wrapped bilinear interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from perception.data.synth import assets as A
from perception.data.synth.road import CrossRoad, RoadLayout, Segment

SEM_ROAD, SEM_MARK, SEM_SIDEWALK, SEM_TERRAIN = 1, 2, 3, 4


def make_palette(rng: np.random.Generator, scenery: str) -> dict[str, np.ndarray | float]:
    """World-wide colour choices (asphalt tone, terrain type, line paint)."""
    g = rng.uniform(0.09, 0.22)
    asphalt = np.array([g, g, g]) * rng.uniform(0.93, 1.07, 3)
    if scenery == "urban":
        terrain = np.array([0.35, 0.34, 0.32]) * rng.uniform(0.6, 1.2) * rng.uniform(0.95, 1.05, 3)
        grass = 0.3
    elif scenery == "suburban":
        terrain = np.array([0.12, 0.22, 0.06]) * rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)
        grass = 1.0
    else:
        terrain = np.array([0.20, 0.24, 0.08]) * rng.uniform(0.7, 1.4, 3) if rng.random() < 0.7 else \
            np.array([0.35, 0.28, 0.16]) * rng.uniform(0.7, 1.2, 3)
        grass = 1.0
    return {"asphalt": asphalt, "terrain": terrain, "grass": grass,
            "sidewalk": np.array([0.42, 0.41, 0.39]) * rng.uniform(0.75, 1.15) * rng.uniform(0.96, 1.04, 3),
            "paint": np.array([0.85, 0.85, 0.82]) * rng.uniform(0.7, 1.0),
            "yellow": np.array([0.85, 0.62, 0.08]) * rng.uniform(0.7, 1.0),
            "wear": float(rng.uniform(0.0, 0.5))}


class NoiseBank:
    """Tileable smooth noise: channels of increasing feature size, values roughly in [0, 1]."""

    def __init__(self, seed: int, device: torch.device, n: int = 256) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E47]))
        f = np.fft.fftfreq(n)
        r2 = f[:, None] ** 2 + f[None, :] ** 2
        chans = []
        for sigma in (0.7, 3.0, 12.0):
            white = rng.standard_normal((n, n))
            spec = np.fft.fft2(white) * np.exp(-2 * (math.pi * sigma) ** 2 * r2)
            x = np.real(np.fft.ifft2(spec))
            x = (x - x.mean()) / (x.std() + 1e-9)
            chans.append(1 / (1 + np.exp(-1.6 * x)))
        self.n = n
        tex = np.stack(chans, -1)
        self.tex = torch.as_tensor(tex.reshape(n * n, 3), dtype=torch.float32, device=device)
        # (n+1)^2 image with the first row/column repeated: align_corners sampling wraps exactly
        img = np.concatenate([tex, tex[:1]], 0)
        img = np.concatenate([img, img[:, :1]], 1)
        self.img = torch.as_tensor(img.transpose(2, 0, 1)[None].copy(), dtype=torch.float32, device=device)

    def nearest(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """[N, 3] nearest-texel noise (one gather; for the smooth channels at coarse scales)."""
        n = self.n
        iu = torch.floor(u + 0.5).to(torch.int32) & (n - 1)
        iv = torch.floor(v + 0.5).to(torch.int32) & (n - 1)
        return self.tex.index_select(0, iv * n + iu)

    def __call__(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """[N, 3] bilinear noise at texel coordinates (u, v), wrapped (one ``grid_sample``)."""
        n = self.n
        gx = torch.remainder(u, n) * (2.0 / n) - 1
        gy = torch.remainder(v, n) * (2.0 / n) - 1
        grid = torch.stack([gx, gy], -1).view(1, 1, -1, 2)
        out = torch.nn.functional.grid_sample(self.img, grid, mode="bilinear", padding_mode="border",
                                              align_corners=True)
        return out[0, :, 0].T


def _line_cov(e: torch.Tensor, hw: float, w: torch.Tensor) -> torch.Tensor:
    """Box-filtered coverage of a stripe of half width ``hw`` at distance ``e`` (pixel footprint ``w``)."""
    lo = torch.maximum(e - w / 2, torch.full_like(e, -hw))
    hi = torch.minimum(e + w / 2, torch.full_like(e, hw))
    return ((hi - lo) / w).clamp(0, 1)


def _dash_cov(s: torch.Tensor, dash: float, period: float, w: torch.Tensor) -> torch.Tensor:
    p = torch.remainder(s, period)
    c = ((dash / 2 - (p - dash / 2).abs()) / w + 0.5).clamp(0, 1)
    f = (w / period).clamp(0, 1)
    return c * (1 - f) + f * (dash / period)


def road_paint(surf: dict[str, torch.Tensor], lay: RoadLayout, crossings: list[CrossRoad], w: torch.Tensor,
               foot_long: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage (0..1) of white and yellow road paint: centre/lane/edge lines, crosswalks."""
    s, d = surf["s"], surf["d"]
    lw = lay.lane_width
    on_main = (surf["main_edge"] < 0) & ~surf["in_cross"]
    ad = d.abs()
    paint = torch.zeros_like(d)
    yellow = torch.zeros_like(d)
    period = lay.dash + lay.gap
    edge_r, edge_l = lay.lanes_fwd * lw, lay.lanes_bwd * lw
    if lay.yellow_center:
        yellow = torch.maximum(yellow, _line_cov((ad - 0.12).abs(), 0.06, w))
    elif lay.lanes_fwd == 1 and lay.lanes_bwd == 1:
        paint = torch.maximum(paint, _line_cov(ad, 0.07, w) * _dash_cov(s, lay.dash, period, foot_long))
    else:
        paint = torch.maximum(paint, _line_cov((ad - 0.12).abs(), 0.06, w))
    side_lanes = torch.where(d < 0, torch.full_like(d, float(lay.lanes_fwd)), torch.full_like(d, float(lay.lanes_bwd)))
    k = torch.round(ad / lw)
    div = (k >= 1) & (k < side_lanes)
    paint = torch.maximum(paint, torch.where(div, _line_cov((ad - k * lw).abs(), 0.075, w), torch.zeros_like(d))
                          * _dash_cov(s, lay.dash, period, foot_long))
    edge = torch.where(d < 0, (ad - edge_r - 0.1).abs(), (ad - edge_l - 0.1).abs())
    paint = torch.maximum(paint, _line_cov(edge, 0.08, w))
    # crosswalks on the main road next to cross roads, and on cross roads next to the main road
    cd, cu = surf["cross_d"], surf["cross_u"]
    near_cross = (torch.abs(cd) > 0) & (torch.abs(cd) < 1e8)
    hwc = (crossings[0].half_width if crossings else 4.0)
    band = ((cd.abs() - hwc - lay.curb - 0.6) > 0) & ((cd.abs() - hwc - lay.curb - 3.6) < 0) & near_cross
    zebra = _dash_cov(d + 100.0, 0.5, 1.0, w)
    paint = torch.where(band & on_main, torch.maximum(paint, zebra), paint)
    paint = torch.where(on_main, paint, torch.zeros_like(paint))
    yellow = torch.where(on_main, yellow, torch.zeros_like(yellow))
    in_cross_only = surf["in_cross"] & (surf["main_edge"] > 0)
    cpaint = _line_cov(cd.abs(), 0.07, w) * _dash_cov(cu, 3.0, 9.0, foot_long)
    cpaint = torch.maximum(cpaint, _line_cov((cd.abs() - hwc + 0.35).abs(), 0.07, w))
    cband = (surf["main_edge"] > lay.curb + 0.6) & (surf["main_edge"] < lay.curb + 3.6)
    cpaint = torch.where(cband, torch.maximum(cpaint, _dash_cov(cd + 100.0, 0.5, 1.0, w)), cpaint)
    paint = torch.where(in_cross_only, cpaint, paint)
    return paint, yellow


def ground(x: torch.Tensor, y: torch.Tensor, foot: torch.Tensor, foot_long: torch.Tensor, layout: RoadLayout,
           segments: list[Segment], crossings: list[CrossRoad], palette: dict, noise: NoiseBank,
           wet: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Albedo [N, 3], semantic id [N] and wetness/gloss [N] of ground points (x, y).

    ``foot``/``foot_long`` are the pixel footprints (m) across/along the view direction,
    used to anti-alias paint.
    """
    lay = layout
    dev = x.device
    surf = lay.surface(x, y, segments, crossings)
    s, d, dc = surf["s"], surf["d"], surf["dc"]
    nz = noise(x * 10.0, y * 10.0)                    # 10 cm texels
    nz2 = noise.nearest(x * 0.7 + 37.0, y * 0.7 + 11.0)   # 1.4 m texels (smooth channels: nearest is enough)
    fine, med, coarse = nz[:, 0:1], nz[:, 1:2], nz[:, 2:3]
    big = nz2[:, 2:3]
    pal = {k: torch.as_tensor(v, dtype=torch.float32, device=dev) if isinstance(v, np.ndarray) else v
           for k, v in palette.items()}
    w = torch.sqrt(foot * foot_long).clamp_min(0.01)

    drivable, is_curb, is_side = surf["drivable"], surf["curb"], surf["sidewalk"]
    # surface type: 0 road, 1 curb, 2 sidewalk, 3 terrain; one table of base colour and noise
    # weights per type, so every ground pixel costs the same few ops whatever its type
    typ = torch.where(drivable, 0, torch.where(is_curb, 1, torch.where(is_side, 2, 3)))
    g = float(pal["grass"])
    table = torch.stack([
        torch.cat([pal["asphalt"], torch.tensor([0.40, 0.35, 0.25, 0.45], device=dev)]),
        torch.cat([pal["sidewalk"] * 1.25, torch.tensor([0.90, 0.20, 0.0, 0.0], device=dev)]),
        torch.cat([pal["sidewalk"], torch.tensor([0.75, 0.25, 0.0, 0.20], device=dev)]),
        torch.cat([pal["terrain"], torch.tensor([0.6 - 0.25 - 0.3 * g, 0.5, 0.5, 0.6 * g], device=dev)]),
    ]).float()
    row = table.index_select(0, typ)
    mod = row[:, 3] + row[:, 4] * fine[:, 0] + row[:, 5] * med[:, 0] + row[:, 6] * big[:, 0]
    # tyre tracks on the road, slab joints on sidewalks
    lw = lay.lane_width
    tyre = torch.remainder(d, lw) - lw / 2
    tracks = _line_cov(tyre.abs() - 0.85, 0.3, w) * 0.12
    hwc = (crossings[0].half_width if crossings else 4.0)
    use_c = (surf["cross_d"].abs() - hwc) < surf["main_edge"]
    su = torch.where(use_c, surf["cross_u"], s)
    sd = torch.where(use_c, surf["cross_d"], d)
    joint = ((torch.remainder(su, 1.5) < 0.03) | (torch.remainder(sd, 1.5) < 0.03)).float() * 0.25
    shade = 1 - torch.where(typ == 0, tracks, torch.where(typ == 2, joint, torch.zeros_like(tracks)))
    paint, yellow = road_paint(surf, lay, crossings, w, foot_long)
    wear = 1 - pal["wear"] * (fine[:, 0] > 0.55).float() * med[:, 0]
    paint = paint * wear
    yellow = yellow * wear
    alb = row[:, :3] * (mod * shade * (1 - paint - yellow))[:, None] + pal["paint"] * paint[:, None] + \
        pal["yellow"] * yellow[:, None]
    sem = torch.full_like(s, SEM_TERRAIN, dtype=torch.int64)
    sem = torch.where(is_side | is_curb, torch.full_like(sem, SEM_SIDEWALK), sem)
    sem = torch.where(drivable, torch.full_like(sem, SEM_ROAD), sem)
    sem = torch.where(drivable & ((paint + yellow) > 0.5), torch.full_like(sem, SEM_MARK), sem)
    gloss = torch.where(typ < 3, torch.full_like(s, wet), torch.full_like(s, wet * 0.3))
    gloss = gloss * (0.6 + 0.6 * med[:, 0]).clamp(0, 1)
    return alb.clamp(0, 1), sem, gloss


@dataclass
class Surface:
    albedo: torch.Tensor      # [N, 3]
    emissive: torch.Tensor    # [N, 3]
    spec: torch.Tensor        # [N] specular / reflection strength
    wrap: torch.Tensor        # [N] lambert wrap (foliage translucency)


LEAF_SIZE = 0.025   # metres: the feature size of the leaf texture (``leaves``)


def objects(mat: torch.Tensor, p: torch.Tensor, n: torch.Tensor, half: torch.Tensor, color: torch.Tensor,
            tag: torch.Tensor, world: torch.Tensor, noise: NoiseBank, night: bool, kind: torch.Tensor,
            leaves: float = 0.0, footprint: torch.Tensor | None = None) -> Surface:
    """Surface properties of primitive hits: local point ``p``, local normal ``n``.

    Inputs must be sorted by material (each material is then a contiguous slice: no gathers).
    ``leaves`` > 0 adds leaf-scale texture (:data:`LEAF_SIZE`) to foliage and hedges, in the
    primitive's own coordinates, with that strength where a pixel is smaller than a leaf and
    fading to none where a pixel (``footprint``, metres per pixel at the hit) covers two: near
    vegetation gets the fine, high-contrast texture a real camera sees, far vegetation stays
    smooth instead of aliasing into the "fine detail means far away" cue.
    """
    N = len(mat)
    counts = torch.bincount(mat, minlength=32).tolist()
    starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
    alb = color.clone()
    emi = torch.zeros_like(color)
    spec = torch.zeros(N, device=mat.device)
    wrap = torch.zeros(N, device=mat.device)
    # one lookup in face coordinates of the primitive's own frame (the texture moves with the
    # object): horizontal along-face coordinate and height; top faces use x, y
    along = torch.where(n[:, 0].abs() > 0.5, p[:, 1], p[:, 0])
    vert = torch.where(n[:, 2].abs() > 0.7, p[:, 1], p[:, 2])
    nz = noise(along * 6 + tag * 97.0, vert * 6 + tag * 61.0)
    fine = (nz[:, 0] - 0.5) * 1.4 + 0.5
    med = (nz[:, 1] - 0.5) * 1.4 + 0.5

    def sel(m: int) -> slice | None:
        return slice(int(starts[m]), int(starts[m + 1])) if counts[m] else None

    # car paint with lights, grille, sills
    i = sel(A.PAINT)
    if i is not None:
        pi, ni, hi = p[i], n[i], half[i]
        c = color[i] * (0.92 + 0.12 * fine[i, None])
        front = ni[:, 0] > 0.5
        back = ni[:, 0] < -0.5
        ay = pi[:, 1].abs()
        zrel = (pi[:, 2] + hi[:, 2]) / (2 * hi[:, 2])
        lamp = (ay > hi[:, 1] - 0.45) & (ay < hi[:, 1] - 0.08) & (zrel > 0.55) & (zrel < 0.85)
        grille = front & (ay < hi[:, 1] - 0.55) & (zrel > 0.3) & (zrel < 0.75)
        plate = back & (ay < 0.26) & (zrel > 0.25) & (zrel < 0.5)
        sill = (ni[:, 2].abs() < 0.5) & (zrel < 0.15)
        c = torch.where(grille[:, None], c * 0.15 + 0.02, c)
        c = torch.where(plate[:, None], torch.full_like(c, 0.8), c)
        c = torch.where(sill[:, None], c * 0.4, c)
        head = front & lamp
        tail = back & lamp
        c = torch.where(head[:, None], torch.tensor([0.9, 0.9, 0.85], device=c.device), c)
        c = torch.where(tail[:, None], torch.tensor([0.6, 0.03, 0.02], device=c.device), c)
        alb[i] = c
        e = torch.zeros_like(c)
        if night:
            e = torch.where(head[:, None], torch.tensor([6.0, 5.5, 4.5], device=c.device), e)
            e = torch.where(tail[:, None], torch.tensor([3.0, 0.1, 0.05], device=c.device), e)
        emi[i] = e
        spec[i] = 0.35
    # cabin: glass with pillars, painted roof; trucks: glass only in the top 0.9 m
    i = sel(A.CABIN)
    if i is not None:
        pi, ni, hi = p[i], n[i], half[i]
        h2 = 2 * hi[:, 2]
        z = pi[:, 2] + hi[:, 2]
        glass_lo = (h2 - 0.9).clamp_min(0.03)
        u = torch.where(ni[:, 0].abs() > 0.5, pi[:, 1], pi[:, 0])
        uh = torch.where(ni[:, 0].abs() > 0.5, hi[:, 1], hi[:, 0])
        frame = (u.abs() > uh - 0.07) | (z > h2 - 0.06) | (z < glass_lo) | \
            ((ni[:, 1].abs() > 0.5) & ((pi[:, 0] - 0.05 * hi[:, 0]).abs() < 0.06))
        glass = ~frame & (ni[:, 2] < 0.5)
        c = torch.where(glass[:, None], torch.full_like(color[i], 0.02), color[i])
        alb[i] = c
        spec[i] = torch.where(glass, torch.full_like(z, 0.9), torch.full_like(z, 0.35))
        if night:
            e = torch.zeros_like(c)
            # truck cab front lights
            lamp = (ni[:, 0] > 0.5) & (z < 0.35) & (z > 0.1) & (pi[:, 1].abs() > hi[:, 1] - 0.45)
            emi[i] = torch.where(lamp[:, None], torch.tensor([6.0, 5.5, 4.5], device=c.device), e)
    # sloped windscreens / rear windows: glass with a painted frame
    i = sel(A.WINDOW)
    if i is not None:
        pi, ni, hi = p[i], n[i], half[i]
        frame = (pi[:, 1].abs() > hi[:, 1] - 0.06) | (pi[:, 0].abs() > hi[:, 0] - 0.04)
        glass = ~frame | (ni[:, 1].abs() > 0.5)
        alb[i] = torch.where(glass[:, None], torch.full_like(color[i], 0.02), color[i])
        spec[i] = torch.where(glass, torch.full_like(pi[:, 0], 0.9), torch.full_like(pi[:, 0], 0.35))
    # bus: window band, dark lower skirt
    i = sel(A.BUSBODY)
    if i is not None:
        pi, ni, hi = p[i], n[i], half[i]
        z = pi[:, 2] + hi[:, 2]
        h2 = 2 * hi[:, 2]
        front = ni[:, 0] > 0.5
        win = (ni[:, 2].abs() < 0.5) & (z > 0.95) & (z < h2 - 0.3) & ~((ni[:, 1].abs() > 0.5) &
                                                                       (torch.remainder(pi[:, 0], 1.6) < 0.12))
        win = win | (front & (z > 0.8) & (z < h2 - 0.15) & (pi[:, 1].abs() < hi[:, 1] - 0.1))
        c = torch.where(win[:, None], torch.full_like(color[i], 0.025), color[i] * (0.92 + 0.1 * fine[i, None]))
        alb[i] = c
        spec[i] = torch.where(win, torch.full_like(z, 0.85), torch.full_like(z, 0.3))
        if night:
            lit = win & (ni[:, 1].abs() > 0.5)
            emi[i] = torch.where(lit[:, None], torch.tensor([0.9, 0.85, 0.6], device=c.device), torch.zeros_like(c))
    # tyres with hubs
    i = sel(A.RUBBER)
    if i is not None:
        pi, hi = p[i], half[i]
        r = (pi[:, :2].norm(dim=-1) / hi[:, 0])
        cap = (n[i, 2].abs() > 0.5) & (kind[i] == A.CYL)
        hub = cap & (r < 0.6)
        alb[i] = torch.where(hub[:, None], torch.full_like(color[i], 0.35), color[i] + 0.02 * fine[i, None])
    # buildings: windows on floors, shop fronts, flat roofs
    i = sel(A.FACADE)
    if i is not None:
        pi, ni, hi, ti = p[i], n[i], half[i], tag[i]
        z = pi[:, 2] + hi[:, 2]
        u = torch.where(ni[:, 0].abs() > 0.5, pi[:, 1], pi[:, 0])
        floor_h = 3.0 + 0.6 * ti
        ws = 2.2 + 2.0 * torch.remainder(ti * 7.31, 1.0)
        wfrac = 0.35 + 0.35 * torch.remainder(ti * 3.7, 1.0)
        fu = torch.remainder(u / ws, 1.0)
        fz = torch.remainder(z / floor_h, 1.0)
        shop = torch.remainder(ti * 13.1, 1.0) < 0.5
        win = ((fu - 0.5).abs() < wfrac / 2) & (fz > 0.3) & (fz < 0.85) & (z > floor_h)
        win = win | (shop & (z < floor_h) & (z > 0.4) & (z < floor_h * 0.8) & ((fu - 0.5).abs() < 0.45))
        up = ni[:, 2] > 0.5
        win = win & ~up & (z < 2 * hi[:, 2] - 0.6)
        wall = color[i] * (0.8 + 0.25 * fine[i, None] + 0.25 * (med[i, None] - 0.5))
        bricks = torch.remainder(ti * 5.3, 1.0) < 0.3
        mortar = bricks & ((torch.remainder(z, 0.3) < 0.03) | (torch.remainder(u + 0.3 * torch.floor(z / 0.3), 0.6) < 0.03))
        wall = torch.where(mortar[:, None], wall * 1.35, wall)
        widx = torch.floor(u / ws) * 31.0 + torch.floor(z / floor_h) * 17.0 + ti * 101.0
        rnd = torch.remainder(torch.sin(widx) * 43758.5453, 1.0)
        glass_col = torch.stack([0.05 + 0.05 * rnd, 0.07 + 0.05 * rnd, 0.09 + 0.06 * rnd], -1)
        roof = color[i] * 0.45 + 0.05
        c = torch.where(win[:, None], glass_col, torch.where(up[:, None], roof, wall))
        alb[i] = c
        spec[i] = torch.where(win, torch.full_like(z, 0.7), torch.zeros_like(z))
        if night:
            lit = win & (rnd > 0.55)
            emi[i] = torch.where(lit[:, None], torch.tensor([1.4, 1.0, 0.55], device=c.device) * (0.5 + rnd[:, None]),
                                 torch.zeros_like(c))
    i = sel(A.ROOF)
    if i is not None:
        stripes = (torch.remainder(p[i, 2] * 4.0, 1.0) < 0.15).float()
        alb[i] = color[i] * (0.85 + 0.25 * fine[i, None]) * (1 - 0.3 * stripes[:, None])
    for m, amp, wr in ((A.FOLIAGE, 1.0, 0.45), (A.HEDGE, 0.8, 0.3)):
        i = sel(m)
        if i is not None:
            clump = ((fine[i] - 0.35) * 3).clamp(0, 1)             # leaf clusters vs gaps
            shade = 0.35 + amp * (0.4 * clump + 0.4 * med[i])
            if leaves > 0 and footprint is not None:
                leaf = noise(along[i] / LEAF_SIZE + tag[i] * 13.0, vert[i] / LEAF_SIZE + tag[i] * 29.0)[:, 0]
                w = leaves * (2.0 - footprint[i] / LEAF_SIZE).clamp(0, 1)
                shade = shade * (1 + 0.55 * w * ((leaf - 0.5) * 4).clamp(-1, 1))  # lit leaves, shadowed gaps
            alb[i] = color[i] * shade[:, None]
            wrap[i] = wr
    i = sel(A.BARK)
    if i is not None:
        alb[i] = color[i] * (0.6 + 0.6 * fine[i, None])
    i = sel(A.METAL)
    if i is not None:
        alb[i] = color[i] * (0.85 + 0.2 * fine[i, None])
        spec[i] = 0.3
    for m in (A.CLOTH, A.SKIN, A.PLAIN):
        i = sel(m)
        if i is not None:
            alb[i] = color[i] * (0.85 + 0.25 * fine[i, None])
    i = sel(A.LAMP)
    if i is not None:
        emi[i] = color[i] * (5.0 if night else 0.6) * (color[i].amax(-1, keepdim=True) > 0.5)
        alb[i] = color[i] * 0.5
    i = sel(A.SIGN)
    if i is not None:
        ni, pi, hi = n[i], p[i], half[i]
        r_disc = pi[:, :2].norm(dim=-1) / hi[:, 0]
        disc = kind[i] == A.CYL
        facing = torch.where(disc, ni[:, 2].abs() > 0.5, ni[:, 0].abs() > 0.5)
        border = torch.where(disc, r_disc > 0.78, (pi[:, 1].abs() > hi[:, 1] * 0.8) | (pi[:, 2].abs() > hi[:, 2] * 0.8))
        front = torch.where(disc, ni[:, 2] < 0, ni[:, 0] > 0)
        c = torch.where((border & facing)[:, None], torch.full_like(color[i], 0.85), color[i])
        c = torch.where((facing & ~front)[:, None] | ~facing[:, None], torch.full_like(c, 0.4), c)
        alb[i] = c
        spec[i] = 0.2
    return Surface(alb.clamp(0, 1), emi, spec, wrap)


def sky(dirs: torch.Tensor, sun_dir: torch.Tensor, zenith: torch.Tensor, horizon: torch.Tensor, clouds: float,
        noise: NoiseBank, night: bool, sun_int: float) -> torch.Tensor:
    """Sky radiance [N, 3] for unit world directions [N, 3]."""
    el = dirs[:, 2].clamp(-0.2, 1.0)
    f = (el.clamp_min(0) ** 0.5)[:, None]
    col = horizon * (1 - f) + zenith * f
    # clouds on a plane 1 km up
    tt = 1000.0 / el.clamp_min(0.02)
    cx, cy = dirs[:, 0] * tt, dirs[:, 1] * tt
    cn = noise(cx * 0.004, cy * 0.004)
    cov = ((cn[:, 2] * 0.7 + cn[:, 1] * 0.3) - (1 - clouds) * 0.75 - 0.15).clamp(0, 0.5) * 2
    cov = cov * (el > 0).float() * (1 - (-el * 12).exp().clamp(0, 1) * 0.5)
    cloud_col = (zenith * 0.2 + 0.8 * horizon.mean()) * (0.85 + 0.4 * cn[:, 0:1]) * (0.1 if night else 1.1)
    col = col * (1 - cov[:, None]) + cloud_col * cov[:, None]
    if sun_int > 0:
        cosang = (dirs[:, 0] * sun_dir[0] + dirs[:, 1] * sun_dir[1] + dirs[:, 2] * sun_dir[2]).clamp(-1, 1)
        glow = (cosang.clamp_min(0) ** 32) * 0.6 + (cosang > 0.9995).float() * 6.0
        col = col + glow[:, None] * torch.tensor([1.0, 0.9, 0.7], device=dirs.device) * (sun_int / 2.5) * (1 - cov[:, None])
    return col
