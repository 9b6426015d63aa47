"""Ground truth of a rendered frame: 3D boxes in the ego frame, per-camera 2D boxes with
visibility / truncation / occlusion, and BEV maps.

Definitions (documented in docs/synthetic.md):

- 2D box: tight box of the object's *amodal* silhouette inside the image (all pixels whose
  ray hits one of the object's primitives, occluders ignored), as in KITTI.
- ``visibility``: visible pixels / amodal pixels inside the image (1 = nothing in front).
- ``truncation``: fraction of the area of the projected 3D box's rectangle (near-plane
  clipped) that lies outside the image.
- ``occlusion`` (KITTI levels): 0 if visibility >= 0.8, 1 if >= 0.4, else 2.
- ``ignore``: fewer than ``min_pixels`` visible pixels (too small or hidden to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from perception.data.sample import Boxes2D, Boxes3D
from perception.geometry import Camera, invert_transform, transform_points


@dataclass
class BevGrid:
    """BEV raster: image up = ego forward (+x), image left = ego left (+y), ego at the centre.

    Cell ``(row, col)`` covers ego ``x = (rows/2 - row - 0.5) * res``, ``y = (cols/2 - col - 0.5) * res``
    at its centre. Default 100 m x 100 m at 0.25 m (400 x 400).
    """

    length: float = 100.0     # metres along x (rows)
    width: float = 100.0      # metres along y (cols)
    res: float = 0.25

    @property
    def shape(self) -> tuple[int, int]:
        return int(round(self.length / self.res)), int(round(self.width / self.res))

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Ego x and y of every cell centre, each [rows, cols]."""
        rows, cols = self.shape
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        return (rows / 2 - r - 0.5) * self.res, (cols / 2 - c - 0.5) * self.res

    def to_pixel(self, xy_ego: np.ndarray) -> np.ndarray:
        """[N, 2] ego (x, y) -> [N, 2] float (col, row) pixel coordinates (cell centres at .0)."""
        rows, cols = self.shape
        xy = np.asarray(xy_ego, dtype=np.float64).reshape(-1, 2)
        return np.stack([cols / 2 - xy[:, 1] / self.res - 0.5, rows / 2 - xy[:, 0] / self.res - 0.5], -1)


def boxes3d_ego(objects: dict[str, np.ndarray], T_world_ego: np.ndarray) -> Boxes3D:
    """World objects -> ``Boxes3D`` in the ego frame (velocity: world velocity in ego axes)."""
    if len(objects["id"]) == 0:
        b = Boxes3D.empty()
        b.velocity = np.zeros((0, 2))
        b.instance_ids = np.zeros((0,), np.int64)
        return b
    T_ego_world = invert_transform(T_world_ego)
    center = transform_points(T_ego_world, objects["center"])
    ego_yaw = np.arctan2(T_world_ego[1, 0], T_world_ego[0, 0])
    yaw = np.arctan2(np.sin(objects["yaw"] - ego_yaw), np.cos(objects["yaw"] - ego_yaw))
    R = T_ego_world[:2, :2]
    vel = objects["velocity"] @ R.T
    return Boxes3D(center, objects["size"].astype(np.float64), yaw, objects["label"].astype(np.int64),
                   velocity=vel, instance_ids=objects["id"].astype(np.int64))


def _rect_truncation(corners_cam: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Truncation of each projected 3D box and its image rectangle [N, 4] (near-plane clipped)."""
    from perception.data.synth.raycast import project_rects
    rect_n, ok = project_rects(corners_cam)
    K = cam.K
    x0 = rect_n[:, 0] * K[0, 0] + K[0, 2]
    x1 = rect_n[:, 2] * K[0, 0] + K[0, 2]
    y0 = rect_n[:, 1] * K[1, 1] + K[1, 2]
    y1 = rect_n[:, 3] * K[1, 1] + K[1, 2]
    # pixel edges: pixel centres are integers, the image spans [-0.5, W-0.5]
    x0c, x1c = np.clip(x0, -0.5, cam.width - 0.5), np.clip(x1, -0.5, cam.width - 0.5)
    y0c, y1c = np.clip(y0, -0.5, cam.height - 0.5), np.clip(y1, -0.5, cam.height - 0.5)
    area = np.maximum(x1 - x0, 1e-9) * np.maximum(y1 - y0, 1e-9)
    inside = np.maximum(x1c - x0c, 0) * np.maximum(y1c - y0c, 0)
    trunc = np.where(ok, 1 - inside / area, 1.0)
    return np.clip(trunc, 0, 1), np.stack([x0, y0, x1, y1], -1)


def boxes2d(cams: list[Camera], boxes: Boxes3D, instance: torch.Tensor, raw: dict[str, torch.Tensor] | None,
            H: int, W: int, min_pixels: int = 16) -> list[Boxes2D]:
    """Per-camera 2D boxes from the amodal hits ``raw`` (``cam``, ``row``, ``col``, ``obj`` per
    hit of a labelled primitive) and the instance maps [C, H, W]."""
    C = len(cams)
    out: list[Boxes2D] = []
    ids = boxes.instance_ids
    if raw is None or len(ids) == 0:
        return [_empty() for _ in range(C)]
    dev = instance.device
    maxid = int(ids.max()) + 1
    # visible pixels per (camera, object)
    vis_counts = torch.bincount((torch.arange(C, device=dev)[:, None, None] * maxid + instance.long()).view(-1),
                                minlength=C * maxid)
    # amodal hits inside the image, only for objects with at least one visible pixel
    row, col = raw["row"], raw["col"]
    key = raw["cam"] * maxid + raw["obj"]
    keep = (row < H) & (col < W) & (vis_counts[key] > 0)
    key, row, col = key[keep], row[keep], col[keep]
    counts = torch.bincount(key, minlength=C * maxid)
    ukeys = torch.nonzero(counts).squeeze(1)
    lut = torch.full((C * maxid,), -1, dtype=torch.int64, device=dev)
    lut[ukeys] = torch.arange(len(ukeys), device=dev)
    inv = lut[key]
    K = len(ukeys)
    # unique (object, pixel) count: primitives of one object may overlap, so dedupe on a canvas
    # each slot keeps the index of one hit that wrote it; that hit is the slot's representative
    slot = inv * (H * W) + row * W + col
    order = torch.arange(len(slot), device=dev, dtype=torch.int32)
    canvas = torch.empty(K * H * W, dtype=torch.int32, device=dev)
    canvas[slot] = order
    rep = canvas[slot] == order
    amodal = torch.bincount(inv[rep], minlength=K)
    big = torch.full((K,), 1 << 30, dtype=torch.int64, device=dev)
    ymin = big.scatter_reduce(0, inv, row, "amin")
    xmin = big.scatter_reduce(0, inv, col, "amin")
    ymax = (-big).scatter_reduce(0, inv, row, "amax")
    xmax = (-big).scatter_reduce(0, inv, col, "amax")
    visible = vis_counts[ukeys]
    uk = ukeys.cpu().numpy()
    amodal, visible = amodal.cpu().numpy(), visible.cpu().numpy()
    bb = torch.stack([xmin, ymin, xmax, ymax], -1).cpu().numpy().astype(np.float32)
    id_to_row = {int(i): k for k, i in enumerate(ids)}
    corners_ego = boxes.corners()
    for ci, cam in enumerate(cams):
        sel = np.nonzero((uk // maxid == ci) & (visible > 0))[0]
        sel = sel[[int(uk[s] % maxid) in id_to_row for s in sel]]
        if len(sel) == 0:
            out.append(_empty())
            continue
        rows = np.array([id_to_row[int(uk[s] % maxid)] for s in sel])
        T_cam_ego = cam.T_cam_ego
        cc = transform_points(T_cam_ego, corners_ego[rows])
        trunc, _ = _rect_truncation(cc, cam)
        vis = visible[sel] / np.maximum(amodal[sel], 1)
        occ = np.where(vis >= 0.8, 0, np.where(vis >= 0.4, 1, 2))
        center_cam = transform_points(T_cam_ego, boxes.center[rows])
        heading = np.stack([np.cos(boxes.yaw[rows]), np.sin(boxes.yaw[rows]), np.zeros(len(rows))], -1)
        h_cam = heading @ T_cam_ego[:3, :3].T
        yaw_cam = np.arctan2(-h_cam[:, 2], h_cam[:, 0])
        # boxes as pixel-edge extents: [xmin - 0.5, ymin - 0.5, xmax + 0.5, ymax + 0.5]
        b = bb[sel] + np.array([-0.5, -0.5, 0.5, 0.5], np.float32)
        out.append(Boxes2D(b, boxes.labels[rows].copy(), truncation=trunc.astype(np.float32),
                           occlusion=occ.astype(np.int64), visibility=vis.astype(np.float32),
                           instance_ids=ids[rows].copy(), depth=center_cam[:, 2].astype(np.float32),
                           center_cam=center_cam.astype(np.float32), size=boxes.size[rows].astype(np.float32),
                           yaw_cam=yaw_cam.astype(np.float32), ignore=visible[sel] < min_pixels))
    return out


def _empty() -> Boxes2D:
    b = Boxes2D.empty()
    b.truncation = np.zeros(0, np.float32)
    b.occlusion = np.zeros(0, np.int64)
    b.visibility = np.zeros(0, np.float32)
    b.instance_ids = np.zeros(0, np.int64)
    b.depth = np.zeros(0, np.float32)
    b.center_cam = np.zeros((0, 3), np.float32)
    b.size = np.zeros((0, 3), np.float32)
    b.yaw_cam = np.zeros(0, np.float32)
    b.ignore = np.zeros(0, bool)
    return b


_CELLS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _cells(grid: BevGrid, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (grid.length, grid.width, grid.res, str(device))
    if key not in _CELLS:
        xe, ye = grid.cell_centers()
        _CELLS[key] = (torch.as_tensor(xe.ravel(), dtype=torch.float32, device=device),
                       torch.as_tensor(ye.ravel(), dtype=torch.float32, device=device))
    return _CELLS[key]


def bev_maps(grid: BevGrid, T_world_ego: np.ndarray, layout, boxes: Boxes3D, static_prims: dict[str, np.ndarray],
             device: torch.device) -> dict[str, np.ndarray]:
    """BEV ground truth: ``drivable`` (uint8), ``lanes`` (uint8 lane-marking mask),
    ``occupancy`` (uint8: 1 static obstacle, 2 object), ``instances`` (int32 object ids of
    footprints), ``classes`` (int8 class index of footprints, -1 none)."""
    from perception.data.synth import materials
    rows, cols = grid.shape
    xe, ye = _cells(grid, device)
    ex, ey = T_world_ego[0, 3], T_world_ego[1, 3]
    c, s_ = float(T_world_ego[0, 0]), float(T_world_ego[1, 0])
    x = xe * c - ye * s_ + float(ex)
    y = xe * s_ + ye * c + float(ey)
    rad = 0.75 * max(grid.length, grid.width)
    segs = layout.near_segments(ex, ey, rad)
    crs = layout.near_crossings(ex, ey, rad)
    surf = layout.surface(x, y, segs, crs)
    drivable = surf["drivable"].view(rows, cols).cpu().numpy().astype(np.uint8)
    # lane markings: the ground painter's paint coverage with a cell-sized footprint
    foot = torch.full_like(x, grid.res)
    paint, yellow = materials.road_paint(surf, layout, crs, foot, foot)
    lanes = (surf["drivable"] & ((paint + yellow) > 0.4)).view(rows, cols).cpu().numpy().astype(np.uint8)
    occ = np.zeros((rows, cols), np.uint8)
    inst = np.zeros((rows, cols), np.int32)
    cls = np.full((rows, cols), -1, np.int8)
    T_ego_world = invert_transform(T_world_ego)

    def poly(pts_ego: np.ndarray) -> np.ndarray:
        return np.round(grid.to_pixel(pts_ego[:, :2]) * 4).astype(np.int32)

    # static obstacles: footprints of the trunks / poles / buildings (primitives touching the ground)
    if len(static_prims["kind"]):
        from perception.data.synth.raycast import box_corners
        low = (static_prims["center"][:, 2] - np.abs(static_prims["half"][:, 2])) < 0.3
        sel = low & (static_prims["obj"] == 0)
        if sel.any():
            cn = box_corners(static_prims["center"][sel], static_prims["half"][sel], static_prims["R"][sel])
            ce = transform_points(T_ego_world, cn.reshape(-1, 3)).reshape(-1, 8, 3)
            for c8 in ce:
                if np.abs(c8[:, :2]).min(0).max() > rad:
                    continue
                hull = cv2.convexHull(poly(c8))
                cv2.fillConvexPoly(occ, hull, 1, shift=2)
    if len(boxes):
        corners = boxes.corners()
        order = np.argsort(-boxes.center[:, 2])
        for i in order:
            p = poly(corners[i, :4])
            cv2.fillConvexPoly(occ, p, 2, shift=2)
            cv2.fillConvexPoly(inst, p, int(boxes.instance_ids[i]), shift=2)
            cv2.fillConvexPoly(cls, p, int(boxes.labels[i]), shift=2)
    return {"drivable": drivable, "lanes": lanes, "occupancy": occ, "instances": inst, "classes": cls,
            "resolution": grid.res}
