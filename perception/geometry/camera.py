"""Pinhole camera with OpenCV distortion, and a rig of cameras on one car.

Conventions (DESIGN.md section 2): camera frame is OpenCV (x right, y down, z forward);
``T_ego_cam`` is the 4x4 camera-to-ego transform; ego is x forward, y left, z up with the
origin on the ground under the rear axle. Any resize or crop updates ``K`` via
:meth:`Camera.scaled` / :meth:`Camera.cropped`; code never uses an image without its ``K``.

Distortion uses OpenCV (``cv2.projectPoints`` / ``cv2.undistortPoints`` / ``cv2.undistort``)
since it already implements the exact Brown-Conrady model that calibration produces.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import yaml

from perception.geometry.transforms import invert_transform, transform_points
from perception.utils.yaml_io import YAMLInputError, load_yaml

log = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """A calibration file or field is missing, malformed or inconsistent."""


def _matrix(value: Any, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{where}: field '{name}' is not numeric ({exc})") from None
    if arr.shape != shape:
        raise CalibrationError(f"{where}: field '{name}' has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{where}: field '{name}' contains NaN or Inf")
    return arr


_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)


def _undistort_points(uv: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Normalised undistorted coordinates ``[N, 2]`` of distorted pixels (iterative, tight criteria).

    OpenCV 4.x has ``undistortPointsIter`` for the criteria overload; OpenCV 5 folded it into
    ``undistortPoints(..., criteria=...)``.
    """
    pts = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 1, 2)
    if hasattr(cv2, "undistortPointsIter"):
        out = cv2.undistortPointsIter(pts, K, dist, None, None, _UNDISTORT_CRITERIA)
    else:
        out = cv2.undistortPoints(pts, K, dist, R=None, P=None, criteria=_UNDISTORT_CRITERIA)
    return out.reshape(-1, 2)



MAX_CAMERA_OFFSET_M = 1000.0     # a camera further than this from the ego origin is an error ...
WARN_CAMERA_OFFSET_M = 30.0      # ... and further than this, suspicious (a bus is 12 m long)


def _check_intrinsics(K: np.ndarray, width: int, height: int, where: str) -> None:
    """Refuse what no real pinhole camera has; warn on what is possible but unusual."""
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or abs(K[1, 0]) > 1e-9:
        raise CalibrationError(f"{where}: field 'K' must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got rows "
                               f"{np.round(K, 6).tolist()}")
    fx, fy = float(K[0, 0]), float(K[1, 1])
    if fx <= 0 or fy <= 0:
        raise CalibrationError(f"{where}: field 'K' has non-positive focal length (fx {fx:g}, fy {fy:g})")
    # focal length in image widths: 0.01 is a 180-degree-plus view, 1000 a 0.06 degree telescope
    for name, f, size in (("fx", fx, width), ("fy", fy, height)):
        if not 0.01 * size <= f <= 1000.0 * size:
            raise CalibrationError(f"{where}: field 'K' {name} = {f:g} px is absurd for a {width}x{height} image "
                                   f"(expected about {0.3 * size:.0f}-{5 * size:.0f} px)")
    if not 0.2 <= fy / fx <= 5.0:
        raise CalibrationError(f"{where}: field 'K' has fy/fx = {fy / fx:.3g} (pixels are about square)")
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (-width <= cx <= 2 * width and -height <= cy <= 2 * height):
        raise CalibrationError(f"{where}: field 'K' principal point ({cx:g}, {cy:g}) lies far outside the "
                               f"{width}x{height} image")
    hfov = 2 * math.degrees(math.atan(width / 2 / fx))
    if not 10.0 <= hfov <= 170.0 or abs(fy / fx - 1) > 0.1 or not (0 <= cx <= width and 0 <= cy <= height):
        log.warning("%s: unusual intrinsics (horizontal field of view %.1f deg, fy/fx %.3f, principal point "
                    "(%.0f, %.0f) in a %dx%d image): check the calibration", where, hfov, fy / fx, cx, cy,
                    width, height)


def _check_pose(T: np.ndarray, where: str) -> None:
    """``T_ego_cam`` must be a rigid transform (rotation + translation)."""
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise CalibrationError(f"{where}: field 'T_ego_cam' bottom row must be [0, 0, 0, 1], got "
                               f"{np.round(T[3], 6).tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise CalibrationError(f"{where}: field 'T_ego_cam' rotation is not orthonormal (not a rigid transform)")
    offset = float(np.linalg.norm(T[:3, 3]))
    if offset > MAX_CAMERA_OFFSET_M:
        raise CalibrationError(f"{where}: field 'T_ego_cam' puts the camera {offset:.3g} m from the ego origin "
                               "(translations are in metres)")
    if offset > WARN_CAMERA_OFFSET_M:
        log.warning("%s: the camera is %.1f m from the ego origin: check that T_ego_cam is in metres", where, offset)

@dataclass
class Camera:
    """One calibrated camera: intrinsics ``K``, distortion ``dist``, image size, mounting."""

    name: str
    width: int
    height: int
    K: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    T_ego_cam: np.ndarray = field(default_factory=lambda: np.eye(4))
    source: str | None = None

    def __post_init__(self) -> None:
        where = f"camera '{self.name}'"
        self.K = _matrix(self.K, (3, 3), "K", where)
        dist = np.asarray(self.dist if self.dist is not None else np.zeros(5), dtype=np.float64).reshape(-1)
        if dist.size not in (4, 5, 8, 12, 14):
            raise CalibrationError(f"{where}: field 'dist' has {dist.size} coefficients, expected 4, 5, 8, 12 or 14")
        if not np.all(np.isfinite(dist)):
            raise CalibrationError(f"{where}: field 'dist' contains NaN or Inf")
        self.dist = dist
        self.T_ego_cam = _matrix(self.T_ego_cam, (4, 4), "T_ego_cam", where)
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(f"{where}: fields 'width'/'height' must be positive, got {self.width}x{self.height}")
        _check_intrinsics(self.K, self.width, self.height, where)
        _check_pose(self.T_ego_cam, where)

    # ----------------------------------------------------------------- properties
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    @property
    def T_cam_ego(self) -> np.ndarray:
        return invert_transform(self.T_ego_cam)

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    # ----------------------------------------------------------------- projection
    def project(self, points_ego: np.ndarray, *, apply_distortion: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Project ``[N, 3]`` ego-frame points to pixels.

        Returns ``(uv [N, 2], depth [N])`` where depth is the camera z (points with
        depth <= 0 are behind the camera; their uv is meaningless).
        """
        pts_cam = transform_points(self.T_cam_ego, np.asarray(points_ego, dtype=np.float64).reshape(-1, 3))
        return self.project_cam(pts_cam, apply_distortion=apply_distortion)

    def project_cam(self, points_cam: np.ndarray, *, apply_distortion: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Project ``[N, 3]`` camera-frame points to pixels; returns ``(uv, depth)``."""
        pts = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        depth = pts[:, 2].copy()
        if apply_distortion and self.has_distortion and len(pts):
            front = depth > 1e-6
            uv = np.full((len(pts), 2), np.nan)
            if front.any():
                proj, _ = cv2.projectPoints(pts[front], np.zeros(3), np.zeros(3), self.K, self.dist)
                uv[front] = proj.reshape(-1, 2)
            return uv, depth
        z = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
        uv = (pts[:, :2] / z[:, None]) * np.array([self.K[0, 0], self.K[1, 1]]) + self.K[:2, 2]
        uv[:, 0] += self.K[0, 1] * pts[:, 1] / z
        return uv, depth

    def unproject(self, uv: np.ndarray, depth: np.ndarray | float, *, to_ego: bool = True,
                  apply_distortion: bool = True) -> np.ndarray:
        """Lift pixels with z-depth (metres along the optical axis) to 3D points.

        Returns ``[N, 3]`` points in the ego frame (or camera frame with ``to_ego=False``).
        """
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        depth = np.broadcast_to(np.asarray(depth, dtype=np.float64).reshape(-1), (len(uv),))
        rays = self.pixel_rays(uv, apply_distortion=apply_distortion)
        pts_cam = rays * depth[:, None]
        return transform_points(self.T_ego_cam, pts_cam) if to_ego else pts_cam

    def pixel_rays(self, uv: np.ndarray, *, apply_distortion: bool = True) -> np.ndarray:
        """Camera-frame rays with z = 1 for ``[N, 2]`` pixels."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if apply_distortion and self.has_distortion and len(uv):
            xy = _undistort_points(uv, self.K, self.dist)
        else:
            Kinv = np.linalg.inv(self.K)
            xy = (np.c_[uv, np.ones(len(uv))] @ Kinv.T)[:, :2]
        return np.c_[xy, np.ones(len(xy))]

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """Undistort an image to the pinhole model with the same ``K`` (OpenCV remap)."""
        self.check_image(image)
        if not self.has_distortion:
            return image
        return cv2.undistort(image, self.K, self.dist)

    def pinhole(self) -> "Camera":
        """The same camera after :meth:`undistort`: identical K, zero distortion."""
        return Camera(self.name, self.width, self.height, self.K.copy(), np.zeros(5), self.T_ego_cam.copy(), self.source)

    # ----------------------------------------------------------------- resizing
    def scaled(self, width: int, height: int) -> "Camera":
        """The camera for the image resized to ``width x height`` (K scaled per axis).

        Uses the pixel-centre convention of ``cv2.resize``: ``u' = (u + 0.5) * s - 0.5``.
        """
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return Camera(self.name, width, height, K, self.dist.copy(), self.T_ego_cam.copy(), self.source)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Camera":
        """The camera for the crop ``image[y0:y0+height, x0:x0+width]`` (may pad if negative)."""
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return Camera(self.name, width, height, K, self.dist.copy(), self.T_ego_cam.copy(), self.source)

    def check_image(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if (w, h) != (self.width, self.height):
            raise CalibrationError(
                f"camera '{self.name}': image is {w}x{h} but the calibration is for {self.width}x{self.height}; "
                "use Camera.scaled() to match")

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.source is not None:
            d["source"] = self.source
        d.update(width=self.width, height=self.height, K=self.K.round(6).tolist(),
                 dist=self.dist.round(8).tolist(), T_ego_cam=self.T_ego_cam.round(8).tolist())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "camera") -> "Camera":
        if not isinstance(d, dict):
            raise CalibrationError(f"{where}: expected a mapping, got {type(d).__name__}")
        name = str(d.get("name", where))
        where = f"{where} '{name}'" if "name" in d else where
        for key in ("width", "height", "K"):
            if key not in d:
                raise CalibrationError(f"{where}: missing field '{key}'")
        try:
            width, height = int(d["width"]), int(d["height"])
        except (TypeError, ValueError):
            raise CalibrationError(f"{where}: fields 'width'/'height' must be integers") from None
        try:
            return cls(name=name, width=width, height=height, K=d["K"], dist=d.get("dist", np.zeros(5)),
                       T_ego_cam=d.get("T_ego_cam", np.eye(4)), source=d.get("source"))
        except CalibrationError as exc:  # say which file / entry, not only the camera name
            msg = str(exc)
            prefix = f"camera '{name}'"
            raise CalibrationError(where + msg[len(prefix):] if msg.startswith(prefix) else f"{where}: {msg}") from None


@dataclass
class Rig:
    """The cameras of one car (DESIGN.md section 3)."""

    name: str
    cameras: list[Camera]

    def __post_init__(self) -> None:
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise CalibrationError(f"rig '{self.name}': camera names are not unique: {names}")

    def __len__(self) -> int:
        return len(self.cameras)

    def __iter__(self) -> Iterator[Camera]:
        return iter(self.cameras)

    def __getitem__(self, key: int | str) -> Camera:
        if isinstance(key, str):
            for cam in self.cameras:
                if cam.name == key:
                    return cam
            raise KeyError(f"rig '{self.name}' has no camera '{key}' (has {self.names})")
        return self.cameras[key]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def scaled(self, width: int, height: int) -> "Rig":
        return Rig(self.name, [c.scaled(width, height) for c in self.cameras])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cameras": [c.to_dict() for c in self.cameras]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "rig") -> "Rig":
        if not isinstance(d, dict):
            raise CalibrationError(f"{where}: expected a mapping at the top level")
        if "cameras" not in d:
            raise CalibrationError(f"{where}: missing field 'cameras'")
        cams = d["cameras"]
        if not isinstance(cams, list) or not cams:
            raise CalibrationError(f"{where}: field 'cameras' must be a non-empty list")
        return cls(str(d.get("name", Path(where).stem)),
                   [Camera.from_dict(c, f"{where}: cameras[{i}]") for i, c in enumerate(cams)])

    @classmethod
    def load(cls, path: str | Path) -> "Rig":
        """Load a rig YAML (a single-camera file with top-level K/width/height also works)."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"{path}: calibration file not found")
        try:
            data = load_yaml(path)
        except YAMLInputError as exc:
            raise CalibrationError(str(exc)) from None
        single_camera_keys = {"K", "width", "height", "dist", "T_ego_cam"}
        if isinstance(data, dict) and "cameras" not in data and single_camera_keys & set(data):
            # a single-camera file: let Camera.from_dict name the missing field ('K', 'width', ...)
            return cls(str(data.get("name", path.stem)), [Camera.from_dict(data, str(path))])
        return cls.from_dict(data, str(path))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120))
