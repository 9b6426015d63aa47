"""Ground light maps: sun shadows, contact (ambient-occlusion) shadows and night light pools.

A world-aligned top-down grid around the ego is rasterised with OpenCV: each primitive's
bounding box is projected along the sun direction onto z = 0 (its shadow polygon), footprints
of objects darken the ground beneath them, and street lamps / headlights add light pools.
The renderer looks these maps up with the ground hit point of every ground pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from perception.data.synth.raycast import box_corners


@dataclass
class GroundMaps:
    maps: torch.Tensor        # [1, 2 or 5, H, W]: sun visibility, ambient occlusion[, light rgb (night)]
    x0: float                 # world x of column 0's left edge
    y0: float                 # world y of row 0's top edge
    res: float
    size: int

    def sample(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[N, 2 or 5] bilinear samples at world points (outside the grid: lit, no occlusion, no light)."""
        ext = self.size * self.res
        gx = (x - self.x0) / ext * 2 - 1
        gy = (y - self.y0) / ext * 2 - 1
        grid = torch.stack([gx, gy], -1).view(1, 1, -1, 2).to(self.maps.dtype)
        out = torch.nn.functional.grid_sample(self.maps, grid, mode="bilinear", padding_mode="border",
                                              align_corners=False)
        out = out[0, :, 0].T
        inside = (gx.abs() < 0.999) & (gy.abs() < 0.999)
        default = torch.tensor([1.0, 1.0, 0, 0, 0][:out.shape[1]], device=out.device, dtype=out.dtype)
        return torch.where(inside[:, None], out, default)


def ground_maps(prims: dict[str, np.ndarray], objects: dict[str, np.ndarray], ego_xy: np.ndarray,
                sun_dir: np.ndarray, sun_on: bool, lamps: np.ndarray, night: bool, device: torch.device,
                extent: float = 80.0, res: float = 0.2) -> GroundMaps:
    size = int(round(2 * extent / res))
    x0 = math.floor(ego_xy[0] / res) * res - extent
    y0 = math.floor(ego_xy[1] / res) * res - extent
    sun = np.ones((size, size), np.float32)
    ao = np.ones((size, size), np.float32)
    light = np.zeros((size, size, 3), np.float32) if night else None
    scale = 1.0 / res

    def to_px(pts: np.ndarray) -> np.ndarray:
        return np.round(np.stack([(pts[..., 0] - x0) * scale, (pts[..., 1] - y0) * scale], -1) * 4).astype(np.int32)

    if len(prims["kind"]):
        near = (np.abs(prims["center"][:, 0] - ego_xy[0]) < extent + 40) & \
               (np.abs(prims["center"][:, 1] - ego_xy[1]) < extent + 40)
        # small parts (wheels, arms, heads, lamps, sign plates) cast negligible shadows
        hh = prims["half"]
        near &= (hh[:, 2] >= 0.2) | (hh[:, 0] * hh[:, 1] >= 0.08)
        corners = box_corners(prims["center"][near], prims["half"][near], prims["R"][near])   # [P, 8, 3]
        if sun_on and sun_dir[2] > 0.02 and len(corners):
            k = np.clip(corners[..., 2:3], 0, None) / sun_dir[2]
            proj = corners[..., :2] - k * sun_dir[None, None, :2]
            # shadow lengths of tall buildings at low sun are clipped to keep the polygon sane
            px = to_px(proj)
            for poly in px:
                hull = cv2.convexHull(poly)
                cv2.fillConvexPoly(sun, hull, 0.0, lineType=cv2.LINE_AA, shift=2)
        # contact shadows under labelled objects (vehicles, people)
    if len(objects["id"]):
        c, s = np.cos(objects["yaw"]), np.sin(objects["yaw"])
        l, w = objects["size"][:, 0] / 2 + 0.25, objects["size"][:, 1] / 2 + 0.25
        for i in range(len(objects["id"])):
            loc = np.array([[l[i], w[i]], [l[i], -w[i]], [-l[i], -w[i]], [-l[i], w[i]]])
            pts = loc @ np.array([[c[i], s[i]], [-s[i], c[i]]]) + objects["center"][i, :2]
            cv2.fillConvexPoly(ao, to_px(pts), 0.35, lineType=cv2.LINE_AA, shift=2)
    if night:
        for lx, ly, lz in lamps:
            cx, cy = (lx - x0) * scale, (ly - y0) * scale
            r = int(9.0 * scale)
            if -r < cx < size + r and -r < cy < size + r:
                cv2.circle(light, (int(cx), int(cy)), r, (1.6, 1.35, 0.9), -1, lineType=cv2.LINE_AA)
        if len(objects["id"]):
            for i in range(len(objects["id"])):
                if objects["label"][i] > 2:
                    continue
                fwd = np.array([np.cos(objects["yaw"][i]), np.sin(objects["yaw"][i])])
                p = objects["center"][i, :2] + fwd * (objects["size"][i, 0] / 2 + 6)
                cv2.circle(light, (int((p[0] - x0) * scale), int((p[1] - y0) * scale)), int(5 * scale),
                           (1.2, 1.15, 1.0), -1, lineType=cv2.LINE_AA)
        light = cv2.GaussianBlur(light, (0, 0), 3.0 * scale)
    sun = cv2.GaussianBlur(sun, (0, 0), 0.6)
    ao = cv2.GaussianBlur(ao, (0, 0), 0.35 * scale)
    # rows index y, columns index x
    # day: two channels (the light pools are all zero and are left out)
    maps = np.stack([sun, ao]) if not night else np.concatenate([sun[None], ao[None], light.transpose(2, 0, 1)], 0)
    return GroundMaps(torch.as_tensor(maps[None], device=device), x0, y0, res, size)
