"""Bird's-eye-view fusion: ground texture, occupancy, and objects fused across cameras.

The BEV grid is a :class:`perception.geometry.ipm.BEVSpec` (up = forward, left = left, ego
at the centre by default: 100 m x 100 m at 0.25 m/px, i.e. 400 x 400).

- **Ground texture**: every camera's image is warped onto the ground plane by inverse
  perspective mapping (one ``cv2.remap`` per camera with maps computed once per camera) and
  the cameras are blended with feathered weights (distance to the edge of each camera's
  footprint, times a preference for nearby ground where the resolution is best), so overlaps
  have no seams. Per BEV pixel the two best cameras are blended; the cameras are stacked in
  one atlas image so a frame costs two ``cv2.remap`` and one ``cv2.blendLinear`` whatever the
  number of cameras (tables cached per set of active cameras).
- **Occupancy**: depth points above the ground (``obstacle_z`` band) are occupied, points on
  the ground (``|z| < ground_z``) free, everything else unknown. Evidence accumulates as
  log-odds with exponential decay ``L <- decay * L + measurement`` which damps flicker and
  lets stale evidence fade back to unknown (no ego-motion compensation: the map is in the
  current ego frame and the decay keeps trails short).
- **Objects**: lifted boxes of all cameras are merged greedily by ego-frame centre distance
  (``merge_dist``), so a car seen by two cameras is one object listing both cameras.
- **Stale sectors**: the ground footprint of a camera that missed this frame (or is
  reconnecting) is marked stale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from perception.geometry import Camera
from perception.geometry.ipm import BEVSpec, bev_remap_maps
from perception.pipeline.lifting import LiftedObject

log = logging.getLogger(__name__)

__all__ = ["BEVConfig", "GroundMosaic", "OccupancyGrid", "FusedObject", "fuse_objects", "BEVState"]

VEHICLES = {"car", "truck", "bus"}
_GAP = 2  # replicated rows between the cameras in the remap atlas


@dataclass(frozen=True)
class BEVConfig:
    range_m: float = 100.0        # side of the square map, metres
    resolution: float = 0.25      # metres per pixel
    ground_z: float = 0.25        # |z| below this: ground (free)
    obstacle_z: tuple[float, float] = (0.4, 3.0)
    occ_decay: float = 0.7
    occ_hit: float = 0.9
    occ_free: float = -0.5
    occ_clamp: float = 4.0
    merge_dist: float = 2.5
    feather_px: float = 24.0

    def spec(self) -> BEVSpec:
        r = self.range_m / 2
        return BEVSpec(x_range=(-r, r), y_range=(-r, r), resolution=self.resolution)

    @classmethod
    def from_dict(cls, d: dict | None) -> "BEVConfig":
        d = dict(d or {})
        if "obstacle_z" in d:
            d["obstacle_z"] = tuple(d["obstacle_z"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"bev config: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**d)


class GroundMosaic:
    """IPM ground texture stitched from all cameras with feathered blending."""

    def __init__(self, spec: BEVSpec, feather_px: float = 24.0) -> None:
        self.spec, self.feather_px = spec, feather_px
        self._tables: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._atlas: dict[tuple, tuple] = {}

    def tables(self, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(map_x, map_y, weight [H,W] float32, footprint bool)`` for one camera (computed once)."""
        key = (camera.name, camera.width, camera.height, camera.K.tobytes(), camera.T_ego_cam.tobytes())
        if key not in self._tables:
            map_x, map_y, valid = bev_remap_maps(camera, self.spec)
            edge = cv2.distanceTransform(valid.astype(np.uint8), cv2.DIST_L2, 3)
            feather = np.clip(edge / self.feather_px, 0, 1)
            xs, ys = self.spec.grid()
            cx, cy = camera.T_ego_cam[0, 3], camera.T_ego_cam[1, 3]
            near = 1.0 / (1.0 + np.hypot(xs - cx, ys - cy) / 10.0)
            weight = (feather * near).astype(np.float32) * valid
            self._tables[key] = (map_x, map_y, weight, valid)
        return self._tables[key]

    def _atlas_tables(self, cameras: list[Camera | None]) -> tuple:
        """Per BEV pixel the best and second-best camera (by blend weight) as remap tables into
        an atlas of the camera images stacked vertically, and the blend weight of the best one.
        Cached per set of active cameras, so a frame costs two remaps and one blend."""
        key = tuple((c.name, c.width, c.height, c.K.tobytes(), c.T_ego_cam.tobytes()) if c is not None else None
                    for c in cameras)
        hit = self._atlas.get(key)
        if hit is not None:
            return hit
        h, w = self.spec.shape
        active = [(i, c) for i, c in enumerate(cameras) if c is not None]
        width = max(c.width for _, c in active)
        weights = np.zeros((len(active) + 1, h, w), np.float32)  # slot 0: nobody
        mx = np.full((len(active) + 1, h, w), -1e4, np.float32)
        my = np.full((len(active) + 1, h, w), -1e4, np.float32)
        offsets, y0 = [], 0
        for k, (_, cam) in enumerate(active, start=1):
            map_x, map_y, weight, valid = self.tables(cam)
            weights[k] = weight
            mx[k] = np.where(valid, map_x, -1e4)
            my[k] = np.where(valid, map_y + y0 + _GAP, -1e4)
            offsets.append(y0)
            y0 += cam.height + 2 * _GAP
        order = np.argsort(-weights, axis=0)
        best, second = order[0], order[1]
        w1 = np.take_along_axis(weights, best[None], 0)[0]
        w2 = np.take_along_axis(weights, second[None], 0)[0]
        tot = w1 + w2
        a1 = np.where(tot > 0, w1 / np.maximum(tot, 1e-9), 0).astype(np.float32)
        a2 = np.where(tot > 0, w2 / np.maximum(tot, 1e-9), 0).astype(np.float32)
        take = lambda m, idx: np.take_along_axis(m, idx[None], 0)[0]  # noqa: E731
        out = (take(mx, best), take(my, best), take(mx, second), take(my, second), a1, a2,
               [i for i, _ in active], width, y0)
        self._atlas[key] = out
        if len(self._atlas) > 32:
            self._atlas.pop(next(iter(self._atlas)))
        return out

    def __call__(self, images: list[np.ndarray | None], cameras: list[Camera | None]) -> np.ndarray:
        """Blended RGB ground image (uint8 [H, W, 3]); black where no camera sees the ground.
        Images that are None (stale or invalid cameras) are left out."""
        cams = [c if (img is not None and c is not None) else None for img, c in zip(images, cameras)]
        if not any(c is not None for c in cams):
            return np.zeros((*self.spec.shape, 3), np.uint8)
        m1x, m1y, m2x, m2y, a1, a2, idx, width, height = self._atlas_tables(cams)
        atlas = np.zeros((height, width, 3), np.uint8)
        y = 0
        for i in idx:  # each image between _GAP replicated rows, so bilinear sampling never mixes cameras
            img = images[i]
            hh, ww = img.shape[:2]
            atlas[y:y + _GAP, :ww] = img[:1]
            atlas[y + _GAP:y + _GAP + hh, :ww] = img
            atlas[y + _GAP + hh:y + 2 * _GAP + hh, :ww] = img[-1:]
            y += hh + 2 * _GAP
        r1 = cv2.remap(atlas, m1x, m1y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        r2 = cv2.remap(atlas, m2x, m2y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return cv2.blendLinear(r1, r2, a1, a2)

    def footprint(self, camera: Camera) -> np.ndarray:
        return self.tables(camera)[3]


class OccupancyGrid:
    """Log-odds occupancy in the ego frame with exponential decay (see module docstring)."""

    def __init__(self, spec: BEVSpec, cfg: BEVConfig) -> None:
        self.spec, self.cfg = spec, cfg
        self.logodds = np.zeros(spec.shape, np.float32)

    def _cells(self, pts: np.ndarray) -> np.ndarray:
        cr = self.spec.ego_to_pixel(pts[:, :2])
        c, r = np.round(cr[:, 0]).astype(np.int64), np.round(cr[:, 1]).astype(np.int64)
        h, w = self.spec.shape
        ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        return r[ok] * w + c[ok]

    def update(self, points: np.ndarray) -> np.ndarray:
        """Fold one frame's ego points ``[N, 3]`` in; returns the smoothed log-odds."""
        cfg = self.cfg
        h, w = self.spec.shape
        meas = np.zeros(h * w, np.float32)
        if len(points):
            z = points[:, 2]
            ground = np.abs(z) < cfg.ground_z
            obst = (z > cfg.obstacle_z[0]) & (z < cfg.obstacle_z[1])
            meas[self._cells(points[ground])] = cfg.occ_free
            meas[self._cells(points[obst])] = cfg.occ_hit   # occupied wins over free in a cell
        self.logodds *= cfg.occ_decay
        self.logodds += meas.reshape(h, w)
        np.clip(self.logodds, -cfg.occ_clamp, cfg.occ_clamp, out=self.logodds)
        return self.logodds

    def classes(self, threshold: float = 0.6) -> np.ndarray:
        """uint8 [H, W]: 0 unknown, 1 free, 2 occupied."""
        out = np.zeros(self.spec.shape, np.uint8)
        out[self.logodds < -threshold] = 1
        out[self.logodds > threshold] = 2
        return out


@dataclass
class FusedObject:
    label: str
    score: float
    center: np.ndarray
    size: np.ndarray
    yaw: float
    cameras: list[str] = field(default_factory=list)
    members: int = 1
    parts: list = field(default_factory=list)      # the LiftedObjects merged into this one
    track_id: int = 0                               # set by the tracker (0: not tracked)


def _family(label: str) -> str:
    return "vehicle" if label in VEHICLES else label


def fuse_objects(objects: list[LiftedObject], merge_dist: float = 2.5) -> list[FusedObject]:
    """Greedy merge by ego-frame centre distance (highest score first, same class family):
    the same object seen by several cameras becomes one, listing all cameras."""
    fused: list[FusedObject] = []
    weights: list[float] = []
    for obj in sorted(objects, key=lambda o: -o.score):
        best, best_d = -1, merge_dist
        for k, f in enumerate(fused):
            if _family(f.label) != _family(obj.label):
                continue
            d = float(np.hypot(*(f.center[:2] - obj.center[:2])))
            if d < best_d:
                best, best_d = k, d
        if best < 0:
            fused.append(FusedObject(obj.label, obj.score, obj.center.copy(), obj.size.copy(), obj.yaw, [obj.camera],
                                     parts=[obj]))
            weights.append(obj.score)
            continue
        f, wsum = fused[best], weights[best]
        f.center = (f.center * wsum + obj.center * obj.score) / (wsum + obj.score)
        weights[best] = wsum + obj.score
        f.members += 1
        f.parts.append(obj)
        if obj.camera not in f.cameras:
            f.cameras.append(obj.camera)
    return fused


@dataclass
class BEVState:
    """What the BEV stage produced for one frame (consumed by render and sinks)."""

    spec: BEVSpec
    ground: np.ndarray | None = None           # uint8 RGB [H, W, 3]
    occupancy: np.ndarray | None = None        # uint8 [H, W]: 0 unknown, 1 free, 2 occupied
    stale: np.ndarray | None = None            # bool [H, W]: footprints of stale cameras
    stale_cameras: list[str] = field(default_factory=list)
