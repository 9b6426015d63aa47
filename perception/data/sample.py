"""`Sample`: the one type every reader returns (synthetic, nuScenes, KITTI, video)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perception.geometry import Camera


@dataclass
class Boxes2D:
    """2D boxes of one camera image.

    ``boxes`` [N, 4] xyxy pixels, ``labels`` [N] int class index (see ``perception.data.classes``).
    Optional per box: ``truncation`` (0..1), ``occlusion`` (0 = fully visible .. 3 = unknown,
    KITTI levels), ``visibility`` (0..1 visible fraction), ``instance_ids``, ``depth`` (camera z
    of the 3D centre, m), ``center_cam`` [N, 3], ``size`` [N, 3] (l, w, h), ``yaw_cam`` [N]
    (rotation about camera +y, KITTI convention), ``ignore`` [N] bool (DontCare regions).
    """

    boxes: np.ndarray
    labels: np.ndarray
    truncation: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    visibility: np.ndarray | None = None
    instance_ids: np.ndarray | None = None
    depth: np.ndarray | None = None
    center_cam: np.ndarray | None = None
    size: np.ndarray | None = None
    yaw_cam: np.ndarray | None = None
    ignore: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Boxes2D":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))


@dataclass
class Boxes3D:
    """3D boxes in the ego frame: ``center`` [N, 3] (geometric centre, m), ``size`` [N, 3]
    (length, width, height), ``yaw`` [N] (about ego +z from +x toward +y), ``labels`` [N];
    optional ``velocity`` [N, 2] (m/s, ego x/y) and ``instance_ids`` [N]."""

    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    labels: np.ndarray
    velocity: np.ndarray | None = None
    instance_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.center)

    @classmethod
    def empty(cls) -> "Boxes3D":
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0,)), np.zeros((0,), np.int64))

    def corners(self) -> np.ndarray:
        """[N, 8, 3] box corners in the ego frame."""
        l, w, h = self.size[:, 0:1], self.size[:, 1:2], self.size[:, 2:3]
        sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
        sy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
        sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
        x, y, z = l * sx, w * sy, h * sz
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        return np.stack([c * x - s * y, s * x + c * y, z], -1) + self.center[:, None, :]


@dataclass
class Sample:
    """One synchronised multi-camera frame with whatever ground truth the source has.

    ``images`` are uint8 RGB HxWx3, one per camera, in the order of ``cameras``.
    ``depth`` per camera is float32 HxW metres (z-depth), 0 where unknown (sparse LiDAR) or
    None when the source has none. ``boxes2d`` per camera; ``boxes3d`` in the ego frame.
    ``extras`` carries source-specific ground truth (e.g. synthetic instance ids, BEV maps).
    """

    images: list[np.ndarray]
    cameras: list[Camera]
    timestamp: float = 0.0
    depth: list[np.ndarray] | None = None
    boxes2d: list[Boxes2D] | None = None
    boxes3d: Boxes3D | None = None
    frame_id: str = ""
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.cameras):
            raise ValueError(f"sample {self.frame_id!r}: {len(self.images)} images but {len(self.cameras)} cameras")
        for img, cam in zip(self.images, self.cameras):
            if img.shape[:2] != (cam.height, cam.width):
                raise ValueError(f"sample {self.frame_id!r}: camera '{cam.name}' image is "
                                 f"{img.shape[1]}x{img.shape[0]}, calibration {cam.width}x{cam.height}")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]
