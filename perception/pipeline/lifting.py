"""2D detections + dense depth -> 3D objects in the ego frame, and depth maps -> ego points.

Every box gets three independent distance estimates (camera z of the object centre):

1. ``head``: the detection head's own 3D centre (``Detections.center_cam``);
2. ``dense``: the median of the dense depth map over the inner half of the box, plus half the
   object's smaller horizontal extent (the map sees the front surface, not the centre);
3. ``ground``: where the ray through the bottom-centre of the box meets the ground plane
   (ego z = 0), plus the same surface-to-centre offset. Only valid below the horizon.

The object's distance is the median of the available estimates, so no single one of them is
trusted over the others; the object is flagged ``consistent = False`` when the head is more than
``rel_tol`` off the median of the other two. The centre is moved along its pixel ray to the
chosen depth, then transformed to ego with ``T_ego_cam``.

Every class we detect stands on the road, so an object whose lifted box floats well above the
ground plane is a false positive (a "truck" made of trees and sky, with its box bottom near the
horizon but a distance of a few metres). :class:`GroundGate` drops those; its tolerance grows
with distance to allow for hills and for pitch errors of the mount (docs/pipeline.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from perception.geometry import Camera
from perception.geometry.ipm import ground_depth
from perception.geometry.transforms import transform_points

__all__ = ["LiftedObject", "GroundGate", "lift_detections", "shown_mask", "yaw_cam_to_ego", "DepthPointCloud",
           "DepthSmoother"]


@dataclass
class LiftedObject:
    camera: str
    label: str
    score: float
    box: np.ndarray                  # xyxy pixels of the network input
    center: np.ndarray               # ego frame, metres (geometric centre)
    size: np.ndarray                 # l, w, h metres
    yaw: float                       # about ego +z, from +x toward +y
    depth: float                     # the chosen camera z of the centre
    estimates: dict[str, float] = field(default_factory=dict)
    consistent: bool = True
    index: int = -1                  # position in the Detections it was lifted from

    @property
    def bottom_height(self) -> float:
        """Height of the bottom of the 3D box above the ego ground plane (metres)."""
        return float(self.center[2] - 0.5 * self.size[2])

    @property
    def ground_range(self) -> float:
        """Horizontal distance of the centre from the ego origin (metres)."""
        return float(np.hypot(self.center[0], self.center[1]))


@dataclass(frozen=True)
class GroundGate:
    """Rejects lifted objects whose box bottom floats above the ground plane.

    An object is dropped when ``bottom_height > tolerance + grade * ground_range``: 0.5 m near the
    car, plus 6 cm per metre (a 6 % rise of the road, or a 3.4 degree pitch error of the mount).
    On the shared nuScenes and KITTI frames no detection that matches a labelled box comes near the
    limit (highest: 0.94 m at 49 m, where the limit is 3.4 m), while on the shared dashcam clip the
    floating "trucks" over the trees (bottom 1.0-1.3 m at 9 m) are removed.
    """

    tolerance: float = 0.5
    grade: float = 0.06

    def floating(self, obj: LiftedObject) -> bool:
        return obj.bottom_height > self.tolerance + self.grade * obj.ground_range

    def __call__(self, objects: list[LiftedObject]) -> tuple[list[LiftedObject], list[LiftedObject]]:
        """(kept, dropped)."""
        kept, dropped = [], []
        for o in objects:
            (dropped if self.floating(o) else kept).append(o)
        return kept, dropped


def yaw_cam_to_ego(yaw_cam: np.ndarray, T_ego_cam: np.ndarray) -> np.ndarray:
    """KITTI ``rotation_y`` (about camera +y; length axis ``(cos, 0, -sin)``) -> yaw about ego +z."""
    yaw_cam = np.asarray(yaw_cam, dtype=np.float64).reshape(-1)
    d_cam = np.stack([np.cos(yaw_cam), np.zeros_like(yaw_cam), -np.sin(yaw_cam)], -1)
    d_ego = d_cam @ T_ego_cam[:3, :3].T
    return np.arctan2(d_ego[:, 1], d_ego[:, 0])


def _dense_depth(depth: np.ndarray, box: np.ndarray) -> float:
    h, w = depth.shape
    x1, y1, x2, y2 = box
    cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
    c0, c1 = int(np.clip(np.floor(cx - bw), 0, w - 1)), int(np.clip(np.ceil(cx + bw), 1, w))
    r0, r1 = int(np.clip(np.floor(cy - bh), 0, h - 1)), int(np.clip(np.ceil(cy + bh), 1, h))
    patch = depth[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)]
    patch = patch[np.isfinite(patch) & (patch > 0)]
    return float(np.median(patch)) if patch.size else float("nan")


def _ground_depths(camera: Camera, boxes: np.ndarray) -> np.ndarray:
    """Camera z of the ground point under each box's bottom-centre pixel (NaN above the horizon),
    all boxes in one call: per-box calls of the undistortion were most of the lifting time."""
    return ground_depth(camera, np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1))


def lift_detections(det, depth: np.ndarray | None, camera: Camera, *, rel_tol: float = 0.25,
                    max_depth: float = 150.0) -> list[LiftedObject]:
    """Lift one camera's :class:`~perception.nn.Detections` (network pixel coordinates;
    ``camera`` is the network-resolution camera) to ego-frame objects.

    Each object's distance is the median of the three estimates that are available: the 3D
    head, the dense depth map in the box and the ground under the box's bottom edge. Each of
    them fails on its own (the head on cameras unlike the training ones, the dense depth on
    boxes that show mostly background, the ground on occluded or cut-off bottoms), so no one of
    them is trusted over the others (docs/pipeline.md, "Lifting"). ``consistent`` says whether
    the head was within ``rel_tol`` of the other two's median."""
    n = len(det)
    if n == 0:
        return []
    boxes = det.boxes.numpy().astype(np.float64)
    centers = det.center_cam.numpy().astype(np.float64)
    sizes = det.size.numpy().astype(np.float64)
    yaws = yaw_cam_to_ego(det.yaw.numpy(), camera.T_ego_cam)
    names = det.label_names
    scores = det.scores.numpy()
    ground = _ground_depths(camera, boxes)
    out = []
    for i in range(n):
        box, c, size = boxes[i], centers[i], sizes[i]
        offset = 0.5 * float(min(size[0], size[1]))
        est = {"head": float(c[2]) if np.isfinite(c[2]) and c[2] > 0 else float("nan")}
        d = _dense_depth(depth, box) if depth is not None else float("nan")
        est["dense"] = d + offset if np.isfinite(d) else float("nan")
        g = float(ground[i])
        est["ground"] = g + offset if np.isfinite(g) and g < max_depth else float("nan")
        finite = [v for v in est.values() if np.isfinite(v)]
        z = float(np.median(finite)) if finite else float("nan")
        others = [v for k, v in est.items() if k != "head" and np.isfinite(v)]
        ref = float(np.median(others)) if others else float("nan")
        consistent = not others or abs(est["head"] - ref) <= rel_tol * ref     # False for a NaN head
        if not np.isfinite(z) or z <= 0:
            continue
        # move the centre along its pixel ray to the chosen depth
        if np.isfinite(c[2]) and c[2] > 1e-6:
            c_cam = c * (z / c[2])
        else:
            uv = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])
            c_cam = camera.unproject(uv, z, to_ego=False)[0]
        center = transform_points(camera.T_ego_cam, c_cam[None])[0]
        out.append(LiftedObject(camera.name, names[i], float(scores[i]), box, center, size, float(yaws[i]),
                                float(z), est, consistent, i))
    return out


def shown_mask(det, depth: np.ndarray | None, camera: Camera, gate: GroundGate | None = GroundGate()) -> np.ndarray:
    """Mask over ``det``: the detections ``perception run`` shows, i.e. those that lift to a finite
    distance and (with ``gate``) do not float above the ground. Evaluation uses it so that its
    figures count the boxes a user sees, not the ones the pipeline drops."""
    mask = np.zeros(len(det), bool)
    for o in lift_detections(det, depth, camera):
        mask[o.index] = gate is None or not gate.floating(o)
    return mask


class DepthPointCloud:
    """Subsampled depth map -> ego points; pixel rays (with distortion) cached per camera."""

    def __init__(self, stride: int = 4, max_depth: float = 50.0) -> None:
        self.stride, self.max_depth = stride, max_depth
        self._rays: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _get_rays(self, camera: Camera, shape: tuple[int, int]):
        key = (camera.name, camera.K.tobytes(), camera.dist.tobytes(), camera.T_ego_cam.tobytes(), shape)
        if key not in self._rays:
            h, w = shape
            s = self.stride
            vs, us = np.mgrid[s // 2:h:s, s // 2:w:s]
            uv = np.stack([us.ravel(), vs.ravel()], -1).astype(np.float64)
            rays = camera.pixel_rays(uv)
            rays_ego = (rays @ camera.T_ego_cam[:3, :3].T).astype(np.float32)
            self._rays[key] = (vs.ravel(), us.ravel(), rays_ego, camera.T_ego_cam[:3, 3].astype(np.float32))
            if len(self._rays) > 64:
                self._rays.pop(next(iter(self._rays)))
        return self._rays[key]

    def __call__(self, depth: np.ndarray, camera: Camera) -> np.ndarray:
        """``[N, 3]`` float32 ego points (finite depth within ``max_depth`` only)."""
        vs, us, rays, origin = self._get_rays(camera, depth.shape)
        z = depth[vs, us].astype(np.float32)
        ok = np.isfinite(z) & (z > 0.3) & (z < self.max_depth)
        return rays[ok] * z[ok, None] + origin


class DepthSmoother:
    """Exponential smoothing of each camera's depth map, so depth does not flicker.

    ``alpha`` is the weight of the new frame (linear in metres: the log-space version costs a
    log and an exp per pixel for no visible difference at these rates). A camera that was
    stale or changed shape restarts.
    """

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha
        self._state: dict[str, np.ndarray] = {}

    def __call__(self, name: str, depth: np.ndarray) -> np.ndarray:
        d = np.asarray(depth, dtype=np.float32)
        prev = self._state.get(name)
        if prev is not None and prev.shape == d.shape and self.alpha < 1:
            d = cv2.addWeighted(d, self.alpha, prev, 1.0 - self.alpha, 0.0)
        self._state[name] = d
        return d

    def reset(self, name: str) -> None:
        self._state.pop(name, None)
