"""Batched ray casting of analytic primitives with tile binning (torch, any device).

All cameras of a rig are cast together. The padded images are cut into square tiles; each
primitive's bounding box is projected (near-plane clipped) onto every camera's normalised
image plane (x/z, y/z), and only the tiles whose rays' normalised rectangle overlaps it are
tested. Cost is proportional to the covered area, and the number of torch ops per frame is
constant (one batch per primitive kind), which is what makes CPU rendering fast.

Rays have camera-frame z = 1, so the ray parameter ``t`` *is* the z-depth of the hit.
"""

from __future__ import annotations

import numpy as np
import torch

from perception.data.synth.assets import BOX, CYL, ELL

NEAR = 0.05
INF = float("inf")

_SX = np.array([-1, 1, 1, -1, -1, 1, 1, -1], np.float64)
_SY = np.array([-1, -1, 1, 1, -1, -1, 1, 1], np.float64)
_SZ = np.array([-1, -1, -1, -1, 1, 1, 1, 1], np.float64)
_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


def box_corners(center: np.ndarray, half: np.ndarray, R: np.ndarray) -> np.ndarray:
    """[P, 8, 3] world corners of primitives' bounding boxes (``R`` world->local)."""
    local = np.stack([_SX[None] * half[:, :1], _SY[None] * half[:, 1:2], _SZ[None] * half[:, 2:3]], -1)
    return np.matmul(local, R) + center[:, None, :]                                  # R^T applied to rows


def project_rects(corners_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-plane rectangles of boxes given camera-frame corners ``[..., 8, 3]``.

    Returns ``(rect [..., 4] as xmin, ymin, xmax, ymax, valid [...])``; boxes crossing the
    near plane are clipped against it (edge intersections), so rectangles are conservative.
    """
    z = corners_cam[..., 2]
    front = z >= NEAR
    a = corners_cam[..., _EDGES[:, 0], :]
    b = corners_cam[..., _EDGES[:, 1], :]
    za, zb = a[..., 2], b[..., 2]
    cross = (za - NEAR) * (zb - NEAR) < 0
    dz = np.where(cross, zb - za, 1.0)
    f = np.where(cross, (NEAR - za) / dz, 0.0)
    clip = a + f[..., None] * (b - a)
    pts = np.concatenate([corners_cam, clip], -2)
    ok = np.concatenate([front, cross], -1)
    zz = np.where(ok, pts[..., 2], 1.0)
    xn = pts[..., 0] / zz
    yn = pts[..., 1] / zz
    big = 1e9
    rect = np.stack([np.where(ok, xn, big).min(-1), np.where(ok, yn, big).min(-1),
                     np.where(ok, xn, -big).max(-1), np.where(ok, yn, -big).max(-1)], -1)
    return rect, ok.any(-1)


def dot3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over a last dimension of size 3 (much faster than ``(a * b).sum(-1)`` on CPU)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def intersect(kind: int, o: tuple[torch.Tensor, ...], d: tuple[torch.Tensor, ...],
              half: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Ray parameter of the first hit (``inf`` on a miss) for rays ``o + t d`` in the
    primitive's local frame, component-wise (structure of arrays, contiguous on CPU):
    ``o`` and ``half`` are 3 tensors [N, 1], ``d`` 3 tensors [N, S]."""
    ox, oy, oz = o
    dx, dy, dz = d
    hx, hy, hz = half
    if kind == BOX:
        tmin = tmax = None
        for oc, dc, hc in ((ox, dx, hx), (oy, dy, hy), (oz, dz, hz)):
            inv = 1.0 / dc
            t1 = (-hc - oc) * inv
            t2 = (hc - oc) * inv
            lo, hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
            tmin = lo if tmin is None else torch.maximum(tmin, lo)
            tmax = hi if tmax is None else torch.minimum(tmax, hi)
        hit = (tmax >= tmin) & (tmin > NEAR)
        return torch.where(hit, tmin, torch.full_like(tmin, INF))
    if kind == CYL:
        r = hx
        a = (dx * dx + dy * dy).clamp_min(1e-12)
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - r * r
        disc = b * b - a * c
        ts = (-b - disc.clamp_min(0).sqrt()) / a
        zs = oz + ts * dz
        side = (disc >= 0) & (zs.abs() <= hz) & (ts > NEAR)
        cap_z = torch.where(oz > 0, hz, -hz)
        tc = (cap_z - oz) / dz
        xc, yc = ox + tc * dx, oy + tc * dy
        cap = (oz.abs() > hz) & (xc * xc + yc * yc <= r * r) & (tc > NEAR)
        inf = torch.full_like(ts, INF)
        return torch.minimum(torch.where(side, ts, inf), torch.where(cap, tc, inf))
    if kind == ELL:
        ax, ay, az = ox / hx, oy / hy, oz / hz
        ex, ey, ez = dx / hx, dy / hy, dz / hz
        a = ex * ex + ey * ey + ez * ez
        b = ax * ex + ay * ey + az * ez
        c = ax * ax + ay * ay + az * az - 1
        disc = b * b - a * c
        t = (-b - disc.clamp_min(0).sqrt()) / a
        return torch.where((disc >= 0) & (t > NEAR), t, torch.full_like(t, INF))
    raise ValueError(f"unknown primitive kind {kind}")


def local_normal(runs: list[tuple[int, int, int]], p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Outward unit normals in the primitive frame at local hit points ``p`` [N, 3].

    ``runs`` = (start, end, kind): hits sorted so that each run has one primitive kind.
    """
    n = torch.empty_like(p)
    for a, b, kind in runs:
        px, py, pz = p[a:b, 0], p[a:b, 1], p[a:b, 2]
        hx, hy, hz = half[a:b, 0], half[a:b, 1], half[a:b, 2]
        if kind == BOX:          # the face whose slab the point is closest to
            ax, ay, az = (px / hx).abs(), (py / hy).abs(), (pz / hz).abs()
            m0 = (ax >= ay) & (ax >= az)
            m1 = ~m0 & (ay >= az)
            m2 = ~(m0 | m1)
            n[a:b, 0] = torch.sign(px) * m0
            n[a:b, 1] = torch.sign(py) * m1
            n[a:b, 2] = torch.sign(pz) * m2
        elif kind == CYL:        # axis z: caps or radial
            cap = ((pz / hz).abs() >= 1 - 1e-3) & (px * px + py * py < (hx * 0.999) ** 2)
            inv = torch.rsqrt((px * px + py * py).clamp_min(1e-18))
            n[a:b, 0] = torch.where(cap, 0.0, px * inv)
            n[a:b, 1] = torch.where(cap, 0.0, py * inv)
            n[a:b, 2] = torch.where(cap, torch.sign(pz), 0.0)
        else:                    # ellipsoid: gradient of the implicit function
            gx, gy, gz = px / (hx * hx), py / (hy * hy), pz / (hz * hz)
            inv = torch.rsqrt((gx * gx + gy * gy + gz * gz).clamp_min(1e-18))
            n[a:b, 0] = gx * inv
            n[a:b, 1] = gy * inv
            n[a:b, 2] = gz * inv
    return n


def bin_tiles(rect: np.ndarray, valid: np.ndarray, tile_rects: np.ndarray,
              grid: tuple[np.ndarray, np.ndarray, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(camera, primitive, tile) triples whose rectangles overlap.

    ``grid`` = (x edges [C, tx+1], y edges [C, ty+1], tx) when the tiles of every camera form a
    regular grid on the normalised plane (no distortion): then ranges come from a binary search
    and the cost is proportional to the number of triples; otherwise all pairs are tested.
    """
    if grid is None:
        ov = ((rect[:, :, None, 0] <= tile_rects[:, None, :, 2]) & (rect[:, :, None, 2] >= tile_rects[:, None, :, 0]) &
              (rect[:, :, None, 1] <= tile_rects[:, None, :, 3]) & (rect[:, :, None, 3] >= tile_rects[:, None, :, 1]) &
              valid[:, :, None])
        return np.nonzero(ov)
    xe, ye, tx = grid
    c, p = np.nonzero(valid)
    if len(c) == 0:
        return c, p, c
    r = rect[c, p]
    nx, ny = xe.shape[1] - 1, ye.shape[1] - 1
    # tile i spans [edge[i], edge[i+1]]: first tile with edge[i+1] >= lo, last with edge[i] <= hi
    x0 = _search(xe[:, 1:], c, r[:, 0], "left")
    x1 = _search(xe[:, :-1], c, r[:, 2], "right") - 1
    y0 = _search(ye[:, 1:], c, r[:, 1], "left")
    y1 = _search(ye[:, :-1], c, r[:, 3], "right") - 1
    x0, y0 = np.clip(x0, 0, nx), np.clip(y0, 0, ny)
    x1, y1 = np.clip(x1, -1, nx - 1), np.clip(y1, -1, ny - 1)
    w, h = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    n = w * h
    keep = n > 0
    c, p, x0, y0, w, n = c[keep], p[keep], x0[keep], y0[keep], w[keep], n[keep]
    rep = np.repeat(np.arange(len(n)), n)
    k = np.arange(rep.size) - np.repeat(np.cumsum(n) - n, n)
    tix = x0[rep] + k % w[rep]
    tiy = y0[rep] + k // w[rep]
    return c[rep], p[rep], tiy * tx + tix


def _search(edges: np.ndarray, cam: np.ndarray, v: np.ndarray, side: str) -> np.ndarray:
    """Per-camera searchsorted: ``edges`` [C, n] sorted rows, query ``v`` for camera ``cam``."""
    C, n = edges.shape
    span = float(np.abs(edges).max()) * 4 + 10.0
    flat = (edges + np.arange(C)[:, None] * span).ravel()
    idx = np.searchsorted(flat, np.clip(v, -span / 2.5, span / 2.5) + cam * span, side)
    return idx - cam * n


def cast(prims: dict[str, np.ndarray], cam_origins: np.ndarray, R_cam_world: np.ndarray,
         tile_rects: np.ndarray, layout: tuple[int, int, int], ray_xy: tuple[torch.Tensor, torch.Tensor],
         zbuf: torch.Tensor,
         device: torch.device, far: float, label_objects: np.ndarray | None = None,
         grid: tuple[np.ndarray, np.ndarray, int] | None = None
         ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Cast all primitives into ``zbuf`` (flat [C*Hp*Wp], updated in place with min t).

    ``cam_origins`` [C, 3] world; ``R_cam_world`` [C, 3, 3]; ``tile_rects`` [C, T, 4]
    normalised-plane rectangles of each tile's rays; ``layout`` = (C, T tiles, S pixels per
    tile): pixels are stored tile-major, so pixel ``(c * T + t) * S + s`` is pixel ``s`` of
    tile ``t`` of camera ``c`` and a tile's rays are one contiguous block;
    ``ray_xy`` camera-frame ray x and y (z = 1), each [C*T, S] tile-major. Rays are taken to
    each primitive's frame with one 3x3 matrix per (camera, primitive) pair.

    Returns the per-pixel winning primitive index (-1 = none) and, when ``label_objects`` (obj
    id per primitive, 0 = unlabelled) is given, the raw hits of labelled primitives
    (``pix``, ``key`` = cam * (max id + 1) + obj id) for amodal masks.
    """
    P = len(prims["kind"])
    C, T, S = layout
    winner = torch.full_like(zbuf, -1, dtype=torch.int64)
    if P == 0:
        return winner, None
    corners = box_corners(prims["center"], prims["half"], prims["R"])              # [P, 8, 3]
    rel = corners[None] - cam_origins[:, None, None, :]                              # [C, P, 8, 3]
    cc = np.matmul(rel.reshape(len(R_cam_world), -1, 3), np.transpose(R_cam_world, (0, 2, 1))).reshape(rel.shape)
    rect, valid = project_rects(cc)                                                  # [C, P, 4]
    valid &= cc[..., 2].min(-1) < far
    cidx, pidx, tidx = bin_tiles(rect, valid, tile_rects, grid)
    if len(cidx) == 0:
        return winner, None
    center_rel = prims["center"][None] - cam_origins[:, None, :]                     # [C, P, 3]
    o_local = -np.matmul(prims["R"][None], center_rel[..., None])[..., 0]           # [C, P, 3]
    # camera -> primitive rotation per (camera, primitive)
    M = np.matmul(prims["R"][None], np.transpose(R_cam_world, (0, 2, 1))[:, None])   # [C, P, 3, 3]
    kinds = prims["kind"][pidx]
    hits_t, hits_pix, hits_prim = [], [], []
    raw_pix: list[torch.Tensor] = []
    raw_obj: list[torch.Tensor] = []
    rx, ry = ray_xy
    for kind in (BOX, CYL, ELL):
        sel = np.nonzero(kinds == kind)[0]
        if len(sel) == 0:
            continue
        cs, ps = cidx[sel], pidx[sel]
        per = np.concatenate([M[cs, ps].reshape(-1, 9), o_local[cs, ps], prims["half"][ps]], 1)
        per_t = torch.as_tensor(per, dtype=torch.float32, device=device).T.contiguous()       # [15, N]
        col = [per_t[k][:, None] for k in range(15)]
        tiles = torch.as_tensor(cs * T + tidx[sel], device=device)
        pix = tiles[:, None] * S + torch.arange(S, device=device)                   # [N, S]
        xs = rx.index_select(0, tiles)
        ys = ry.index_select(0, tiles)
        dl = tuple(torch.addcmul(torch.addcmul(col[3 * k + 2], col[3 * k], xs), col[3 * k + 1], ys)
                   for k in range(3))
        t = intersect(kind, (col[9], col[10], col[11]), dl, (col[12], col[13], col[14]))
        hits_t.append(t.view(-1))
        hits_pix.append(pix.view(-1))
        hits_prim.append(torch.as_tensor(ps, device=device).repeat_interleave(S))
        if label_objects is not None:
            # amodal hits of labelled objects: compact only the rows of labelled primitives
            lab_rows = np.nonzero(label_objects[ps] > 0)[0]
            if len(lab_rows):
                lr = torch.as_tensor(lab_rows, device=device)
                tl = t.index_select(0, lr)
                r_, s_ = torch.nonzero(tl < far, as_tuple=True)
                obj_rows = torch.as_tensor(label_objects[ps[lab_rows]], device=device)
                raw_pix.append(pix.index_select(0, lr)[r_, s_])
                raw_obj.append(obj_rows[r_])
    t_all = torch.cat(hits_t)
    pix_all = torch.cat(hits_pix)
    prim_all = torch.cat(hits_prim)
    # misses carry t = inf and leave the z-buffer unchanged
    zbuf.scatter_reduce_(0, pix_all, t_all, reduce="amin")
    win = torch.nonzero((t_all <= zbuf.index_select(0, pix_all)) & (t_all < far)).squeeze(1)
    winner.index_put_((pix_all.index_select(0, win),), prim_all.index_select(0, win))
    raw = None
    if label_objects is not None:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        raw = {"pix": torch.cat(raw_pix) if raw_pix else empty, "obj": torch.cat(raw_obj) if raw_obj else empty}
    return winner, raw
