"""LiDAR point cloud -> camera projection and sparse z-depth maps.

The depth map convention is the one of :class:`perception.data.Sample`: float32 ``[H, W]``
metres of camera z-depth, 0 where no point landed. When several points fall into one pixel
the nearest wins (occlusion). Points closer than ``min_range`` to the LiDAR origin are the
vehicle's own body / sensor mount (nuScenes: 23 % of a sweep within 1 m) and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.geometry.camera import Camera
from perception.geometry.transforms import invert_transform, transform_points

__all__ = ["LidarProjection", "project_lidar", "lidar_depth_map"]


@dataclass
class LidarProjection:
    """Per point: ``uv`` [N, 2] pixels, ``depth`` [N] camera z, ``in_image`` [N] bool
    (kept after the range/depth filters and inside the image)."""

    uv: np.ndarray
    depth: np.ndarray
    in_image: np.ndarray

    @property
    def count(self) -> int:
        return int(self.in_image.sum())


def project_lidar(points: np.ndarray, camera: Camera, T_cam_lidar: np.ndarray | None = None, *,
                  T_ego_lidar: np.ndarray | None = None, min_depth: float = 0.5, min_range: float = 1.0,
                  apply_distortion: bool = True) -> LidarProjection:
    """Project ``[N, >=3]`` LiDAR points (x, y, z first) into ``camera``.

    The LiDAR->camera transform is ``T_cam_lidar`` when given (e.g. nuScenes' motion-compensated
    ``lidar2cam``); else ``camera.T_cam_ego @ T_ego_lidar`` (``T_ego_lidar`` defaults to identity,
    i.e. points already in the ego frame). ``min_range`` is measured from the LiDAR origin.
    """
    pts = np.asarray(points)[:, :3].astype(np.float64)
    if T_cam_lidar is None:
        T_cam_lidar = camera.T_cam_ego @ (np.eye(4) if T_ego_lidar is None else np.asarray(T_ego_lidar))
    keep = np.linalg.norm(pts, axis=1) >= min_range if min_range > 0 else np.ones(len(pts), bool)
    pts_cam = transform_points(T_cam_lidar, pts)
    keep &= pts_cam[:, 2] > min_depth
    uv = np.full((len(pts), 2), np.nan)
    if keep.any():
        uv[keep], _ = camera.project_cam(pts_cam[keep], apply_distortion=apply_distortion)
    with np.errstate(invalid="ignore"):
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0) & (uv[:, 1] < camera.height)
    return LidarProjection(uv=uv, depth=pts_cam[:, 2], in_image=keep & inside)


def lidar_depth_map(points: np.ndarray, camera: Camera, T_cam_lidar: np.ndarray | None = None, *,
                    T_ego_lidar: np.ndarray | None = None, min_depth: float = 0.5, min_range: float = 1.0,
                    max_depth: float | None = None, apply_distortion: bool = True) -> np.ndarray:
    """Sparse float32 ``[H, W]`` z-depth map (0 = no point); nearest point wins per pixel.

    A point goes to pixel ``(round(u), round(v))`` (OpenCV: pixel centres at integer coordinates).
    """
    proj = project_lidar(points, camera, T_cam_lidar, T_ego_lidar=T_ego_lidar, min_depth=min_depth,
                         min_range=min_range, apply_distortion=apply_distortion)
    depth_map = np.zeros((camera.height, camera.width), np.float32)
    m = proj.in_image
    if max_depth is not None:
        m = m & (proj.depth <= max_depth)
    if not m.any():
        return depth_map
    col = np.clip(np.floor(proj.uv[m, 0] + 0.5).astype(np.int64), 0, camera.width - 1)
    row = np.clip(np.floor(proj.uv[m, 1] + 0.5).astype(np.int64), 0, camera.height - 1)
    d = proj.depth[m].astype(np.float32)
    # write far-to-near so the nearest point is written last and wins
    order = np.argsort(-d, kind="stable")
    depth_map[row[order], col[order]] = d[order]
    return depth_map


def T_cam_lidar_from(camera: Camera, T_ego_lidar: np.ndarray) -> np.ndarray:
    """Static LiDAR->camera transform ``inv(T_ego_cam) @ T_ego_lidar`` (no motion compensation)."""
    return invert_transform(camera.T_ego_cam) @ np.asarray(T_ego_lidar, dtype=np.float64)
